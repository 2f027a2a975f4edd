"""Gymnasium v5's seeded resets without Gymnasium's ``reset``: the same seeded generator, the same draws in the same
order, so a seed gives ``gym.make``'s initial state bit for bit.

``env.reset(seed=s)`` makes a generator from ``s`` (``gymnasium.utils.seeding.np_random``), resets ``MjData``,
perturbs ``init_qpos`` and ``init_qvel`` in ``reset_model``, runs ``mj_forward`` and builds an observation. A batched
backend needs only the perturbed ``qpos`` and ``qvel`` (its torch functions observe, and ``mj_forward`` matters only
to a task that reads ``MjData``): :func:`reset_noise` says how, and :func:`initial_states` draws them for many worlds,
about half the cost of the whole reset one world at a time, and ~10x less again for large batches of the envs whose
noise is all uniform (their worlds' generators run side by side: :mod:`cadence.envs.batched.seeding`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from cadence.envs.batched.seeding import first_doubles

#: ``(generator, init_qpos [nq], init_qvel [nv]) -> (qpos, qvel)``: one world's initial state, as ``reset_model``
#: draws it from the env's generator
DrawFn = Callable[[np.random.Generator, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

#: from this many worlds on, uniform noise is drawn for all of them at once (below, one generator each is cheaper)
BATCHED_FROM = 40


@dataclass(frozen=True)
class ResetNoise:
    """How one env's ``reset_model`` draws its initial state."""

    draw: DrawFn
    """One world's ``(qpos, qvel)`` from its seeded generator."""
    uniform_scale: float | None = None
    """Set where both are ``init + uniform(-scale, scale)``, every ``qpos`` draw then every ``qvel`` one (Hopper,
    Walker2d, Swimmer, InvertedPendulum): :func:`initial_states` can then draw many worlds at once."""


def _uniform_qpos_qvel(env: gym.Env) -> ResetNoise:
    """Hopper, Walker2d, Swimmer, InvertedPendulum: uniform noise of ``reset_noise_scale`` on both."""
    low, high = -env._reset_noise_scale, env._reset_noise_scale

    def draw(rng: np.random.Generator, qpos0: np.ndarray, qvel0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        qpos = qpos0 + rng.uniform(low=low, high=high, size=qpos0.size)
        return qpos, qvel0 + rng.uniform(low=low, high=high, size=qvel0.size)

    return ResetNoise(draw, uniform_scale=env._reset_noise_scale)


def _uniform_qpos_normal_qvel(env: gym.Env) -> ResetNoise:
    """HalfCheetah, Ant, InvertedDoublePendulum: uniform ``qpos`` noise, ``scale * standard normal`` on ``qvel``."""
    scale = env._reset_noise_scale

    def draw(rng: np.random.Generator, qpos0: np.ndarray, qvel0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        qpos = qpos0 + rng.uniform(low=-scale, high=scale, size=qpos0.size)
        return qpos, qvel0 + scale * rng.standard_normal(qvel0.size)

    return ResetNoise(draw)


def _reacher(env: gym.Env) -> ResetNoise:
    """Reacher: arm noise of 0.1 (not ``reset_noise_scale``), a goal drawn uniformly in the disc of radius 0.2 by
    rejection, the target's joints set to it and their velocities to zero."""

    def draw(rng: np.random.Generator, qpos0: np.ndarray, qvel0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        qpos = rng.uniform(low=-0.1, high=0.1, size=qpos0.size) + qpos0
        while True:
            goal = rng.uniform(low=-0.2, high=0.2, size=2)
            if np.linalg.norm(goal) < 0.2:
                break
        qpos[-2:] = goal
        qvel = qvel0 + rng.uniform(low=-0.005, high=0.005, size=qvel0.size)
        qvel[-2:] = 0
        return qpos, qvel

    return ResetNoise(draw)


_NOISE: dict[str, Callable[[gym.Env], ResetNoise]] = {
    "Hopper-v5": _uniform_qpos_qvel,
    "Walker2d-v5": _uniform_qpos_qvel,
    "Swimmer-v5": _uniform_qpos_qvel,
    "InvertedPendulum-v5": _uniform_qpos_qvel,
    "HalfCheetah-v5": _uniform_qpos_normal_qvel,
    "Ant-v5": _uniform_qpos_normal_qvel,
    "InvertedDoublePendulum-v5": _uniform_qpos_normal_qvel,
    "Reacher-v5": _reacher,
}


def reset_noise(env_id: str, env: gym.Env) -> ResetNoise:
    """How ``env_id``'s ``reset_model`` draws its initial state, with the noise scale of ``env`` (an instance of
    ``env_id``, so ``reset_noise_scale=...`` carries over)."""
    if env_id not in _NOISE:
        raise ValueError(f"no reset noise for {env_id!r}; available: {', '.join(_NOISE)}")
    return _NOISE[env_id](env.unwrapped)


def seeded_generator(seed: int) -> np.random.Generator:
    """The generator ``env.reset(seed=seed)`` draws from."""
    return seeding.np_random(int(seed))[0]


def initial_states(noise: ResetNoise, seeds: Sequence[int] | np.ndarray, qpos0: np.ndarray,
                   qvel0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``qpos [m, nq]`` and ``qvel [m, nv]`` that ``reset_model`` draws for seeds ``seeds`` from each world's
    ``init_qpos`` and ``init_qvel`` rows (``qpos0 [m, nq]``, ``qvel0 [m, nv]``): Gymnasium's, bit for bit."""
    seeds = [operator.index(s) for s in seeds]  # any size, as Gymnasium takes them; floats are refused
    if seeds and min(seeds) < 0:
        raise ValueError(f"reset seeds must be >= 0 (as Gymnasium's), got {min(seeds)}")
    nq = qpos0.shape[1]
    if noise.uniform_scale is not None and len(seeds) >= BATCHED_FROM and max(seeds) < 2**64:
        low, high = -noise.uniform_scale, noise.uniform_scale
        u = low + (high - low) * first_doubles(np.asarray(seeds, np.uint64), nq + qvel0.shape[1])  # as uniform()
        return qpos0 + u[:, :nq], qvel0 + u[:, nq:]
    qpos, qvel = np.empty(qpos0.shape), np.empty(qvel0.shape)
    for j, seed in enumerate(seeds):
        qpos[j], qvel[j] = noise.draw(seeded_generator(seed), qpos0[j], qvel0[j])
    return qpos, qvel
