"""Running whole episodes with a policy callable; shared by training-time evaluation and FAS."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

Policy = Callable[[np.ndarray], np.ndarray]


def run_episodes(env: gym.Env, policy: Policy, n_episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Roll ``n_episodes`` episodes; episode ``i`` is reset with ``seed + i``.

    Returns:
        (returns, lengths): undiscounted returns and primitive-step lengths, each shape ``[n_episodes]``.
    """
    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    for i in range(n_episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            returns[i] += reward
            lengths[i] += info.get("primitive_steps", 1)
            done = terminated or truncated
    return returns, lengths
