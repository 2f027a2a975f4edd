"""Whole episodes in many worlds at once: FAS sweeps and task-by-task evaluation matrices both run here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mujoco
import numpy as np

from cadence.envs.batched.env import BatchedEnv

#: ``act_sequence(obs [m, obs_dim], length) -> [m, length, act_dim]``, or one observation at a time
SequencePolicy = Callable[[np.ndarray, int], np.ndarray]


def batched_returns(env_id: str, act_sequence: SequencePolicy, seeds: Sequence[int], asl: Sequence[int] | int = 1,
                    models: Sequence[mujoco.MjModel] | None = None, batch_policy: bool = True,
                    backend: str = "rollout", threads: int | None = None) -> np.ndarray:
    """Undiscounted return of one episode per world; world ``i`` is reset with ``seeds[i]``.

    World ``i`` decides once every ``asl[i]`` primitive steps and runs that many actions open loop (ASL 1 is
    ordinary closed-loop control), optionally in its own ``models[i]`` (a task variant). All running worlds
    advance one primitive step per physics call; worlds deciding at the same step are grouped by ASL, one
    policy call per group (with ``batch_policy=False`` one call per observation).
    """
    n = len(seeds)
    asl = np.broadcast_to(np.asarray(asl, np.int64), (n,))
    if (asl < 1).any():
        raise ValueError(f"ASL values must be >= 1, got {sorted(set(asl.tolist()))}")
    env = BatchedEnv(env_id, n, backend, autoreset=False, threads=threads, models=models)
    obs = env.reset(seed=list(seeds)).numpy()
    plans = np.zeros((n, int(asl.max()), env.single_action_space.shape[0]), np.float32)
    position = np.zeros(n, np.int64)  # index of the next action of each world's current sequence
    returns, running = np.zeros(n), np.ones(n, bool)
    while running.any():
        deciding = running & (position == 0)
        for length in np.unique(asl[deciding]):
            rows = np.flatnonzero(deciding & (asl == length))
            if batch_policy:
                chosen = act_sequence(obs[rows], int(length))
            else:
                chosen = np.stack([act_sequence(o, int(length)) for o in obs[rows]])
            plans[rows, :length] = np.asarray(chosen).reshape(len(rows), length, -1)
        next_obs, reward, terminated, truncated, _ = env.step(plans[np.arange(n), position], active=running)
        returns += np.where(running, reward.numpy(), 0.0)
        running &= ~(terminated | truncated).numpy()
        position = (position + 1) % asl
        obs = next_obs.numpy()
    env.close()
    return returns


def task_returns(env_id: str, act_sequence: SequencePolicy, task_models: Sequence[mujoco.MjModel], episodes: int,
                 seed: int = 0, **kwargs) -> np.ndarray:
    """Returns ``[n_tasks, episodes]`` of one policy on every task variant, all in one batch.

    One row of a continual-learning evaluation matrix: evaluate the policy after each task on every task.
    Episode ``e`` of every task is reset with ``seed + e``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    models = [m for m in task_models for _ in range(episodes)]
    seeds = [seed + e for _ in task_models for e in range(episodes)]
    return batched_returns(env_id, act_sequence, seeds, 1, models, **kwargs).reshape(len(task_models), episodes)
