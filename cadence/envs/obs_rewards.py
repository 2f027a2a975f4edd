"""Env rewards as functions of ``(obs, action, next_obs)``, for planners that score imagined transitions.

A model-based planner sees only observations, not the physics state that :mod:`cadence.envs.rewards` reads, so
these rewards are written from the observation alone, keyed by the base env's Gymnasium id. HyperCRL's controller
plans with such a function (its ``control/reward.py``: Half-Cheetah's ``x[0] - 0.1 |u|^2``, ``x[0]`` the root's
x-velocity in its own observation).

:func:`obs_reward` returns None where no such function is known: a base env not listed here, or a task family that
changes the reward (CheetahVel's target velocity is a task parameter the observation does not hold).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cadence.envs.tasks import base_env_id, family_of

Tensor = torch.Tensor
ObsReward = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``reward(obs [B, obs_dim], action [B, act_dim], next_obs [B, obs_dim]) -> [B]``."""

#: HalfCheetah-v5's observation index of the root's x-velocity (qvel[0]; qpos[0] is left out of the observation)
HALF_CHEETAH_X_VELOCITY = 8


def half_cheetah(forward_weight: float = 1.0, ctrl_cost_weight: float = 0.1) -> ObsReward:
    """HalfCheetah-v5's ``forward_weight * x-velocity - ctrl_cost_weight * |a|^2``. Gymnasium's forward term is the
    finite difference ``(x_after - x_before) / dt`` over the step, which the observation does not hold (it keeps
    qvel[0], the velocity at each end; HyperCRL's env puts the finite difference in its observation instead): the
    mean of ``obs[8]`` and ``next_obs[8]`` approximates it by the trapezoid rule (on 2000 random-action steps its
    error against the env's reward has std 0.18, the end velocity's alone 0.28, the reward's own std 0.64)."""

    def reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        velocity = 0.5 * (obs[..., HALF_CHEETAH_X_VELOCITY] + next_obs[..., HALF_CHEETAH_X_VELOCITY])
        return forward_weight * velocity - ctrl_cost_weight * action.square().sum(-1)

    return reward


def _half_cheetah_from(env: Any) -> ObsReward:
    """:func:`half_cheetah` with the weights an env instance was built with (Gymnasium's defaults without one)."""
    if env is None:
        return half_cheetah()
    unwrapped = env.unwrapped
    return half_cheetah(getattr(unwrapped, "_forward_reward_weight", 1.0),
                        getattr(unwrapped, "_ctrl_cost_weight", 0.1))


#: base env id -> the reward's builder from an env instance (or None: Gymnasium's default weights)
OBS_REWARDS: dict[str, Callable[[Any], ObsReward]] = {
    "HalfCheetah-v5": _half_cheetah_from,
}


def obs_reward(env_id: str, env: Any = None) -> ObsReward | None:
    """The reward of ``env_id`` (a Gymnasium id or a task family's) as a function of ``(obs, action, next_obs)``,
    with the weights of ``env`` when given; None where it is unknown (see the module docstring)."""
    family = family_of(env_id)
    if family is not None and family.reward is not None:
        return None
    builder = OBS_REWARDS.get(base_env_id(env_id))
    return None if builder is None else builder(env)
