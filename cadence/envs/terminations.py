"""Torch termination functions of the Gymnasium v5 tasks, computed from the next observation.

Model-based planners and model rollouts need to know when a predicted state ends the episode.
Each function maps ``next_obs [..., obs_dim]`` to a bool tensor ``[...]`` and equals Gymnasium
v5's default ``terminated`` flag (tests replay random actions in Gymnasium and compare).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TerminationFn = Callable[[torch.Tensor], torch.Tensor]


def _never(next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


def _inverted_pendulum(next_obs: torch.Tensor) -> torch.Tensor:
    # v5: terminated = not (isfinite(obs).all() and |qpos[1]| <= 0.2)
    return ~(torch.isfinite(next_obs).all(-1) & (next_obs[..., 1].abs() <= 0.2))


def _hopper(next_obs: torch.Tensor) -> torch.Tensor:
    # obs = qpos[1:] ++ qvel; z = obs[0], angle = obs[1]; the state range applies to obs[1:]
    z, angle, rest = next_obs[..., 0], next_obs[..., 1], next_obs[..., 1:]
    healthy = (rest.abs() < 100.0).all(-1) & (z > 0.7) & (angle > -0.2) & (angle < 0.2)
    return ~healthy


def _walker2d(next_obs: torch.Tensor) -> torch.Tensor:
    z, angle = next_obs[..., 0], next_obs[..., 1]
    return ~((z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0))


def _ant(next_obs: torch.Tensor) -> torch.Tensor:
    z = next_obs[..., 0]
    return ~(torch.isfinite(next_obs).all(-1) & (z >= 0.2) & (z <= 1.0))


def _humanoid(next_obs: torch.Tensor) -> torch.Tensor:
    z = next_obs[..., 0]
    return ~((z > 1.0) & (z < 2.0))


TERMINATIONS: dict[str, TerminationFn] = {
    "InvertedPendulum-v5": _inverted_pendulum,
    "Hopper-v5": _hopper,
    "Walker2d-v5": _walker2d,
    "Ant-v5": _ant,
    "Humanoid-v5": _humanoid,
    "HalfCheetah-v5": _never,
    "Swimmer-v5": _never,
    "Reacher-v5": _never,
    "Pusher-v5": _never,
    "Pendulum-v1": _never,
}


def termination_fn(env_id: str) -> TerminationFn:
    """The termination function of ``env_id``; raises for envs without one."""
    if env_id not in TERMINATIONS:
        raise ValueError(f"no torch termination function for {env_id!r}; available: {', '.join(TERMINATIONS)}")
    return TERMINATIONS[env_id]
