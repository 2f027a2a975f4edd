"""Continual offline RL: OER (model-based experience selection + dual behaviour cloning) and its baselines.

One learner meets a sequence of offline data sets, one per task, and never touches an environment while it learns
(DESIGN.md section 3, OER; Gai et al., arXiv 2305.13804). The base learner is TD3+BC
(:class:`~cadence.agents.td3bc.TD3BC`); what differs is how earlier tasks are kept (``strategy``):

* ``finetune``: TD3+BC on the current task's data only (the lower bound);
* ``multitask``: TD3+BC on every task's data so far (the upper bound);
* ``er``: a memory of ``memory`` transitions, an equal quota per finished task chosen at random, mixed into every
  batch (``memory_share`` of it) for every loss;
* ``mbes``: as ``er``, but the memory keeps MBES's choice (ablation: no dual cloning);
* ``dbc``: random memory with dual behaviour cloning (ablation: no MBES);
* ``oer``: MBES memory and dual behaviour cloning.

**MBES** (model-based experience selection), at the end of each task: fit a Gaussian ensemble on the task's data,
roll the learned policy out in it from the task's episode starts (``mbes_horizon`` steps) to approximate the states
that policy visits, and keep the task's transitions nearest those states
(:class:`~cadence.replay.selection.NearestSelector`, distances in units of the data's std).

**Dual behaviour cloning**: a second actor, the cloning head, takes the behaviour-cloning loss on old-task memory
only; TD3+BC's actor and critics learn from the current task alone, so cloning old tasks never pulls on the
Q-learning of the new one. Acting: a finished task is served by the cloning head, the current (last) one by the
TD3+BC actor.

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
from cadence.nn import adam
from cadence.replay.selection import ContinualMemory, NearestSelector, RandomSelector, num_rows, take
from cadence.world_models import EnsembleConfig, GaussianEnsemble
from cadence.world_models.rollout import RolloutConfig, model_rollout, random_elite_sample
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
    """dbc, oer: Adam learning rate of the cloning head."""
    mbes_horizon: int = 50
    """MBES: model steps per rollout of the learned policy."""
    mbes_starts: int = 1000
    """MBES: rollouts, from the task's episode starts (drawn with replacement)."""
    mbes_max_states: int = 5_000
    """MBES: model states kept as references (a random subset beyond this), which bounds the selection's cost."""
    mbes_model_epochs: int = 10
    """MBES: epochs of the Gaussian ensemble's fit (it stops earlier on a plateau)."""
    mbes_model_rows: int = 20_000
    """MBES: the model is fitted on a random subset of this many of the task's transitions (dynamics need far
    fewer than a 1M data set holds; this keeps MBES under a minute there)."""

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
        # the cloning head: a second actor of TD3+BC's architecture, starting from the same weights
        self.clone = copy.deepcopy(self.td3bc.actor) if self.dual else None
        self.clone_opt = adam(self.clone.parameters(), config.clone_lr) if self.clone is not None else None
        self.selector = NearestSelector() if self.selection == "mbes" else RandomSelector()
        self.memory = (ContinualMemory.per_task(config.memory, self.obs_dim, self.act_dim, self.selector,
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
        """Finish the current task: keep its data (multitask) or its memory quota (er, mbes, dbc, oer)."""
        data = self.current
        if data is None:
            raise ValueError("end_task before begin_task")
        if self.strategy == "multitask":
            self.past.append(data)
        if self.memory is not None:
            if isinstance(self.selector, NearestSelector):
                self.selector.scale = self.td3bc.obs_std[: self.obs_dim]
                self.selector.references[self.task] = self.model_states(data, termination)
            self.memory.end_task(data, self.task)

    # -------------------------------------------------------------------------------------------------- MBES
    def model_states(self, data: Data, termination: Any = None) -> torch.Tensor:
        """The states the current policy visits in a model of ``data``: MBES's reference states for the task."""
        cfg = self.config
        # a small ensemble: MBES needs where the policy goes, not MOPO-grade uncertainty
        model = GaussianEnsemble(self.obs_dim, self.act_dim, EnsembleConfig(
            n_members=3, n_elites=2, hidden_sizes=(200, 200, 200), max_epochs=cfg.mbes_model_epochs))
        model = model.to(self.device)
        rows = torch.randperm(num_rows(data), generator=self.generator, device=self.device)[: cfg.mbes_model_rows]
        EnsembleTrainer(model, self.generator).fit({k: data[k][rows] for k in ("obs", "action", "reward",
                                                                                 "next_obs")})
        starts = data["obs"][data["episode_start"].bool()] if "episode_start" in data else data["obs"][:0]
        if len(starts) == 0:  # no episode starts recorded: any of the task's states
            starts = data["obs"]
        pick = torch.randint(len(starts), (cfg.mbes_starts,), generator=self.generator, device=self.device)
        never = (lambda next_obs: torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device))
        rollout = model_rollout(starts[pick].float(), lambda o: self._act(self.td3bc.actor, o, self.task),
                                random_elite_sample(model, self.generator), termination or never,
                                RolloutConfig(length=cfg.mbes_horizon, batch_size=cfg.mbes_starts))
        states = torch.cat([starts[pick].float(), rollout["next_obs"]])
        if len(states) > cfg.mbes_max_states:
            states = states[torch.randperm(len(states), generator=self.generator,
                                           device=self.device)[: cfg.mbes_max_states]]
        return states

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
        if self.dual and remembered:
            old = self._memory_batch(n)
            loss = F.mse_loss(self._act(self.clone, old["obs"], old["task_id"], grad=True), old["action"])
            self.clone_opt.zero_grad()
            loss.backward()
            self.clone_opt.step()
            metrics["clone_loss"] = loss.item()
        return metrics

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
        if self.clone is not None:  # finished tasks are the cloning head's
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
        batch = self.memory.sample(n, self.generator)
        return {k: batch[k] for k in ("obs", "action", "reward", "next_obs", "terminated", "task_id")}


def _with_task(part: Data, task: int) -> Data:
    n = num_rows(part)
    fields = {k: part[k] for k in ("obs", "action", "reward", "next_obs", "terminated")}
    if "task_id" in part:
        return {**fields, "task_id": part["task_id"].long()}
    return {**fields, "task_id": torch.full((n,), task, dtype=torch.int64, device=part["obs"].device)}


def _cat(*parts: Data) -> Data:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
