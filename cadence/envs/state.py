"""Capture and restore an env's random generators, so a resumed run draws the same episodes."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


def env_rng_state(env: gym.Env) -> dict[str, Any]:
    """The env's reset-noise generator and its action space's sampler state."""
    return {
        "np_random": env.unwrapped.np_random.bit_generator.state,
        "action_space": env.action_space.np_random.bit_generator.state,
    }


def set_env_rng_state(env: gym.Env, state: dict[str, Any]) -> None:
    env.unwrapped.np_random.bit_generator.state = state["np_random"]
    env.action_space.np_random.bit_generator.state = state["action_space"]
