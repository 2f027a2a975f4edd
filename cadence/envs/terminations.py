"""Torch termination functions of the Gymnasium v5 tasks, computed from the next observation.

Model-based planners and model rollouts need to know when a predicted state ends the episode.
Each function maps ``next_obs [..., obs_dim]`` to a bool tensor ``[...]`` and equals Gymnasium
v5's default ``terminated`` flag (tests replay random actions in Gymnasium and compare), with two known limits:
Hopper's observation clips velocities to ±10 where Gymnasium checks the unclipped ones against its state range,
and InvertedDoublePendulum's tip height is read at an earlier integration stage (about 1 step in 100k differs). Healthy
ranges, ``terminate_when_unhealthy`` and the observation layout are read from an env instance, as
:mod:`cadence.envs.rewards` reads them, so constructor arguments (``healthy_z_range=...``) carry over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch

from cadence.envs.rewards import _in
from cadence.envs.tasks import base_env_id

TerminationFn = Callable[[torch.Tensor], torch.Tensor]


def _never(next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


def _skipped(env: Any, n: int) -> int:
    """Index of ``qpos[n]`` in the observation: the first ``n`` positions are left out by default."""
    return 0 if env._exclude_current_positions_from_observation else n


def _inverted_pendulum(env: Any) -> TerminationFn:
    # v5: terminated = not (isfinite(obs).all() and |qpos[1]| <= 0.2)
    return lambda next_obs: ~(torch.isfinite(next_obs).all(-1) & (next_obs[..., 1].abs() <= 0.2))


def _inverted_double_pendulum(env: Any) -> TerminationFn:
    # v5: terminated = y <= 1, y the height of the tip site; obs = x, sin q1, sin q2, cos q1, cos q2, ...
    # Gymnasium reads y at RK4's last stage, not the final state: within ~1e-3 of 1 the two can disagree
    # (1 step in 100k random ones)
    model = env.model
    pole2 = model.site_bodyid[0]
    pole = model.body_parentid[pole2]
    hinge_z = float(model.body_pos[model.body_parentid[pole], 2] + model.body_pos[pole, 2])
    first, second = float(model.body_pos[pole2, 2]), float(model.site_pos[0, 2])

    def terminated(next_obs: torch.Tensor) -> torch.Tensor:
        sin1, sin2, cos1, cos2 = next_obs[..., 1], next_obs[..., 2], next_obs[..., 3], next_obs[..., 4]
        return hinge_z + first * cos1 + second * (cos1 * cos2 - sin1 * sin2) <= 1

    return terminated


def _hopper_like(env: Any) -> TerminationFn:
    """Hopper and Walker2d: z and torso angle in range; Hopper also bounds ``state_vector()[2:]``."""
    hopper = hasattr(env, "_healthy_state_range")
    z_at = _skipped(env, 1)

    def terminated(next_obs: torch.Tensor) -> torch.Tensor:
        z, angle = next_obs[..., z_at], next_obs[..., z_at + 1]
        healthy = _in(z, env._healthy_z_range) & _in(angle, env._healthy_angle_range)
        if hopper:  # obs[z_at + 1:] is qpos[2:] ++ clipped qvel
            healthy &= _in(next_obs[..., z_at + 1:], env._healthy_state_range).all(-1)
        return ~healthy

    return terminated


def _ant(env: Any) -> TerminationFn:
    z_at = _skipped(env, 2)
    return lambda next_obs: ~(torch.isfinite(next_obs).all(-1)
                              & _in(next_obs[..., z_at], env._healthy_z_range, closed=True))


def _humanoid(env: Any) -> TerminationFn:
    z_at = _skipped(env, 2)
    return lambda next_obs: ~_in(next_obs[..., z_at], env._healthy_z_range)


def _unhealthy(build: Callable[[Any], TerminationFn]) -> Callable[[Any], TerminationFn]:
    """``build``'s function, or never terminating where the env has ``terminate_when_unhealthy=False``."""
    return lambda env: build(env) if env._terminate_when_unhealthy else _never


#: builders from an unwrapped env instance, by env id
TERMINATIONS: dict[str, Callable[[Any], TerminationFn]] = {
    "InvertedPendulum-v5": _inverted_pendulum,
    "InvertedDoublePendulum-v5": _inverted_double_pendulum,
    "Hopper-v5": _unhealthy(_hopper_like),
    "Walker2d-v5": _unhealthy(_hopper_like),
    "Ant-v5": _unhealthy(_ant),
    "Humanoid-v5": _unhealthy(_humanoid),
    "HalfCheetah-v5": lambda env: _never,
    "Swimmer-v5": lambda env: _never,
    "Reacher-v5": lambda env: _never,
    "Pusher-v5": lambda env: _never,
    "Pendulum-v1": lambda env: _never,
}


def termination_fn(env_id: str, env: gym.Env | None = None) -> TerminationFn:
    """The termination function of ``env_id``, with ranges read from ``env`` (default: ``gym.make`` of its base env).

    A task family's id uses its base env's function: families change physics or rewards, not when an episode
    ends, and a family env's ``unwrapped`` is its base env. Raises for envs without one.
    """
    base = base_env_id(env_id)
    if base not in TERMINATIONS:
        behind = f" (a task family of {base})" if base != env_id else ""
        raise ValueError(f"no torch termination function for {env_id!r}{behind}; available: {', '.join(TERMINATIONS)}")
    env = env if env is not None else gym.make(base)
    return TERMINATIONS[base](env.unwrapped)
