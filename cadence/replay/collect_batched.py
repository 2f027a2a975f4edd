"""Collecting a data set with many worlds at once (a :class:`~cadence.envs.batched.BatchedEnv`): what
``cadence collect --worlds N`` runs, on the rollout backend's CPU threads or MuJoCo Warp on a GPU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cadence.replay.datasets import OfflineDataset

BatchPolicy = Callable[[np.ndarray], np.ndarray]
"""``policy(obs [m, obs_dim]) -> actions [m, act_dim]``."""


def uniform_batch_policy(action_space: gym.spaces.Box, seed: int) -> BatchPolicy:
    """Uniform random actions for a batch of observations, seeded."""
    rng = np.random.default_rng(seed)
    low, high = action_space.low, action_space.high
    return lambda obs: rng.uniform(low, high, (len(obs), *low.shape)).astype(np.float32)


def collect_batched(env_id: str, policy: BatchPolicy, n_steps: int, seed: int, worlds: int,
                    backend: str = "rollout", physics_device: str | None = None, task: Any = None,
                    progress: bool = False, description: str = "collect") -> OfflineDataset:
    """Exactly ``n_steps`` transitions of ``policy`` from ``worlds`` worlds stepped together.

    World ``i`` starts with seed ``seed + i`` and its episode ``k`` with ``seed + i + k * worlds``, so every episode
    has its own seed. The data set holds whole episodes in the order they ended, then the episodes still running
    when the budget was reached, cut there and marked as timeouts (as D4RL cuts its last episode); a dataset row
    never mixes worlds. ``next_observations`` are stored, final observations included.
    """
    from cadence.envs.batched import BatchedEnv  # the batched layer builds on replay's datasets

    if n_steps < 1 or worlds < 1:
        raise ValueError(f"n_steps and worlds must be >= 1, got {n_steps} and {worlds}")
    env = BatchedEnv(env_id, worlds, backend, autoreset=True,
                     physics_device=(physics_device or "cpu") if backend == "warp" else None)
    rows = -(-n_steps // worlds)  # decisions to take: every world steps once per decision
    columns: dict[str, np.ndarray] = {}
    ends = np.zeros((rows, worlds), bool)  # the world's episode ended at this row
    obs = env.reset(seed=seed, tasks=None if task is None else [task] * worlds).numpy()
    bar_columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*bar_columns, disable=not progress) as bar, torch.inference_mode():
        bar_task = bar.add_task(description, total=rows * worlds)
        for t in range(rows):
            action = np.asarray(policy(obs), np.float32).reshape(worlds, -1)
            next_obs, reward, terminated, truncated, info = env.step(action)
            real_next = (info["final_obs"] if "final_obs" in info else next_obs).numpy()
            step = {"observations": obs, "actions": action, "rewards": reward.numpy(),
                    "next_observations": real_next, "terminals": terminated.numpy(),
                    "timeouts": (truncated & ~terminated).numpy()}
            for key, value in step.items():
                if key not in columns:
                    columns[key] = np.empty((rows, *value.shape), value.dtype)
                columns[key][t] = value
            ends[t] = (terminated | truncated).numpy()
            obs = next_obs.numpy()
            if t % 100 == 99:
                bar.update(bar_task, completed=(t + 1) * worlds)
        bar.update(bar_task, completed=rows * worlds)
    env.close()
    order = _episode_rows(ends)[:n_steps]
    data = {key: value[order[:, 0], order[:, 1]] for key, value in columns.items()}
    data["timeouts"][-1] |= not data["terminals"][-1]
    running = np.zeros(len(order), bool)  # the last row of an episode still running at the end is a cut
    last_of_world = {int(w): i for i, (_, w) in enumerate(order)}
    for w, i in last_of_world.items():
        if not ends[order[i, 0], w]:
            running[i] = True
    data["timeouts"] |= running
    return OfflineDataset(data["observations"], data["actions"], data["rewards"].astype(np.float32),
                          data["terminals"], data["timeouts"], next_observations=data["next_observations"])


def _episode_rows(ends: np.ndarray) -> np.ndarray:
    """``[(row, world), ...]`` of every transition, episode by episode: finished episodes in the order they ended
    (by row, then world), then each world's unfinished one."""
    rows, worlds = ends.shape
    finished: list[tuple[int, int, int]] = []  # (end row, world, start row)
    running: list[tuple[int, int]] = []
    for w in range(worlds):
        start = 0
        for end in np.flatnonzero(ends[:, w]):
            finished.append((int(end), w, start))
            start = int(end) + 1
        if start < rows:
            running.append((w, start))
    pieces = [np.stack([np.arange(s, e + 1), np.full(e + 1 - s, w)], 1) for e, w, s in sorted(finished)]
    pieces += [np.stack([np.arange(s, rows), np.full(rows - s, w)], 1) for w, s in running]
    return np.concatenate(pieces)
