"""Continual offline RL: OER (model-based experience selection + dual behaviour cloning) and its baselines.

One learner meets a sequence of offline data sets, one per task, and never touches an environment while it learns
(Gai et al., "OER: Offline Experience Replay for Continual Offline Reinforcement Learning", arXiv 2305.13804; the
authors' code is github.com/gaisibo/CORL). The base learner is TD3+BC (:class:`~cadence.agents.td3bc.TD3BC`);
what differs is how earlier tasks are kept (``strategy``):

* ``finetune``: TD3+BC on the current task's data only (the lower bound);
* ``multitask``: TD3+BC on every task's data so far (the upper bound);
* ``er``: a memory of ``memory`` transitions, an equal quota per finished task chosen at random, mixed into every
  batch (``memory_share`` of it) for every loss;
* ``mbes``: as ``er``, but the memory keeps MBES's choice (ablation: no dual cloning);
* ``dbc``: random memory with dual behaviour cloning (ablation: no MBES);
* ``oer``: MBES memory and dual behaviour cloning.

**MBES** (model-based experience selection), at the end of each task: fit a Gaussian ensemble on the task's data
and roll the policy that will act on the task out in it, from the data's episode starts, for a whole episode (the
data's longest, at most ``mbes_horizon`` steps). Every step is re-anchored on real data: the policy acts in a real
state, the model predicts the next state, and the rollout goes on from the data's state nearest that prediction
(in std units), so model error cannot compound and every state reached is a real one. The memory keeps the task's
transitions from those states (:class:`~cadence.replay.selection.NearestSelector`: the visited rows, a uniform
sample of them when the quota is smaller, their nearest rows when it is larger).

**Dual behaviour cloning** (DBC): two actors. The policy network (TD3+BC's actor, with TD3+BC's critics) learns
the current task from its data alone, so no cloning loss pulls on its Q-learning. The clone network learns, at every
step, both the current task, by cloning the policy network's actions on the current task's states, and the old
tasks, by cloning the actions stored with the memory: the acting policy's actions on those states when their task
ended (:meth:`ContinualOffline.clone_loss`). Acting: the current task by the policy network, every finished task by
the clone network. At a task's end the clone network, which has tracked the policy network all along, takes the
finished task over and the policy network restarts from it (the authors' ``bc_post_train_process``), so the
hand-over does not change what the agent does beyond the cloning error.

Every network sees the observation with the task's one-hot index appended (``n_tasks`` slots): the tasks of a
sequence (a target velocity, a gravity) are not in the observation, so a policy must be told which one it is in.
The observation normaliser is the first task's mean and std, fixed for the whole sequence, so old tasks' inputs
never move under the networks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from cadence.agents.td3bc import TD3BC, TD3BCConfig
from cadence.config import check, check_positive
from cadence.nn import adam, optimizer_step
from cadence.replay.selection import ContinualMemory, NearestSelector, RandomSelector, num_rows, take
from cadence.world_models import EnsembleConfig, GaussianEnsemble
from cadence.world_models.trainer import EnsembleTrainer

Data = dict[str, torch.Tensor]

#: strategy -> (memory selection or None, dual behaviour cloning), and what it keeps of earlier tasks
STRATEGIES: dict[str, tuple[str | None, bool, str]] = {
    "oer": ("mbes", True, "MBES memory + dual behaviour cloning"),
    "er": ("random", False, "a random memory replayed in every loss"),
    "mbes": ("mbes", False, "an MBES memory replayed in every loss (ablation: no dual cloning)"),
    "dbc": ("random", True, "a random memory + dual behaviour cloning (ablation: no MBES)"),
    "finetune": (None, False, "nothing: TD3+BC on each task in turn"),
    "multitask": (None, False, "every task's data (the upper bound)"),
}


@dataclass(frozen=True)
class ContinualOfflineConfig(TD3BCConfig):
    """TD3+BC's settings plus how earlier tasks are kept (``[agent]`` of ``oer``, ``er``, ...); each strategy reads
    only its own keys."""

    memory: int = 10_000
    """Transitions the memory keeps over all finished tasks (an equal quota each)."""
    memory_share: float = 0.5
    """er, mbes: share of every batch drawn from the memory once it holds something."""
    clone_lr: float = 3e-4
    """dbc, oer: Adam learning rate of the clone network."""
    mbes_horizon: int = 1000
    """MBES: most policy steps per model rollout; a rollout lasts the data's longest episode, at most this (the
    paper rolls whole episodes; 1000 is the MuJoCo tasks' episode length)."""
    mbes_starts: int = 20
    """MBES: rollouts, each from an episode start of the task's data (drawn with replacement); 20 whole episodes
    reach more states than a 10k memory keeps."""
    mbes_max_states: int = 5_000
    """MBES: visited states kept as references (a random subset beyond this), which bounds the selection's cost."""
    mbes_model_epochs: int = 10
    """MBES: epochs of the Gaussian ensemble's fit (it stops earlier on a plateau)."""
    mbes_model_rows: int = 20_000
    """MBES: the model is fitted on, and rollouts are re-anchored to, a random subset of this many of the task's
    transitions (dynamics need far fewer than a 1M data set holds; this keeps MBES under a minute there)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("memory", "clone_lr", "mbes_horizon", "mbes_starts", "mbes_max_states", "mbes_model_epochs",
                     "mbes_model_rows"):
            check_positive(self, name)
        check(0.0 < self.memory_share < 1.0, "memory_share", self.memory_share, "in (0, 1)")


def one_hot_tasks(obs: torch.Tensor, task: torch.Tensor | int, n_tasks: int) -> torch.Tensor:
    """``obs [B, d]`` with the one-hot of ``task`` (one index, or one per row) appended: ``[B, d + n_tasks]``."""
    index = torch.as_tensor(task, device=obs.device, dtype=torch.int64).expand(obs.shape[0])
    return torch.cat([obs, F.one_hot(index, n_tasks).to(obs.dtype)], dim=-1)


def episode_steps(episode_start: torch.Tensor) -> torch.Tensor:
    """Each row's step within its episode: 0 where ``episode_start`` is set (and at row 0), then +1 per row."""
    index = torch.arange(len(episode_start), device=episode_start.device)
    start = episode_start.bool().clone()
    start[:1] = True
    return index - torch.cummax(torch.where(start, index, 0), dim=0).values


class ContinualOffline:
    """A TD3+BC learner over a sequence of ``n_tasks`` offline data sets, keeping old tasks by ``strategy`` (a key of
    :data:`STRATEGIES`).

    The loop calls :meth:`begin_task` with the task's data, :meth:`update` for each gradient step, and
    :meth:`end_task` (which fills the memory) before the next task.
    """

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box, n_tasks: int, strategy: str = "oer",
                 config: ContinualOfflineConfig = ContinualOfflineConfig(), device: str | torch.device = "cpu",
                 seed: int = 0):
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; strategies: {', '.join(STRATEGIES)}")
        self.config, self.n_tasks, self.device = config, int(n_tasks), torch.device(device)
        self.strategy, self.algo = strategy, strategy
        self.selection, self.dual = STRATEGIES[strategy][:2]
        self.records: dict[str, Any] = {}  # the loop's continual records, for the run's metrics.json
        self.obs_dim, self.act_dim = observation_space.shape[0], action_space.shape[0]
        conditioned = spaces.Box(-np.inf, np.inf, (self.obs_dim + n_tasks,), np.float32)
        self.td3bc = TD3BC(conditioned, action_space, config, device=device)
        # DBC's clone network: a second actor of TD3+BC's architecture, starting from the same weights
        self.clone = copy.deepcopy(self.td3bc.actor) if self.dual else None
        self.clone_opt = adam(self.clone.parameters(), config.clone_lr) if self.clone is not None else None
        self.selector = NearestSelector(random_ties=True) if self.selection == "mbes" else RandomSelector()
        # DBC stores with each memory row the acting policy's action there, beside the data set's: the memory's
        # action field holds both, [data action | policy action] (see _memory_batch)
        memory_act_dim = 2 * self.act_dim if self.dual else self.act_dim
        self.memory = (ContinualMemory.per_task(config.memory, self.obs_dim, memory_act_dim, self.selector,
                                                device=self.device, seed=seed)
                       if self.selection is not None else None)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.task = -1  # the task being learned
        self.past: list[Data] = []  # multitask: every finished task's data
        self.current: Data | None = None

    # ------------------------------------------------------------------------------------------------- tasks
    def begin_task(self, task: int, data: Data) -> None:
        """Start learning ``task`` from ``data`` (fields obs, action, reward, next_obs, terminated)."""
        if task != self.task + 1 or task >= self.n_tasks:
            raise ValueError(f"tasks must come in order 0..{self.n_tasks - 1}; expected {self.task + 1}, got {task}")
        if task == 0:  # the first task's statistics stay the normaliser for the whole sequence
            obs = data["obs"].float()
            self.td3bc.set_normalizer(torch.cat([obs.mean(0), torch.zeros(self.n_tasks, device=obs.device)]),
                                      torch.cat([obs.std(0), torch.ones(self.n_tasks, device=obs.device)]))
        self.task, self.current = task, {k: v.to(self.device) for k, v in data.items()}

    def end_task(self, termination: Any = None) -> None:
        """Finish the current task: DBC hands it over to the clone network; then keep its data (multitask) or its
        memory quota (er, mbes, dbc, oer). ``termination(next_obs)`` ends MBES's rollouts (None: they never end
        early)."""
        data = self.current
        if data is None:
            raise ValueError("end_task before begin_task")
        if self.dual:
            self.hand_over()
        if self.strategy == "multitask":
            self.past.append(data)
        if self.memory is not None:
            if isinstance(self.selector, NearestSelector):
                self.selector.scale = self.td3bc.obs_std[: self.obs_dim]
                self.selector.references[self.task] = self.model_states(data, termination)
            if self.dual:  # the cloning targets of the task's memory rows: what the agent does there from now on
                data = {**data, "action": torch.cat([data["action"].float(), self._policy_actions(data["obs"])], 1)}
            self.memory.end_task(data, self.task)

    @torch.no_grad()
    def hand_over(self) -> None:
        """DBC at a task's end: the clone network takes the finished task over, and the policy network (TD3+BC's
        actor and its target) restarts from the clone's weights for the next task, with fresh Adam moments (the
        authors' ``bc_post_train_process``). From here on both act alike on every task learned so far."""
        self.td3bc.actor.load_state_dict(self.clone.state_dict())
        self.td3bc.actor_target.load_state_dict(self.clone.state_dict())
        self.td3bc.actor_optimizer = adam(self.td3bc.actor.parameters(), self.config.actor_lr)

    # -------------------------------------------------------------------------------------------------- MBES
    def mbes_rollouts(self, data: Data, termination: Any = None) -> torch.Tensor:
        """MBES's rollouts of the acting policy in a model of ``data``: ``[mbes_starts, horizon]`` indices of the
        rows of ``data`` whose states each rollout passes through, in order (-1 once a rollout has terminated).

        Each rollout starts at an episode start of ``data`` and lasts ``horizon`` = the data's longest episode
        (at most ``mbes_horizon``) policy steps. A step: the policy acts in the real state s_t, the model predicts
        s_hat = E[s' | s_t, pi(s_t)] (elite mean), and the rollout continues from the real state nearest s_hat,

            s_{t+1} = argmin_{s in D} || (s - s_hat) / sigma ||,

        D being ``mbes_model_rows`` random rows of ``data`` and sigma the normaliser's std; when that is s_t itself,
        the data's own successor of s_t. ``termination(s_hat)`` (e.g. a fallen hopper) ends a rollout after s_t.
        """
        cfg, n = self.config, num_rows(data)
        rows = torch.randperm(n, generator=self.generator, device=self.device)[: cfg.mbes_model_rows]
        model = self._fit_model({k: data[k][rows] for k in ("obs", "action", "reward", "next_obs")})
        return self._anchored_rollouts(model, data, rows, termination)

    @torch.no_grad()
    def _anchored_rollouts(self, model: GaussianEnsemble, data: Data, rows: torch.Tensor,
                           termination: Any) -> torch.Tensor:
        """:meth:`mbes_rollouts` once the model is fitted; ``rows``: the rows of ``data`` rollouts re-anchor to."""
        cfg, n = self.config, num_rows(data)
        scale = self.td3bc.obs_std[: self.obs_dim]
        anchors = data["obs"][rows].float() / scale
        index = torch.arange(n, device=self.device)
        if "episode_start" in data and data["episode_start"].any():
            new_episode = data["episode_start"].bool()
            starts, longest = torch.nonzero(new_episode).squeeze(1), int(episode_steps(new_episode).max()) + 1
        else:  # no episode starts recorded: any row may start, and the data is one long episode
            new_episode = torch.zeros(n, dtype=torch.bool, device=self.device)
            starts, longest = index, n
        # each row's successor in its episode (itself at an episode's end)
        successor = torch.where((index + 1 < n) & ~new_episode.roll(-1), index + 1, index)
        horizon = min(cfg.mbes_horizon, longest)
        row = starts[torch.randint(len(starts), (cfg.mbes_starts,), generator=self.generator, device=self.device)]
        path = torch.full((cfg.mbes_starts, horizon), -1, dtype=torch.int64, device=self.device)
        alive = torch.ones(cfg.mbes_starts, dtype=torch.bool, device=self.device)
        for step in range(horizon):
            path[alive, step] = row[alive]
            if step + 1 == horizon:
                break
            obs = data["obs"][row].float()
            predicted, _ = model.elite_mean(obs, self._act(self.td3bc.actor, obs, self.task))
            ended = ~torch.isfinite(predicted).all(dim=1)
            predicted = predicted.nan_to_num()
            if termination is not None:
                ended |= termination(predicted).reshape(-1).bool()
            alive &= ~ended
            if not alive.any():
                break
            nearest = rows[torch.cdist(predicted / scale, anchors).argmin(dim=1)]
            # a prediction nearest the state it started from (the model sees no progress) would stall the rollout
            # there; it takes the data's own next state instead, as the authors' code does when unsure of its model
            row = torch.where(nearest == row, successor[row], nearest)
        return path

    def model_states(self, data: Data, termination: Any = None) -> torch.Tensor:
        """MBES's reference states for the task: the distinct real states the acting policy's rollouts reach
        (:meth:`mbes_rollouts`), at most ``mbes_max_states`` of them (a random subset beyond)."""
        path = self.mbes_rollouts(data, termination)
        visited = torch.unique(path[path >= 0])
        if len(visited) > self.config.mbes_max_states:
            keep = torch.randperm(len(visited), generator=self.generator, device=self.device)
            visited = visited[keep[: self.config.mbes_max_states]]
        return data["obs"][visited].float()

    def _fit_model(self, data: Data) -> GaussianEnsemble:
        """MBES's transition model: a small Gaussian ensemble (MBES needs where the policy goes, not MOPO-grade
        uncertainty) fitted on ``data``."""
        model = GaussianEnsemble(self.obs_dim, self.act_dim, EnsembleConfig(
            n_members=3, n_elites=2, hidden_sizes=(200, 200, 200), max_epochs=self.config.mbes_model_epochs))
        model = model.to(self.device)
        EnsembleTrainer(model, self.generator).fit(data)
        return model.eval()

    # ------------------------------------------------------------------------------------------------ update
    def update(self) -> dict[str, float]:
        """One gradient step of every network the strategy trains."""
        if self.current is None:
            raise ValueError("update before begin_task")
        cfg = self.config
        n = cfg.batch_size
        remembered = self.memory is not None and len(self.memory) > 0
        if self.strategy == "multitask":
            batch = self._sample_tasks([*self.past, self.current], n)
        elif remembered and not self.dual:
            k = int(round(n * cfg.memory_share))
            batch = _cat(self._sample_tasks([self.current], n - k), self._memory_batch(k))
        else:
            batch = self._sample_tasks([self.current], n)
        metrics = self.td3bc.update(self._conditioned(batch))
        if self.dual:
            loss, clone_metrics = self.clone_loss(batch, self._memory_batch(n) if remembered else None)
            optimizer_step(self.clone_opt, loss)
            metrics.update(clone_metrics)
        return metrics

    def clone_loss(self, new: Data, old: Data | None) -> tuple[torch.Tensor, dict[str, float]]:
        """DBC's loss of the clone network mu_c, on a batch of the current task i and one of the memory:

            L_new = E_{s ~ D_i} || mu_c(s, i) - mu(s, i) ||^2        mu: the policy network (detached)
            L_old = E_{(s, j, a_pi) ~ M} || mu_c(s, j) - a_pi ||^2    a_pi: the acting policy's action at s when
                                                                      task j ended (stored in the memory)
            L_c = L_new + L_old

        (squares averaged over the action dimensions). Neither term reaches the policy network or the critics.
        """
        target = self._act(self.td3bc.actor, new["obs"], new["task_id"])
        new_loss = ((self._act(self.clone, new["obs"], new["task_id"], grad=True) - target) ** 2).mean()
        loss, metrics = new_loss, {"clone_new_loss": new_loss.item()}
        if old is not None:
            old_loss = ((self._act(self.clone, old["obs"], old["task_id"], grad=True) - old["policy_action"]) ** 2
                        ).mean()
            loss = loss + old_loss
            metrics["clone_old_loss"] = old_loss.item()
        metrics["clone_loss"] = loss.item()
        return loss, metrics

    # ------------------------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def act_sequence(self, obs: np.ndarray, length: int, task: Any = None) -> np.ndarray:
        """``length`` copies of the action for ``obs`` (one ``[d]`` or a batch ``[B, d]``) in ``task`` (an index,
        one per row, or None for the current task): ``[length, act_dim]`` or ``[B, length, act_dim]``."""
        o = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        single = o.dim() == 1
        o = o.reshape(-1, self.obs_dim)
        tasks = torch.as_tensor(self.task if task is None else task, device=self.device).expand(o.shape[0])
        action = self._act(self.td3bc.actor, o, tasks)
        if self.clone is not None:  # DBC: finished tasks are the clone network's
            old = tasks < self.task
            if old.any():
                action[old] = self._act(self.clone, o[old], tasks[old])
        plans = action[:, None, :].expand(-1, length, -1).cpu().numpy()
        return plans[0] if single else plans

    def act(self, obs: np.ndarray, deterministic: bool = True, task: Any = None) -> np.ndarray:
        return self.act_sequence(obs, 1, task)[..., 0, :]

    # --------------------------------------------------------------------------------------------- persistence
    def deployment_state_dict(self) -> dict[str, Any]:
        """What acting needs: both actors, the normaliser and the task count (no critics, no memory)."""
        return {"td3bc": self.td3bc.deployment_state_dict(), "task": self.task, "n_tasks": self.n_tasks,
                "clone": None if self.clone is None else self.clone.state_dict()}

    def state_dict(self) -> dict[str, Any]:
        return {"td3bc": self.td3bc.state_dict(), "task": self.task,
                "clone": None if self.clone is None else self.clone.state_dict(),
                "clone_opt": None if self.clone_opt is None else self.clone_opt.state_dict(),
                "memory": None if self.memory is None else self.memory.state_dict(),
                "references": dict(getattr(self.selector, "references", {})),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.td3bc.load_state_dict(state["td3bc"])
        self.task = int(state["task"])
        if self.clone is not None:
            self.clone.load_state_dict(state["clone"])
            self.clone_opt.load_state_dict(state["clone_opt"])
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])
        if isinstance(self.selector, NearestSelector):
            self.selector.references = {int(k): v for k, v in state["references"].items()}
            self.selector.scale = self.td3bc.obs_std[: self.obs_dim]
        self.generator.set_state(state["generator"])

    # ----------------------------------------------------------------------------------------------- helpers
    def _act(self, actor: torch.nn.Module, obs: torch.Tensor, task: Any, grad: bool = False) -> torch.Tensor:
        """``actor``'s action for raw ``obs`` in ``task``: the task's one-hot appended, then normalised."""
        x = self.td3bc.normalize(one_hot_tasks(obs.float(), task, self.n_tasks))
        with torch.set_grad_enabled(grad):
            return actor(x)

    def _conditioned(self, batch: Data) -> Data:
        """A batch with every observation conditioned on its row's task."""
        return {**batch, "obs": one_hot_tasks(batch["obs"].float(), batch["task_id"], self.n_tasks),
                "next_obs": one_hot_tasks(batch["next_obs"].float(), batch["task_id"], self.n_tasks)}

    def _sample_tasks(self, parts: list[Data], n: int) -> Data:
        """``n`` rows drawn uniformly over the union of ``parts`` (each row keeps its task id)."""
        sizes = torch.tensor([num_rows(p) for p in parts])
        idx = torch.randint(int(sizes.sum()), (n,), generator=self.generator, device=self.device)
        bounds = torch.cumsum(sizes, 0).to(self.device)
        which = torch.bucketize(idx, bounds, right=True)
        rows = []
        for i, part in enumerate(parts):
            local = idx[which == i] - (bounds[i] - sizes[i].to(self.device))
            rows.append(_with_task(take(part, local), self.task if part is self.current else i))
        return _cat(*rows)

    def _memory_batch(self, n: int) -> Data:
        """``n`` memory rows; with DBC also ``policy_action``, the cloning target stored beside the data's action."""
        batch = self.memory.sample(n, self.generator)
        out = {k: batch[k] for k in ("obs", "action", "reward", "next_obs", "terminated", "task_id")}
        if self.dual:
            out["action"], out["policy_action"] = out["action"].split(self.act_dim, dim=-1)
        return out

    @torch.no_grad()
    def _policy_actions(self, obs: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
        """The acting policy's actions on raw ``obs`` of the current task (in chunks: a data set may be 1M rows)."""
        return torch.cat([self._act(self.td3bc.actor, part, self.task) for part in obs.split(chunk)])


def _with_task(part: Data, task: int) -> Data:
    n = num_rows(part)
    fields = {k: part[k] for k in ("obs", "action", "reward", "next_obs", "terminated")}
    if "task_id" in part:
        return {**fields, "task_id": part["task_id"].long()}
    return {**fields, "task_id": torch.full((n,), task, dtype=torch.int64, device=part["obs"].device)}


def _cat(*parts: Data) -> Data:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
