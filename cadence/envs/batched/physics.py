"""MuJoCo state handling shared by the physics backends."""

from __future__ import annotations

import mujoco
import numpy as np

from cadence.envs.rewards import TaskPhysics

#: the physics state a backend carries between steps: everything mj_step reads (incl. solver warm start)
STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


def get_state(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    state = np.empty(mujoco.mj_stateSize(model, STATE_SPEC))
    mujoco.mj_getState(model, data, state, STATE_SPEC)
    return state


def read_data(physics: TaskPhysics, model: mujoco.MjModel, data: mujoco.MjData,
              after_step: bool = True) -> np.ndarray:
    """The task's :class:`~cadence.envs.rewards.DataRead` values from ``data``, concatenated.

    After a step Gymnasium calls ``mj_rnePostConstraint`` (filling ``cfrc_ext``); after a reset it does not.
    """
    if after_step and any(r.field == "cfrc_ext" for r in physics.reads):
        mujoco.mj_rnePostConstraint(model, data)
    if not physics.reads:
        return np.zeros(0)
    return np.concatenate([np.atleast_1d(r.read(model, data)) for r in physics.reads])


def step_data(physics: TaskPhysics, model: mujoco.MjModel, data: mujoco.MjData, state: np.ndarray,
              action: np.ndarray, nstep: int) -> tuple[np.ndarray, np.ndarray]:
    """``nstep`` physics steps from ``state`` in Python (for the substep whose MjData a task reads)."""
    mujoco.mj_setState(model, data, state, STATE_SPEC)
    data.ctrl[:] = action
    mujoco.mj_step(model, data, nstep)
    return get_state(model, data), read_data(physics, model, data)
