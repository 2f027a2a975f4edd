"""Capture and restore an env's random generators and, mid-episode, its physics and wrapper counters,
so a resumed run draws the same episodes and continues the one it stopped in."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from cadence.envs.control import DecisionIntervalWrapper

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


def _wrappers(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def episode_state(env: gym.Env) -> dict[str, Any]:
    """The state of the episode in progress: MuJoCo's integration state, the time limit's step count and the
    decision wrapper's last observation (plus the generators, as :func:`env_rng_state`)."""
    base = env.unwrapped
    physics = np.empty(mujoco.mj_stateSize(base.model, PHYSICS_STATE))
    mujoco.mj_getState(base.model, base.data, physics, PHYSICS_STATE)
    chain = _wrappers(env)
    return {
        "physics": physics,
        "elapsed_steps": [getattr(w, "_elapsed_steps", None) for w in chain if isinstance(w, gym.wrappers.TimeLimit)],
        "last_obs": [w._last_obs.copy() for w in chain if isinstance(w, DecisionIntervalWrapper)],
        "rng": env_rng_state(env),
    }


def set_episode_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Put ``env`` back into the episode :func:`episode_state` captured (the env is reset first, so its
    wrappers accept steps; the reset's random draws are then undone)."""
    env.reset()
    base = env.unwrapped
    expected = mujoco.mj_stateSize(base.model, PHYSICS_STATE)
    if state["physics"].shape != (expected,):
        raise ValueError(f"saved physics state has {state['physics'].size} values; {env.spec.id} needs {expected}")
    mujoco.mj_setState(base.model, base.data, np.asarray(state["physics"], dtype=np.float64), PHYSICS_STATE)
    mujoco.mj_forward(base.model, base.data)
    chain = _wrappers(env)
    for wrapper, steps in zip([w for w in chain if isinstance(w, gym.wrappers.TimeLimit)], state["elapsed_steps"]):
        wrapper._elapsed_steps = steps
    for wrapper, obs in zip([w for w in chain if isinstance(w, DecisionIntervalWrapper)], state["last_obs"]):
        wrapper._last_obs = obs.copy()
    set_env_rng_state(env, state["rng"])
