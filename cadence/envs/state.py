"""Capture and restore an env's random generators and, mid-episode, its physics, task and wrapper counters,
so a resumed run draws the same episodes and continues the one it stopped in."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from cadence.envs.control import DecisionIntervalWrapper
from cadence.envs.tasks import TaskWrapper

#: what mj_step's result depends on: qpos, qvel, act, time, warm-start, controls and applied forces
PHYSICS_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


def env_rng_state(env: gym.Env) -> dict[str, Any]:
    """The env's reset-noise generator and its action space's sampler state."""
    return {
        "np_random": env.unwrapped.np_random.bit_generator.state,
        "action_space": env.action_space.np_random.bit_generator.state,
    }


def set_env_rng_state(env: gym.Env, state: dict[str, Any]) -> None:
    env.unwrapped.np_random.bit_generator.state = state["np_random"]
    env.action_space.np_random.bit_generator.state = state["action_space"]


def _wrappers(env: gym.Env, kind: type) -> list[gym.Env]:
    """The wrappers of type ``kind`` in ``env``'s chain, outermost first."""
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return [w for w in chain if isinstance(w, kind)]


def episode_state(env: gym.Env) -> dict[str, Any] | None:
    """The state of the episode in progress, or None for an env whose state cadence cannot capture.

    For MuJoCo envs: the integration state (mj_getState), the body positions that some envs read before
    stepping (Ant's ``xpos``, Humanoid's ``xipos``: after a step they still hold the last substep's values,
    which a fresh mj_forward would change), the time limit's step count, the decision wrapper's last
    observation, a task family's current task and the generators. Classic-control envs (Pendulum) keep their
    dynamic state in ``.state``.
    """
    base = env.unwrapped
    if hasattr(base, "model") and hasattr(base, "data"):
        physics = np.empty(mujoco.mj_stateSize(base.model, PHYSICS_STATE))
        mujoco.mj_getState(base.model, base.data, physics, PHYSICS_STATE)
        dynamics = {"physics": physics, "xpos": base.data.xpos.copy(), "xipos": base.data.xipos.copy()}
    elif hasattr(base, "state"):
        dynamics = {"classic_state": copy.deepcopy(base.state)}
    else:
        return None
    return {
        **dynamics,
        "elapsed_steps": [getattr(w, "_elapsed_steps", None) for w in _wrappers(env, gym.wrappers.TimeLimit)],
        "last_obs": [w._last_obs.copy() for w in _wrappers(env, DecisionIntervalWrapper)],
        "tasks": [None if w.task is None else w.task.copy() for w in _wrappers(env, TaskWrapper)],
        "rng": env_rng_state(env),
    }


def set_episode_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Put ``env`` back into the episode :func:`episode_state` captured (the task is set and the env reset first, so
    its physics is the task's and its wrappers accept steps; the reset's random draws are then undone)."""
    for wrapper, task in zip(_wrappers(env, TaskWrapper), state.get("tasks", []), strict=False):
        if task is not None:
            wrapper.set_task(task)
    env.reset()
    base = env.unwrapped
    if "physics" in state:
        expected = mujoco.mj_stateSize(base.model, PHYSICS_STATE)
        if state["physics"].shape != (expected,):
            raise ValueError(f"saved physics state has {state['physics'].size} values; {env.spec.id} needs {expected}")
        mujoco.mj_setState(base.model, base.data, np.asarray(state["physics"], dtype=np.float64), PHYSICS_STATE)
        mujoco.mj_forward(base.model, base.data)
        base.data.xpos[:], base.data.xipos[:] = state["xpos"], state["xipos"]
    else:
        base.state = copy.deepcopy(state["classic_state"])
    for wrapper, steps in zip(_wrappers(env, gym.wrappers.TimeLimit), state["elapsed_steps"]):
        wrapper._elapsed_steps = steps
    for wrapper, obs in zip(_wrappers(env, DecisionIntervalWrapper), state["last_obs"]):
        wrapper._last_obs = obs.copy()
    set_env_rng_state(env, state["rng"])
