"""Whole episodes in many worlds at once: FAS sweeps and task-by-task evaluation matrices both run here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mujoco
import numpy as np

from cadence.envs.batched.env import BatchedEnv

#: ``act_sequence(obs [m, obs_dim], length) -> [m, length, act_dim]``, or one observation at a time; a task-aware
#: policy also takes each row's task index: ``act_sequence(obs, length, task_index [m])``
SequencePolicy = Callable[..., np.ndarray]


def batched_returns(env_id: str, act_sequence: SequencePolicy, seeds: Sequence[int], asl: Sequence[int] | int = 1,
                    models: Sequence[mujoco.MjModel] | None = None, batch_policy: bool = True,
                    backend: str = "rollout", threads: int | None = None, *, tasks: Sequence[Any] | None = None,
                    task_index: Sequence[int] | None = None, task_aware: bool = False,
                    max_episode_steps: int | None = None, physics_device: str | None = None) -> np.ndarray:
    """Undiscounted return of one episode per world; world ``i`` is reset with ``seeds[i]``.

    World ``i`` decides once every ``asl[i]`` primitive steps and runs that many actions open loop (ASL 1 is
    ordinary closed-loop control), optionally in its own ``models[i]`` (a prebuilt variant) or in ``tasks[i]``
    (params or a preset name of ``env_id``'s task family). All running worlds advance one primitive step per
    physics call; worlds deciding at the same step are grouped by ASL, one policy call per group (with
    ``batch_policy=False`` one call per observation).

    With ``task_aware`` the policy also gets, per row, ``task_index[i]`` of the row's world (default: ``i``), the
    way a task-conditioned planner picks its task's model: ``act_sequence(obs, length, task_index_rows)``, or
    ``act_sequence(obs_row, length, int)`` with ``batch_policy=False``.

    ``backend="warp"`` steps the worlds with MuJoCo Warp on ``physics_device`` (default: Warp's CPU device; ``cuda``
    for a GPU); observations reach the policy as NumPy arrays either way.
    """
    n = len(seeds)
    asl = np.broadcast_to(np.asarray(asl, np.int64), (n,))
    if (asl < 1).any():
        raise ValueError(f"ASL values must be >= 1, got {sorted(set(asl.tolist()))}")
    if tasks is not None and len(tasks) != n:
        raise ValueError(f"need one task per world ({n}), got {len(tasks)}")
    index = np.arange(n) if task_index is None else np.asarray(task_index, np.int64)
    if index.shape != (n,):
        raise ValueError(f"need one task index per world ({n}), got shape {index.shape}")
    env = BatchedEnv(env_id, n, backend, autoreset=False, threads=threads, models=models,
                     max_episode_steps=max_episode_steps,
                     physics_device=(physics_device or "cpu") if backend == "warp" else None)
    try:
        obs = env.reset(seed=list(seeds), tasks=tasks).numpy()
        plans = np.zeros((n, int(asl.max()), env.single_action_space.shape[0]), np.float32)
        position = np.zeros(n, np.int64)  # index of the next action of each world's current sequence
        returns, running = np.zeros(n), np.ones(n, bool)
        while running.any():
            deciding = running & (position == 0)
            for length in np.unique(asl[deciding]):
                rows = np.flatnonzero(deciding & (asl == length))
                chosen = _decide(act_sequence, obs[rows], int(length), index[rows] if task_aware else None,
                                 batch_policy)
                plans[rows, :length] = np.asarray(chosen).reshape(len(rows), length, -1)
            next_obs, reward, terminated, truncated, _ = env.step(plans[np.arange(n), position], active=running)
            returns += np.where(running, reward.numpy(), 0.0)
            running &= ~(terminated | truncated).numpy()
            position = (position + 1) % asl
            obs = next_obs.numpy()
    finally:
        env.close()
    return returns


def _decide(act_sequence: SequencePolicy, obs: np.ndarray, length: int, task_index: np.ndarray | None,
            batch_policy: bool) -> np.ndarray:
    """The policy's ``[m, length, act_dim]`` plans for ``obs``, with the rows' task indices when task-aware."""
    if batch_policy:
        return act_sequence(obs, length) if task_index is None else act_sequence(obs, length, task_index)
    if task_index is None:
        return np.stack([act_sequence(o, length) for o in obs])
    return np.stack([act_sequence(o, length, int(t)) for o, t in zip(obs, task_index, strict=True)])


def task_returns(env_id: str, act_sequence: SequencePolicy, tasks: Sequence[Any], episodes: int, seed: int = 0,
                 *, task_aware: bool = False, **kwargs) -> np.ndarray:
    """Returns ``[n_tasks, episodes]`` of one policy on every task, all in one batch.

    One row of a continual-learning evaluation matrix: evaluate the policy after each task on every task.
    ``tasks`` are params or preset names of ``env_id``'s task family, or prebuilt ``MjModel`` variants. Episode
    ``e`` of every task is reset with ``seed + e``. With ``task_aware`` the policy is told each row's task, as its
    index into ``tasks`` (see :func:`batched_returns`).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    prebuilt = [isinstance(t, mujoco.MjModel) for t in tasks]
    if any(prebuilt) and not all(prebuilt):
        raise ValueError("tasks must be all MjModels or all task params / preset names, not a mix")
    per_world = [t for t in tasks for _ in range(episodes)]
    seeds = [seed + e for _ in tasks for e in range(episodes)]
    variants = {"models": per_world} if all(prebuilt) and tasks else {"tasks": per_world}
    returns = batched_returns(env_id, act_sequence, seeds, 1, **variants, task_aware=task_aware,
                              task_index=np.repeat(np.arange(len(tasks)), episodes), **kwargs)
    return returns.reshape(len(tasks), episodes)
