"""MuJoCo state handling shared by the physics backends."""

from __future__ import annotations

import mujoco
import numpy as np

from cadence.envs.rewards import TaskPhysics

#: the physics state a backend carries between steps; the solver's warm start (mjSTATE_WARMSTART) is not
#: part of it, because mujoco.rollout takes it as a separate input and does not return it
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
              warmstart: np.ndarray, action: np.ndarray, nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``nstep`` physics steps from ``state`` in Python (for the substep whose MjData a task reads).

    Returns the new state, the task's data reads and the solver warm start for the next step.
    """
    mujoco.mj_setState(model, data, state, STATE_SPEC)
    data.qacc_warmstart[:] = warmstart  # this world's own, not whatever the shared MjData last held
    data.ctrl[:] = action
    mujoco.mj_step(model, data, nstep)
    return get_state(model, data), read_data(physics, model, data), data.qacc_warmstart.copy()


def same_sizes(a: mujoco.MjModel, b: mujoco.MjModel) -> bool:
    """Whether two models can share one batch (mujoco.rollout needs one size signature)."""
    keys = ("nq", "nv", "nu", "na", "nbody", "njnt", "ngeom", "nsensordata", "nmocap", "nuserdata")
    return all(getattr(a, k) == getattr(b, k) for k in keys) and (
        mujoco.mj_stateSize(a, STATE_SPEC) == mujoco.mj_stateSize(b, STATE_SPEC))
