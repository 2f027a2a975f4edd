"""Turning a policy's experience into an OfflineDataset: rollouts, replay buffers, concatenation, provenance.

These pieces know nothing of agents: a policy is any callable from an observation to an action. Which
policies make D4RL's ``random``/``medium``/``expert`` kinds is decided above, in :mod:`cadence.collection`.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import cadence
from cadence.replay.buffer import ReplayBuffer
from cadence.replay.datasets import OfflineDataset

Policy = Callable[[np.ndarray], np.ndarray]


def uniform_policy(action_space: gym.spaces.Box, seed: int) -> Policy:
    """Uniform random actions from ``action_space`` (D4RL's ``random`` kind), seeded."""
    space = gym.spaces.Box(action_space.low, action_space.high, dtype=action_space.dtype, seed=seed)
    return lambda obs: space.sample()


def collect_transitions(env: gym.Env, policy: Policy, n_steps: int, seed: int,
                        progress: bool = False, description: str = "collect") -> OfflineDataset:
    """Roll ``policy`` in ``env`` for exactly ``n_steps`` transitions, episode after episode.

    Episode ``i`` is reset with ``seed + i``. The last episode is cut at ``n_steps`` and marked as a
    timeout, as D4RL does. ``next_observations`` are stored, so final observations are exact.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    obs_space, act_space = env.observation_space, env.action_space
    obs = np.empty((n_steps, *obs_space.shape), np.float32)
    next_obs = np.empty_like(obs)
    actions = np.empty((n_steps, *act_space.shape), np.float32)
    rewards = np.empty(n_steps, np.float32)
    terminals = np.zeros(n_steps, bool)
    timeouts = np.zeros(n_steps, bool)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False, console=None) as bar:
        task = bar.add_task(description, total=n_steps)
        episode, (o, _) = 0, env.reset(seed=seed)
        for t in range(n_steps):
            a = np.asarray(policy(o), np.float32)
            o2, r, terminated, truncated, _ = env.step(a)
            obs[t], actions[t], rewards[t], next_obs[t] = o, a, r, o2
            terminals[t], timeouts[t] = terminated, truncated and not terminated
            if terminated or truncated:
                episode += 1
                o, _ = env.reset(seed=seed + episode)
            else:
                o = o2
            if t % 1000 == 999:
                bar.update(task, completed=t + 1)
        bar.update(task, completed=n_steps)
    timeouts[-1] |= not terminals[-1]
    return OfflineDataset(obs, actions, rewards, terminals, timeouts, next_observations=next_obs)


def buffer_to_dataset(buffer: ReplayBuffer, keep_task_ids: bool | None = None) -> OfflineDataset:
    """The buffer's transitions, oldest first (the order they were added), as an OfflineDataset.

    Used for ``medium-replay``: everything a training run stored. If the buffer wrapped around,
    the oldest surviving transition starts a new episode.

    The buffer's ``task_id`` column becomes ``task_ids`` (int64) when any row's task is not 0, or always with
    ``keep_task_ids=True``, never with ``False``. By default a single-task buffer (all task 0) gives ``task_ids``
    None, as before; nothing is lost, since :meth:`OfflineDataset.to_buffer` reads None as task 0.
    """
    if len(buffer) == 0:
        raise ValueError("the replay buffer is empty")
    n = len(buffer)
    order = np.arange(n) if n < buffer.capacity else (np.arange(n) + buffer.pos) % buffer.capacity
    s = {k: v.cpu().numpy()[order] for k, v in buffer.storage.items()}
    timeouts = s["truncated"] & ~s["terminated"]
    # a row that precedes an episode start ends its episode, e.g. a buffer wrap or an interrupted episode
    timeouts[:-1] |= s["episode_start"][1:] & ~s["terminated"][:-1]
    timeouts[-1] |= not s["terminated"][-1]
    task_ids = s["task_id"].astype(np.int64)
    keep = bool(task_ids.any()) if keep_task_ids is None else keep_task_ids
    return OfflineDataset(s["obs"], s["action"], s["reward"], s["terminated"], timeouts,
                          next_observations=s["next_obs"], task_ids=task_ids if keep else None)


def provenance(env_id: str, kind: str, policy: str, seed: int, policy_steps: int, data: OfflineDataset,
               **extra: Any) -> dict[str, Any]:
    """What every data set records (docs/ARCHITECTURE.md, "Offline data sets"): policy, seed, steps, mean return,
    cadence version."""
    returns = data.episode_returns()
    return {
        "env_id": env_id, "kind": kind, "policy": policy, "seed": seed, "policy_steps": policy_steps,
        "transitions": len(data), "episodes": len(returns),
        "mean_return": float(returns.mean()) if len(returns) else float("nan"),
        "cadence_version": cadence.__version__, "command": " ".join(sys.argv),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **extra,
    }
