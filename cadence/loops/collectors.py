"""Collectors: how the online loop gathers experience, from one Gymnasium env or from batched worlds.

Both give the loop the same surface, so :func:`cadence.loops.online.train_online` has one code path:
``collect`` takes one decision in every world and stores its transitions; worlds whose episode ended wait in
``pending`` until the loop resets them with the task its hooks chose (``reset_worlds``); ``state_dict``
holds what an exact resume needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadence.agents.base import Agent
from cadence.envs import env_rng_state, episode_state, set_env_rng_state, set_episode_state
from cadence.replay import ReplayBuffer


@dataclass
class Collected:
    """One iteration's experience: primitive steps taken, decisions made, transitions stored, episodes ended."""

    steps: int
    decisions: int
    stored: int
    ended: list[tuple[int, float]] = field(default_factory=list)
    """(world, episode return) of every episode that ended."""


def _reset_options(task: Any) -> dict[str, Any] | None:
    return None if task is None else {"task": task}


class SingleEnvCollector:
    """One Gymnasium env from :func:`cadence.envs.make`. Checkpoints are taken between episodes, where
    restoring the env's generators is enough; the final checkpoint also keeps the episode in progress."""

    n = 1
    label = ""

    def __init__(self, env: Any, primitive: bool):
        self.env, self.primitive = env, primitive
        self.obs_shape = env.observation_space.shape
        self.act_shape = env.primitive_action_space.shape if primitive else env.action_space.shape
        self.pending: list[int] = [0]
        self.task: Any = None
        self.obs: Any = None
        self.episode_return, self.episode_start = 0.0, True
        self._seed: int | None = None

    def start(self, seed: int) -> None:
        self._seed = seed
        self.env.action_space.seed(seed)

    def reset_worlds(self, worlds: list[int], tasks: list[Any]) -> None:
        self.task = tasks[0]
        self.obs, _ = self.env.reset(seed=self._seed, options=_reset_options(self.task))
        self._seed, self.pending = None, []
        self.episode_return, self.episode_start = 0.0, True

    def tasks(self, world: int) -> Any:
        return self.task

    @property
    def can_checkpoint(self) -> bool:
        return bool(self.pending)  # between episodes

    def collect(self, agent: Agent, buffer: ReplayBuffer, random: bool) -> Collected:
        action = self.env.action_space.sample() if random else agent.act(self.obs)
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        if self.primitive:
            p = info["primitive"]
            starts = np.zeros(len(p["reward"]), dtype=bool)
            starts[0] = self.episode_start
            buffer.add(p["obs"], p["action"], p["reward"], p["next_obs"], p["terminated"], p["truncated"],
                       episode_start=starts)
        else:
            buffer.add(self.obs, action, reward, next_obs, terminated, truncated, episode_start=self.episode_start)
        self.obs, self.episode_start = next_obs, False
        self.episode_return += reward
        steps = info["primitive_steps"]
        out = Collected(steps, 1, steps if self.primitive else 1)
        if terminated or truncated:
            out.ended.append((0, float(self.episode_return)))
            self.pending = [0]
        return out

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": env_rng_state(self.env), "pending": list(self.pending), "task": self.task}
        in_progress = None if self.pending else episode_state(self.env)
        if in_progress is not None:  # only the final checkpoint is taken mid-episode
            state["episode"] = {"env": in_progress, "obs": self.obs, "return": self.episode_return,
                                "start": self.episode_start}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending, self.task, self._seed = list(state["pending"]), state["task"], None
        if "episode" in state:  # continue the episode the run stopped in, under its task
            if self.task is not None:
                self.env.reset(options=_reset_options(self.task))
            episode = state["episode"]
            set_episode_state(self.env, episode["env"])
            self.obs, self.episode_return, self.episode_start = episode["obs"], episode["return"], episode["start"]
        else:
            set_env_rng_state(self.env, state["rng"])
            # an env whose episode cadence cannot capture: the unfinished episode is lost, a fresh one starts
            self.pending = self.pending or [0]


class BatchedCollector:
    """A :class:`cadence.envs.batched.BatchedEnv` (built with ``autoreset=False``): every world takes one decision
    per iteration. Its state holds the worlds' physics, so a checkpoint may be taken at any iteration."""

    label = ""

    def __init__(self, env: Any, primitive: bool):
        if env.autoreset:
            raise ValueError("the online loop resets worlds itself (hooks choose their tasks): build the BatchedEnv "
                             "with autoreset=False")
        self.env, self.primitive, self.n = env, primitive, env.n
        self.label = f" x{env.n}"
        act_dim = env.single_action_space.shape[0]
        # one decision's action: J actions in sequence mode (SRL), else one (repeated J times by SAC-J)
        per_decision = int(env.intervals.max()) if env.sequence else 1
        self.low = np.tile(env.single_action_space.low, per_decision)
        self.high = np.tile(env.single_action_space.high, per_decision)
        self.act_dim = act_dim
        self.obs_shape = env.single_observation_space.shape
        self.act_shape = (act_dim,) if primitive else self.low.shape
        self.pending = list(range(self.n))
        self.task_of: list[Any] = [None] * self.n
        self.returns, self.starts = np.zeros(self.n), np.ones(self.n, bool)
        self.obs: np.ndarray | None = None
        self._seed: int | None = None

    def start(self, seed: int) -> None:
        self._seed = seed * 100_003  # far from the eval episodes' seeds

    def reset_worlds(self, worlds: list[int], tasks: list[Any]) -> None:
        for world, task in zip(worlds, tasks, strict=True):
            self.task_of[world] = task
        task_list = None if all(t is None for t in tasks) else tasks
        if self._seed is not None:  # the first reset of every world
            obs = self.env.reset(seed=self._seed, tasks=task_list)
            self._seed = None
        else:
            obs = self.env.reset_worlds(np.asarray(worlds), tasks=task_list)
        self.obs = obs.numpy()
        self.returns[worlds], self.starts[worlds] = 0.0, True
        self.pending = []

    def tasks(self, world: int) -> Any:
        return self.task_of[world]

    can_checkpoint = True

    def collect(self, agent: Agent, buffer: ReplayBuffer, random: bool) -> Collected:
        n, env = self.n, self.env
        if random:  # uniform actions (NumPy's global generator, checkpointed)
            actions = np.random.uniform(self.low, self.high, (n, *self.low.shape)).astype(np.float32)
        else:
            actions = agent.act(self.obs)
        env_actions = actions.reshape(n, -1, self.act_dim) if env.sequence else actions
        next_obs, reward, terminated, truncated, info = env.step(env_actions, record_primitive=self.primitive)
        next_obs, ended = next_obs.numpy(), (terminated | truncated).numpy()
        if self.primitive:
            p = info["primitive"]
            first = np.r_[True, p["world"][1:] != p["world"][:-1]]  # a world's first record this decision
            buffer.add(p["obs"], p["action"], p["reward"], p["next_obs"], p["terminated"], p["truncated"],
                       episode_start=first & self.starts[p["world"]])
        else:
            buffer.add(self.obs, actions, reward.numpy(), next_obs, terminated.numpy(), truncated.numpy(),
                       episode_start=self.starts)
        steps = int(info["primitive_steps"].sum())
        self.returns += reward.numpy()
        self.starts[:] = False
        self.obs = next_obs
        out = Collected(steps, n, steps if self.primitive else n)
        out.ended = [(int(i), float(self.returns[i])) for i in np.flatnonzero(ended)]
        self.pending = [w for w, _ in out.ended]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"worlds": self.env.state_dict(), "returns": self.returns.copy(), "starts": self.starts.copy(),
                "pending": list(self.pending), "tasks": list(self.task_of)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state["worlds"])
        self.returns, self.starts = state["returns"].copy(), state["starts"].copy()
        self.pending, self.task_of, self._seed = list(state["pending"]), list(state["tasks"]), None
        self.obs = self.env.observations().numpy()
