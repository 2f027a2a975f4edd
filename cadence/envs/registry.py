"""``cadence.envs.make``: one entry point for every environment cadence knows."""

from __future__ import annotations

import difflib
import sys
from typing import Any

import gymnasium as gym
import mujoco

from cadence.envs.control import DecisionIntervalWrapper, check_decision_interval
from cadence.envs.libero import LiberoEnv, is_libero_id, parse_libero_id
from cadence.envs.maze_tasks import LAYOUT_FAMILIES, register_layout_envs
from cadence.envs.tasks import FAMILIES, TaskWrapper, base_env_id, family_of

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


_MUJOCO_WARNINGS_SHOWN: set[str] = set()


def _warn_once(text: str) -> None:
    """MuJoCo's warning handler while cadence runs: each distinct warning once per process. Gymnasium's
    half_cheetah.xml alone warns (``settotalmass`` is deprecated) at every env made, and continual runs make many:
    that one, about Gymnasium's asset, which no cadence user can act on, is not shown."""
    if text not in _MUJOCO_WARNINGS_SHOWN and "'settotalmass' is deprecated" not in text:
        _MUJOCO_WARNINGS_SHOWN.add(text)
        print(f"MuJoCo warning: {text}", file=sys.stderr)


if mujoco.get_mju_user_warning() is None:  # a handler the user installed stays
    mujoco.set_mju_user_warning(_warn_once)


register_layout_envs()


def known_env_ids() -> list[str]:
    """Every env id that :func:`make` accepts: the Gymnasium ids, then the task families' and the maze layouts'."""
    return [*GYMNASIUM_IDS, *FAMILIES, *LAYOUT_FAMILIES]


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if known, else raise ``ValueError`` listing the close matches. LIBERO ids
    (``libero/<suite>/<task>``) are checked against the suites' sizes without importing the package."""
    if is_libero_id(env_id):
        parse_libero_id(env_id)
        return env_id
    known = known_env_ids()
    if env_id in known:
        return env_id
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(env_id.lower(), list(lowered), n=5, cutoff=0.5)
    hint = ", ".join(lowered[c] for c in close) if close else "none; known ids: " + ", ".join(known)
    raise ValueError(f"unknown env id {env_id!r}; close matches: {hint}")


def spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """Gymnasium's spec of ``env_id``, a task family's being its base env's (time limit, entry point)."""
    if is_libero_id(env_id):
        raise ValueError(f"{env_id} is a LIBERO task: it has no Gymnasium spec and no batched worlds; "
                         f"use cadence.envs.make({env_id!r})")
    return gym.spec(base_env_id(check_env_id(env_id)))


def _make_gymnasium(env_id: str, task: Any, kwargs: dict[str, Any]) -> gym.Env:
    """A Gymnasium env, a task family's inside its :class:`TaskWrapper`."""
    family = family_of(env_id)
    if env_id in LAYOUT_FAMILIES:  # the layout is the env's own task: a MazeLayout or its code
        if task is not None:
            kwargs = {**kwargs, "task": task}
    elif family is None and task is not None:
        raise ValueError(f"{env_id} is a plain Gymnasium env and takes no task parameters (got task={task!r}); "
                         f"task families: {', '.join([*FAMILIES, *LAYOUT_FAMILIES])}")
    env = gym.make(base_env_id(env_id), **kwargs)
    if family is not None:
        try:
            env = TaskWrapper(env, family, task)
        except ValueError:
            env.close()
            raise
    return env


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
        env_id: a Gymnasium id such as ``"Hopper-v5"``, a task family's (``"HalfCheetahBody-v0"``) or a LIBERO
            task's (``"libero/spatial/3"``, the extra ``libero``).
        decision_interval: primitive steps ``J`` per agent decision (>= 1).
        sequence: if True the action space is ``Box(J * act_dim)`` and the J actions run open loop;
            otherwise one action is repeated J times.
        task: a task family's params or preset name (``"bigthigh"``); without it the family's default task. For
            LIBERO, a task index of the id's suite.
            ``env.reset(options={"task": ...})`` changes it later. A plain env refuses one.
        seed: if given, the env is reset once with this seed so its RNG is fixed.
        **kwargs: passed to ``gymnasium.make`` (to :class:`~cadence.envs.libero.LiberoEnv` for LIBERO).

    Returns:
        A ``gymnasium.Env``; the outermost wrapper is a :class:`DecisionIntervalWrapper`
        whose ``info["primitive"]`` carries every primitive transition. A family's env has a
        :class:`~cadence.envs.tasks.TaskWrapper` inside it and reports ``info["task"]``.
    """
    env_id = check_env_id(env_id)
    decision_interval = check_decision_interval(decision_interval)
    if is_libero_id(env_id):  # a suite's task index is its task; kwargs go to LiberoEnv (cameras, ...)
        suite, index = parse_libero_id(env_id)
        env = LiberoEnv(suite, index if task is None else task, **kwargs)
    else:
        env = _make_gymnasium(env_id, task, kwargs)
    env = DecisionIntervalWrapper(env, decision_interval=decision_interval, sequence=sequence)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
