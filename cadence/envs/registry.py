"""``cadence.envs.make``: one entry point for every environment cadence knows."""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym

from cadence.envs.control import DecisionIntervalWrapper, check_decision_interval

#: Gymnasium MuJoCo v5 tasks, plus the classic-control Pendulum that FAS has an R_max for.
GYMNASIUM_IDS: tuple[str, ...] = (
    "Hopper-v5",
    "Walker2d-v5",
    "HalfCheetah-v5",
    "Ant-v5",
    "Humanoid-v5",
    "Swimmer-v5",
    "Reacher-v5",
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
    "Pusher-v5",
    "Pendulum-v1",
)


def known_env_ids() -> list[str]:
    """Every env id that :func:`make` accepts."""
    return list(GYMNASIUM_IDS)


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if known, else raise ``ValueError`` listing the close matches."""
    known = known_env_ids()
    if env_id in known:
        return env_id
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(env_id.lower(), list(lowered), n=5, cutoff=0.5)
    hint = ", ".join(lowered[c] for c in close) if close else "none; known ids: " + ", ".join(known)
    raise ValueError(f"unknown env id {env_id!r}; close matches: {hint}")


def make(
    env_id: str,
    *,
    decision_interval: int = 1,
    sequence: bool = False,
    task: Any = None,
    seed: int | None = None,
    **kwargs: Any,
) -> gym.Env:
    """Create an environment with decision-frequency control.

    Args:
        env_id: a Gymnasium id such as ``"Hopper-v5"``.
        decision_interval: primitive steps ``J`` per agent decision (>= 1).
        sequence: if True the action space is ``Box(J * act_dim)`` and the J actions run open loop;
            otherwise one action is repeated J times.
        task: task parameters, for task-family ids only.
        seed: if given, the env is reset once with this seed so its RNG is fixed.
        **kwargs: passed to ``gymnasium.make``.

    Returns:
        A ``gymnasium.Env``; the outermost wrapper is a :class:`DecisionIntervalWrapper`
        whose ``info["primitive"]`` carries every primitive transition.
    """
    env_id = check_env_id(env_id)
    decision_interval = check_decision_interval(decision_interval)
    if task is not None:
        raise ValueError(f"{env_id} is a plain Gymnasium env and takes no task parameters (got task={task!r})")
    env = gym.make(env_id, **kwargs)
    env = DecisionIntervalWrapper(env, decision_interval=decision_interval, sequence=sequence)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
