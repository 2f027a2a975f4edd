"""Torch observation, reward and termination functions equal to Gymnasium v5's, for batched physics.

A batched backend steps many worlds without Gymnasium's Python ``step``; :class:`TaskPhysics` turns the
physics state before and after one primitive step into what Gymnasium v5 would return. Weights and ranges
are read from a Gymnasium env instance, so constructor arguments (``ctrl_cost_weight=...``) carry over.

Some rewards read quantities that MuJoCo leaves in ``MjData`` after ``mj_step`` (body and site positions,
constraint forces). These come from MuJoCo's last internal evaluation, not from the final state (one
substep behind with Euler, the last stage with RK4), so backends read them from ``MjData`` after the
last substep, as Gymnasium does; :attr:`TaskPhysics.reads` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from cadence.envs.tasks import TaskFamily, base_env_id, family_of

Tensor = torch.Tensor


@dataclass(frozen=True)
class DataRead:
    """A quantity read from ``MjData`` after a step: ``xpos`` of a body, ``site_xpos`` of a site, the
    ``qfrc_constraint`` of a joint's first degree of freedom, or ``cfrc_ext`` of all bodies."""

    field: str
    name: str | int

    def read(self, model: Any, data: Any) -> np.ndarray:
        """The value, flat. ``cfrc_ext`` (every body but the world, 6 each) needs ``mj_rnePostConstraint`` first,
        which Gymnasium calls after every step."""
        if self.field == "cfrc_ext":
            return data.cfrc_ext[1:].ravel()
        if self.field == "xpos":
            return data.xpos[model.body(self.name).id]
        if self.field == "site_xpos":
            return data.site_xpos[model.site(self.name).id]
        return data.qfrc_constraint[model.joint(self.name).dofadr[:1]]


@dataclass(frozen=True)
class PhysicsStep:
    """One primitive step of ``n`` worlds, as torch tensors."""

    qpos_before: Tensor
    """``[n, nq]`` before the step."""
    qpos: Tensor
    """``[n, nq]`` after the step."""
    qvel: Tensor
    """``[n, nv]`` after the step."""
    action: Tensor
    """``[n, nu]`` the action applied (before MuJoCo's control clamping, as Gymnasium's costs use it)."""
    reads: Tensor
    """``[n, total read size]`` after the step, in the order of :attr:`TaskPhysics.reads`."""
    reads_before: Tensor
    """``[n, total read size]`` before the step."""
    dt: float
    """Duration of the primitive step (frame_skip * timestep)."""
    task: Tensor | None = None
    """``[n, n_params]`` each world's task params, for task families whose reward depends on them; else None."""
    shared: dict[Callable, Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Values the reward and the termination both use (health), computed once per step (:func:`_once`); a copy made
    with ``dataclasses.replace`` starts empty."""


def _once(s: PhysicsStep, fn: Callable[[PhysicsStep], Tensor]) -> Tensor:
    """``fn(s)``, computed once per step however many of the step's functions ask. After a physics call each torch
    op runs with cold caches (~10 us on a CPU), so a step's op count is most of its cost beyond the physics."""
    if fn not in s.shared:
        s.shared[fn] = fn(s)
    return s.shared[fn]


StepFn = Callable[[PhysicsStep], Tensor]


@dataclass(frozen=True)
class TaskPhysics:
    """How one env turns physics into observations, rewards and terminations."""

    env_id: str
    frame_skip: int
    reads: tuple[DataRead, ...]
    observe: StepFn
    """``[n, obs_dim]`` from the state after the step (``qpos_before`` is unused; at reset it equals ``qpos``)."""
    reward: StepFn
    terminated: StepFn


def _ctrl_cost(env: gym.Env, action: Tensor, weight_attr: str = "_ctrl_cost_weight") -> Tensor:
    return getattr(env, weight_attr) * action.square().sum(-1)


def _in(x: Tensor, bounds: tuple[float, float], closed: bool = False) -> Tensor:
    low, high = bounds
    return (low <= x) & (x <= high) if closed else (low < x) & (x < high)


def _hopper_like(env: gym.Env, env_id: str) -> TaskPhysics:
    """Hopper-v5 and Walker2d-v5: forward velocity + healthy reward - control cost; unhealthy ends."""
    hopper = env_id.startswith("Hopper")

    def health(s: PhysicsStep) -> Tensor:
        z, angle = s.qpos[:, 1], s.qpos[:, 2]
        ok = _in(z, env._healthy_z_range) & _in(angle, env._healthy_angle_range)
        if hopper:  # Hopper also bounds every state entry but x and z: state_vector()[2:]
            state = torch.cat([s.qpos[:, 2:], s.qvel], dim=1)
            ok &= _in(state, env._healthy_state_range).all(-1)
        return ok

    def healthy(s: PhysicsStep) -> Tensor:
        return _once(s, health)

    def reward(s: PhysicsStep) -> Tensor:
        forward = env._forward_reward_weight * (s.qpos[:, 0] - s.qpos_before[:, 0]) / s.dt
        return forward + env._healthy_reward * healthy(s) - _ctrl_cost(env, s.action)

    return TaskPhysics(env_id, env.frame_skip, (),
                       lambda s: torch.cat([s.qpos[:, 1:], s.qvel.clamp(-10, 10)], dim=1),
                       reward, lambda s: ~healthy(s) if env._terminate_when_unhealthy else _never(s))


def _never(s: PhysicsStep) -> Tensor:
    return torch.zeros(s.qpos.shape[0], dtype=torch.bool, device=s.qpos.device)


def _half_cheetah(env: gym.Env, env_id: str) -> TaskPhysics:
    def reward(s: PhysicsStep) -> Tensor:
        forward = env._forward_reward_weight * (s.qpos[:, 0] - s.qpos_before[:, 0]) / s.dt
        return forward - _ctrl_cost(env, s.action)

    return TaskPhysics(env_id, env.frame_skip, (), lambda s: torch.cat([s.qpos[:, 1:], s.qvel], dim=1), reward, _never)


def _swimmer(env: gym.Env, env_id: str) -> TaskPhysics:
    def reward(s: PhysicsStep) -> Tensor:
        forward = env._forward_reward_weight * (s.qpos[:, 0] - s.qpos_before[:, 0]) / s.dt
        return forward - _ctrl_cost(env, s.action)

    return TaskPhysics(env_id, env.frame_skip, (), lambda s: torch.cat([s.qpos[:, 2:], s.qvel], dim=1), reward, _never)


def _inverted_pendulum(env: gym.Env, env_id: str) -> TaskPhysics:
    def observe(s: PhysicsStep) -> Tensor:
        return torch.cat([s.qpos, s.qvel], dim=1)

    def termination(s: PhysicsStep) -> Tensor:
        obs = observe(s)
        return ~torch.isfinite(obs).all(-1) | (obs[:, 1].abs() > 0.2)

    def terminated(s: PhysicsStep) -> Tensor:
        return _once(s, termination)

    return TaskPhysics(env_id, env.frame_skip, (), observe, lambda s: (~terminated(s)).to(s.qpos.dtype), terminated)


def _inverted_double_pendulum(env: gym.Env, env_id: str) -> TaskPhysics:
    # the pole tip is site 0; the observation ends with the cart slider's constraint force
    tip = env.unwrapped.model.site(0).name
    slider = env.unwrapped.model.joint(0).name

    def observe(s: PhysicsStep) -> Tensor:
        return torch.cat([s.qpos[:, :1], s.qpos[:, 1:].sin(), s.qpos[:, 1:].cos(), s.qvel.clamp(-10, 10),
                          s.reads[:, 3:4].clamp(-10, 10)], dim=1)

    def terminated(s: PhysicsStep) -> Tensor:
        return s.reads[:, 2] <= 1

    def reward(s: PhysicsStep) -> Tensor:
        x, y = s.reads[:, 0], s.reads[:, 2]
        v1, v2 = s.qvel[:, 1], s.qvel[:, 2]
        dist_penalty = 0.01 * x**2 + (y - 2) ** 2
        vel_penalty = 1e-3 * v1**2 + 5e-3 * v2**2
        return env._healthy_reward * (~terminated(s)) - dist_penalty - vel_penalty

    reads = (DataRead("site_xpos", tip), DataRead("qfrc_constraint", slider))
    return TaskPhysics(env_id, env.frame_skip, reads, observe, reward, terminated)


def _reacher(env: gym.Env, env_id: str) -> TaskPhysics:
    def to_target(s: PhysicsStep) -> Tensor:  # fingertip - target, body positions
        return s.reads[:, 0:3] - s.reads[:, 3:6]

    def observe(s: PhysicsStep) -> Tensor:
        theta = s.qpos[:, :2]
        return torch.cat([theta.cos(), theta.sin(), s.qpos[:, 2:], s.qvel[:, :2], to_target(s)[:, :2]], dim=1)

    def reward(s: PhysicsStep) -> Tensor:
        return (-to_target(s).norm(dim=-1) * env._reward_dist_weight
                - s.action.square().sum(-1) * env._reward_control_weight)

    reads = (DataRead("xpos", "fingertip"), DataRead("xpos", "target"))
    return TaskPhysics(env_id, env.frame_skip, reads, observe, reward, _never)


def _ant(env: gym.Env, env_id: str) -> TaskPhysics:
    # reads: torso position (3), then cfrc_ext of every body but the world (6 each)
    low, high = env._contact_force_range

    def health(s: PhysicsStep) -> Tensor:
        state = torch.cat([s.qpos, s.qvel], dim=1)
        return torch.isfinite(state).all(-1) & _in(s.qpos[:, 2], env._healthy_z_range, closed=True)

    def healthy(s: PhysicsStep) -> Tensor:
        return _once(s, health)

    def observe(s: PhysicsStep) -> Tensor:
        return torch.cat([s.qpos[:, 2:], s.qvel, s.reads[:, 3:].clamp(low, high)], dim=1)

    def reward(s: PhysicsStep) -> Tensor:
        forward = env._forward_reward_weight * (s.reads[:, 0] - s.reads_before[:, 0]) / s.dt
        contact = env._contact_cost_weight * s.reads[:, 3:].clamp(low, high).square().sum(-1)
        return forward + env._healthy_reward * healthy(s) - _ctrl_cost(env, s.action) - contact

    reads = (DataRead("xpos", env._main_body), DataRead("cfrc_ext", ""))
    return TaskPhysics(env_id, env.frame_skip, reads, observe, reward,
                       lambda s: ~healthy(s) if env._terminate_when_unhealthy else _never(s))


_BUILDERS: dict[str, Callable[[gym.Env, str], TaskPhysics]] = {
    "Hopper-v5": _hopper_like,
    "Walker2d-v5": _hopper_like,
    "HalfCheetah-v5": _half_cheetah,
    "Swimmer-v5": _swimmer,
    "InvertedPendulum-v5": _inverted_pendulum,
    "InvertedDoublePendulum-v5": _inverted_double_pendulum,
    "Reacher-v5": _reacher,
    "Ant-v5": _ant,
}


def task_physics(env_id: str, env: gym.Env | None = None, family: TaskFamily | None = None) -> TaskPhysics:
    """The :class:`TaskPhysics` of ``env_id``, with weights read from ``env`` (default: ``gym.make`` of its base env).

    A task family's id (or an explicit ``family``) gets its base env's functions, with the family's torch reward
    where the family changes the reward; that reward reads each world's params from :attr:`PhysicsStep.task`.
    """
    base = base_env_id(env_id)
    if base not in _BUILDERS:
        behind = f" (a task family of {base})" if base != env_id else ""
        raise ValueError(f"no torch physics functions for {env_id!r}{behind}; available: {', '.join(_BUILDERS)}")
    env = env if env is not None else gym.make(base)
    physics = _BUILDERS[base](env.unwrapped, base)
    family = family if family is not None else family_of(env_id)
    if family is None:
        return physics
    if family.reward is not None and family.torch_reward is None:
        raise ValueError(f"task family {family.name} changes the reward but has no torch reward; use the gymnasium "
                         "backend")
    reward = family.torch_reward(env.unwrapped, physics) if family.torch_reward is not None else physics.reward
    return replace(physics, env_id=family.name, reward=reward)


def supported_envs() -> tuple[str, ...]:
    """The Gymnasium ids with torch physics functions (task families of them are supported too: :func:`supports`)."""
    return tuple(_BUILDERS)


def supports(env_id: str) -> bool:
    """Whether ``env_id``, or the base env of the task family it names, has torch physics functions."""
    return base_env_id(env_id) in _BUILDERS
