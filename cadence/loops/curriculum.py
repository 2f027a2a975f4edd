"""A curriculum teacher as a training-loop hook: it chooses each episode's task and learns from its return.

:class:`TeacherHook` adapts any :mod:`cadence.curricula` teacher to the loops: at every episode start (per world on
the batched path) it samples task parameters, which the loop passes to the env's reset; at every episode end it
reports the return for the task that episode ran. Its teacher's state is checkpointed with the run, so a resumed
run continues the same curriculum. It logs under ``curriculum/``: histograms of the sampled parameters, the
teacher's own numbers (ALP, GMM components, regions), the wall time spent in the teacher, and at every evaluation
the share of the family's fixed test tasks the agent masters; each evaluation's return per test task is kept in
the hook's checkpointed state (``tests``), so mastery can be recomputed at any threshold afterwards.

The task space is a :class:`~cadence.envs.tasks.TaskFamily` (physics or reward params) or a
:class:`~cadence.envs.maze_tasks.LayoutFamily` (maze layouts, scored by success rate); the hook needs only their
``param_space``, ``features``, ``test_tasks``, ``mastery_threshold`` and ``score_tests``. A teacher that searches
another space than the env's (CLUTR's latents) hands the env ``teacher.task(params)`` and is told the return for
its own params, which the hook keeps per world until the episode ends.

CLUTR's teacher learns from regret, which needs the agents a teacher never sees, so the hook computes it with a
:class:`RegretSource` (``train.teacher_settings.regret``; built by :mod:`cadence.recipes`):

* :class:`PairedRegret` (``paired``, the paper's, as PAIRED): an antagonist, a second agent of the protagonist's
  algorithm and settings with its own env and replay buffer, plays every layout the protagonist played and learns
  from it as the loop would; regret = max(0, antagonist return - protagonist return) (:func:`paired_regret`).
* :class:`CriticRegret` (``pvl``, ``maxmc``): estimates from the protagonist's own critic over the episode it
  just played, as Robust PLR and ACCEL score levels: :func:`positive_value_loss` and :func:`max_mc`. No second
  agent; a SAC student only (its V(s) is min_k Q_k(s, mu(s)), mu the deterministic action).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from cadence.agents.base import Agent
from cadence.agents.sac import SAC
from cadence.curricula.clutr import CLUTRTeacher
from cadence.envs.maze_tasks import LayoutFamily
from cadence.envs.tasks import TaskFamily
from cadence.loops.collectors import SingleEnvCollector
from cadence.loops.common import learn
from cadence.loops.hooks import Hook, LoopContext
from cadence.replay import ReplayBuffer

#: GAE's lambda in the positive value loss (the reference's gae_lambda)
GAE_LAMBDA = 0.95


class TeacherHook(Hook):
    """Lets ``teacher`` choose the tasks of ``family`` for any agent.

    Args:
        teacher: a :class:`cadence.curricula.Teacher` whose ``task_bounds`` are the family's ``param_space``.
        family: the training env's task family or layout family.
        log_every: episodes between logs of the teacher's numbers and the sampled-parameter histograms (they are
            also logged at every evaluation).
        test_episodes: episodes per test task in the mastery evaluation (0 turns it off).
        regret: where each episode's regret comes from, for a teacher that learns from it (CLUTR's); its state is
            checkpointed with the teacher's.
    """

    def __init__(self, teacher: Any, family: TaskFamily | LayoutFamily, log_every: int = 50,
                 test_episodes: int = 1, regret: RegretSource | None = None):
        low, high = (np.asarray(b, np.float64) for b in teacher.task_bounds)
        space = family.param_space
        if low.shape != space.shape or not (np.allclose(low, space.low) and np.allclose(high, space.high)):
            raise ValueError(f"the {teacher.name} teacher's tasks lie in [{_short(low)}, {_short(high)}], which is "
                             f"not {family.name}'s param_space [{_short(space.low)}, {_short(space.high)}]")
        self.teacher, self.family = teacher, family
        self.log_every, self.test_episodes = log_every, test_episodes
        self.sampled: list[dict[str, float]] = []  # features of the tasks since the last log, for the histograms
        self.params_of: dict[int, np.ndarray] = {}  # the teacher's params of each world's running episode
        self.tests: list[tuple[int, list[float]]] = []  # (step, mean return per test task) of every evaluation
        self.teacher_seconds = 0.0  # wall time inside the teacher's sample and update
        self.regret = regret
        self.regret_seconds = 0.0  # wall time computing regrets (an antagonist's episodes and updates)

    @property
    def name(self) -> str:
        return "teacher"

    def on_run_start(self, ctx: LoopContext) -> None:
        self._check_regret()

    def on_resume(self, ctx: LoopContext) -> None:
        self._check_regret()

    def _check_regret(self) -> None:
        """Refuse to start a CLUTR curriculum that has no regret to learn from (before its first episode)."""
        if isinstance(self.teacher, CLUTRTeacher) and self.regret is None:
            raise ValueError("the clutr teacher learns from regret: give TeacherHook a regret source "
                             "(PairedRegret or CriticRegret; cadence.recipes.clutr_regret builds the one "
                             "train.teacher_settings.regret names)")

    def on_episode_start(self, ctx: LoopContext, world: int) -> np.ndarray:
        start = time.perf_counter()
        params = self.teacher.sample()
        task = self.teacher.task(params)
        self.teacher_seconds += time.perf_counter() - start
        self.params_of[world] = params
        self.sampled.append(self.family.features(task))
        return task

    def on_episode_end(self, ctx: LoopContext, world: int, episode_return: float, task: Any) -> None:
        params = self.params_of.pop(world, None)
        if params is None:  # an episode begun before this hook chose tasks (a resumed run's first one)
            return
        extra = {}
        if self.regret is not None:  # CLUTR: the regret of the layout just played, before the teacher hears of it
            start = time.perf_counter()
            extra["regret"] = self.regret.regret(ctx, task, float(episode_return))
            self.regret_seconds += time.perf_counter() - start
        start = time.perf_counter()
        self.teacher.update(params, float(episode_return), **extra)
        self.teacher_seconds += time.perf_counter() - start
        if ctx.state.episodes % self.log_every == 0:
            self._log(ctx)

    def _log(self, ctx: LoopContext) -> None:
        step = ctx.state.step
        numbers = {f"curriculum/{k}": float(v) for k, v in self.teacher.metrics().items()}
        if self.regret is not None:
            numbers.update({f"curriculum/{k}": float(v) for k, v in self.regret.metrics().items()})
            numbers["curriculum/regret_seconds"] = self.regret_seconds
        ctx.logger.scalars({**numbers, "curriculum/teacher_seconds": self.teacher_seconds}, step)
        if self.sampled:
            for label in self.sampled[0]:
                values = np.array([f[label] for f in self.sampled])
                ctx.logger.writer.add_histogram(f"curriculum/sampled_{label}", values, step)
            self.sampled = []

    def on_eval(self, ctx: LoopContext, mean_return: float) -> None:
        """The teacher's numbers, and the share of the family's test tasks on which the agent's score (mean return,
        or success rate on mazes) reaches the mastery threshold."""
        self._log(ctx)
        tests, threshold = self.family.test_tasks, self.family.mastery_threshold
        if not self.test_episodes or tests is None or threshold is None:
            return
        scores = self.family.score_tests(ctx.agent, self.test_episodes, seed=10_000 + ctx.state.step)
        self.tests.append((ctx.state.step, scores.tolist()))
        mastered = float(np.mean(scores >= threshold))
        ctx.logger.scalars({"curriculum/mastered": mastered, "curriculum/test_score": float(scores.mean())},
                           ctx.state.step)
        ctx.state.last_evaluation["curriculum/mastered"] = mastered

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "sampled": list(self.sampled),
                "params_of": {int(w): p.tolist() for w, p in self.params_of.items()},
                "tests": [list(t) for t in self.tests], "teacher_seconds": self.teacher_seconds,
                "regret": None if self.regret is None else self.regret.state_dict(),
                "regret_seconds": self.regret_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.sampled = [dict(f) for f in state["sampled"]]
        self.params_of = {int(w): np.asarray(p, np.float64) for w, p in state.get("params_of", {}).items()}
        self.tests = [(int(step), list(r)) for step, r in state.get("tests", [])]
        self.teacher_seconds = float(state.get("teacher_seconds", 0.0))
        self.regret_seconds = float(state.get("regret_seconds", 0.0))
        saved = state.get("regret")
        if (saved is None) != (self.regret is None):
            raise ValueError("the checkpoint's curriculum " + ("has no regret source, this run has one" if saved is None
                             else "has a regret source (an antagonist or a critic estimate), this run has none"))
        if self.regret is not None:
            self.regret.load_state_dict(saved)


def _short(values: np.ndarray) -> str:
    """A bound for an error message: the list, or its range when long (a maze's 36 cells)."""
    values = np.asarray(values).ravel()
    if values.size <= 6:
        return str(values.tolist())
    return f"{values.size} values in {values.min():g}..{values.max():g}"


# --- regret: what CLUTR's teacher learns from ----------------------------------------------------------------------
def paired_regret(antagonist_return: float, protagonist_return: float) -> float:
    """PAIRED's regret of one layout, as the reference code trains its teacher on it: max(0, antagonist's return -
    protagonist's return)."""
    return max(0.0, float(antagonist_return) - float(protagonist_return))


def discounted_return(rewards: Any, gamma: float) -> float:
    """sum_t gamma^t r_t of one episode."""
    r = np.asarray(rewards, dtype=np.float64)
    return float((gamma ** np.arange(len(r)) * r).sum())


def positive_value_loss(rewards: Any, values: Any, last_value: float, gamma: float, lam: float = GAE_LAMBDA) -> float:
    """Robust PLR's positive value loss of one episode: the mean over its steps of max(0, GAE advantage), where
    ``A_t = sum_k (gamma lam)^k delta_{t+k}``, ``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)``.

    :param rewards: ``[T]`` rewards.
    :param values: ``[T]`` values V(s_t) of the episode's states.
    :param last_value: V(s_T) of the state after the last step (0 if the episode terminated there).
    """
    r, v = np.asarray(rewards, dtype=np.float64), np.asarray(values, dtype=np.float64)
    delta = r + gamma * np.append(v[1:], last_value) - v
    advantage, running = np.zeros_like(delta), 0.0
    for t in range(len(delta) - 1, -1, -1):
        running = delta[t] + gamma * lam * running
        advantage[t] = running
    return float(np.maximum(advantage, 0.0).mean()) if len(advantage) else 0.0


def max_mc(best_return: float, first_value: float) -> float:
    """MaxMC of one layout with dense rewards, as the DCD code scores it (``grounded_positive_value_loss`` with
    ``use_dense_rewards``): max(0, the highest return reached on the layout - V(s_0))."""
    return max(0.0, float(best_return) - float(first_value))


def last_episode(buffer: ReplayBuffer, window: int = 1024) -> dict[str, torch.Tensor]:
    """The rows of the buffer's newest episode (from its last ``episode_start`` row to the newest), oldest first:
    ``obs``, ``reward``, ``next_obs``, ``terminated``. One world's transitions only (the layout teachers run one).
    Searches back ``window`` rows at a time, so a full buffer is not scanned for a short episode."""
    for back in range(0, len(buffer), window):
        newest_first = (buffer.pos - 1 - back - torch.arange(min(window, len(buffer) - back))) % buffer.capacity
        starts = torch.nonzero(buffer.storage["episode_start"][newest_first.to(buffer.device)])
        if len(starts):
            length = back + int(starts[0]) + 1
            rows = ((buffer.pos - length + torch.arange(length)) % buffer.capacity).to(buffer.device)
            return {k: buffer.storage[k][rows] for k in ("obs", "reward", "next_obs", "terminated")}
    raise ValueError("the replay buffer holds no episode start: cannot find the episode that just ended")


@torch.no_grad()
def sac_values(agent: SAC, obs: torch.Tensor) -> torch.Tensor:
    """V(s) ~= min_k Q_k(s, mu(s)) with mu the deterministic action: SAC's soft Q, so it also counts the entropy
    bonus still to come."""
    action, _ = agent.actor(obs.to(agent.device), deterministic=True)
    return agent.critic(obs.to(agent.device), action).min(dim=0).values.cpu()


class RegretSource:
    """Computes the regret of the episode that just ended, for :class:`TeacherHook` (see the module docstring)."""

    name = "regret"

    def regret(self, ctx: LoopContext, task: Any, episode_return: float) -> float:
        """The regret of ``task``, whose episode the protagonist (``ctx.agent``) just ended with this return."""
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """Scalars worth logging under ``curriculum/``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class PairedRegret(RegretSource):
    """PAIRED's antagonist: plays every layout the protagonist played, once, and learns from it as the online loop
    would (uniform random actions for its first ``learning_starts`` steps, then ``gradient_steps`` updates per
    stored transition from its own replay buffer). Its env steps do not count toward the run's ``total_steps``
    (as in the reference code, whose step count is the protagonist's), so a run with it takes about twice the
    env steps and updates.

    Args:
        antagonist: an agent of the protagonist's algorithm and settings (its own weights).
        env: its own training env, made as the protagonist's (same decision interval).
        seed: seed of its env's resets and random actions.
        device: where its replay buffer lives.
    """

    name = "paired"

    def __init__(self, antagonist: Agent, env: Any, seed: int, device: str = "cpu"):
        self.antagonist, self.env = antagonist, env
        self.collector = SingleEnvCollector(env, antagonist.stores_primitive)
        self.buffer = ReplayBuffer(antagonist.config.buffer_size, self.collector.obs_shape, self.collector.act_shape,
                                   device)
        self.collector.start(seed)
        self.steps = 0
        self.returns: list[float] = []  # the antagonist's return on every layout
        self.regrets: list[float] = []

    def regret(self, ctx: LoopContext, task: Any, episode_return: float) -> float:
        antagonist_return = self.play(ctx, task)
        self.returns.append(antagonist_return)
        self.regrets.append(paired_regret(antagonist_return, episode_return))
        return self.regrets[-1]

    def play(self, ctx: LoopContext, task: Any) -> float:
        """One antagonist episode on ``task``, learning as it goes; returns its return."""
        config = self.antagonist.config
        self.collector.reset_worlds([0], [task])
        while True:
            got = self.collector.collect(self.antagonist, self.buffer, random=self.steps < config.learning_starts)
            self.steps += got.steps
            if self.steps >= config.learning_starts:
                learn(self.antagonist, self.buffer, got.stored, ctx.state, ctx.run_dir, ctx.config.precision)
            if got.ended:
                return got.ended[0][1]

    def metrics(self) -> dict[str, float]:
        recent = self.returns[-50:]
        return {"antagonist_steps": float(self.steps),
                "antagonist_return": float(np.mean(recent)) if recent else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "agent": self.antagonist.state_dict(), "buffer": self.buffer.state_dict(),
                "env": self.collector.state_dict() if self.returns else None, "steps": self.steps,
                "returns": list(self.returns), "regrets": list(self.regrets)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, self.name)
        self.antagonist.load_state_dict(state["agent"])
        self.buffer.load_state_dict(state["buffer"])
        if state["env"] is not None:  # else it never reset: its first reset still uses the seed
            self.collector.load_state_dict(state["env"])
        self.steps = int(state["steps"])
        self.returns = [float(r) for r in state["returns"]]
        self.regrets = [float(r) for r in state["regrets"]]


class CriticRegret(RegretSource):
    """A regret estimate from the protagonist's own critic over the episode it just played (read back from the
    run's replay buffer): ``pvl``, the positive value loss (:func:`positive_value_loss`, GAE lambda
    :data:`GAE_LAMBDA`, the agent's gamma), or ``maxmc`` (:func:`max_mc`, with the highest discounted return the
    protagonist reached on that layout so far, this episode included). Nonzero on layouts never seen before,
    unlike a regret that compares returns on repeated layouts. Needs a SAC protagonist (:func:`sac_values`).

    Args:
        kind: ``pvl`` or ``maxmc``.
    """

    def __init__(self, kind: str):
        if kind not in ("pvl", "maxmc"):
            raise ValueError(f"a critic's regret estimate is 'pvl' or 'maxmc', got {kind!r}")
        self.name = kind
        self.best: dict[bytes, float] = {}  # maxmc: the highest discounted return per layout code

    def regret(self, ctx: LoopContext, task: Any, episode_return: float) -> float:
        agent = ctx.agent
        if not isinstance(agent, SAC):
            raise TypeError(f"the {self.name} regret reads a SAC critic; this run's agent is {type(agent).__name__}")
        episode = last_episode(ctx.buffer)
        values = sac_values(agent, episode["obs"]).double().numpy()
        rewards = episode["reward"].double().cpu().numpy()
        gamma = agent.config.gamma
        if self.name == "pvl":
            ended = bool(episode["terminated"][-1])
            last = 0.0 if ended else float(sac_values(agent, episode["next_obs"][-1:])[0])
            return positive_value_loss(rewards, values, last, gamma)
        key = np.asarray(task, dtype=np.float64).tobytes()
        self.best[key] = max(self.best.get(key, -math.inf), discounted_return(rewards, gamma))
        return max_mc(self.best[key], values[0])

    def state_dict(self) -> dict[str, Any]:
        codes = [np.frombuffer(k, dtype=np.float64) for k in self.best]
        return {"name": self.name, "codes": torch.from_numpy(np.array(codes, dtype=np.float64)),
                "best": torch.tensor(list(self.best.values()), dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, self.name)
        codes = state["codes"].numpy()
        self.best = {row.tobytes(): float(b) for row, b in zip(codes, state["best"].tolist(), strict=True)}


def _check_kind(state: dict[str, Any], name: str) -> None:
    if state.get("name") != name:
        raise ValueError(f"the checkpoint's curriculum regret is {state.get('name')!r}, this run's is {name!r}")
