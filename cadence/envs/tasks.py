"""Task families: parameterised variants of MuJoCo envs, and the named task sequences continual learning runs.

A :class:`TaskFamily` names a base env, the box its parameters live in, and ``apply(model, params)``, which edits
a copy of the base ``MjModel`` (masses, friction, gravity, body sizes, ...). Families whose tasks differ in their
goal instead (a target velocity, a direction) change the reward: ``reward`` for one Gymnasium env and
``torch_reward`` for the batched backends, both given each task's params. The same family drives one Gymnasium
env (:class:`TaskWrapper`, which takes ``reset(options={"task": params or preset name})``) and the per-world
models of a BatchedEnv, so a hook or a teacher that chooses tasks works on both paths.

Registered families (:data:`FAMILIES`, ids usable with ``cadence.envs.make`` and ``BatchedEnv``):

* ``HalfCheetahBody-v0``: HyperCRL's body variants (normal, bigtorso, bigthigh, bigleg, bigfoot);
* ``HalfCheetahMotor-v0``: each leg's motors reversed or weakened (tasks that conflict, for forgetting);
* ``HopperPhysics-v0``, ``Walker2dPhysics-v0``: gravity, friction and torso mass;
* ``CheetahVel-v0``: MAML/PEARL's target forward velocity;
* ``AntDir-v0``: a target walking direction;
* ``PusherObject-v0``: the pushed object's mass and friction.

:data:`SEQUENCES` maps a sequence name (``cheetah-vel-3``, or a family's own name for its default sequence) to its
family and ordered tasks; :func:`resolve_sequence` turns one into ``(label, params)`` pairs.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:  # rewards.py builds on this module (and torch is not needed to make one env): annotations only
    import torch

    from cadence.envs.rewards import PhysicsStep, TaskPhysics

ApplyFn = Callable[[mujoco.MjModel, np.ndarray], "mujoco.MjModel | None"]
"""Edits the given model (a fresh copy of the base model) in place and returns None, or returns a new model of the
same size signature (a recompiled ``MjSpec``)."""
RewardFn = Callable[[dict[str, Any], np.ndarray, Any], float]
"""Gymnasium path: ``reward(info, params, env)`` of one primitive step, from the base env's step info and the
unwrapped env (for its weights)."""
TorchRewardFn = Callable[[Any, "TaskPhysics"], Callable[["PhysicsStep"], "torch.Tensor"]]
"""Batched path: ``torch_reward(env, base_physics)`` returns ``reward(step) -> [n]``, the params of each world
in ``step.task``; ``env`` is the unwrapped base env, ``base_physics`` its own torch functions."""


@dataclass(frozen=True, eq=False, repr=False)
class TaskFamily:
    """A base env and how task parameters change its physics or its reward."""

    name: str
    """The family's env id, e.g. ``"HalfCheetahBody-v0"``."""
    base_env: str
    """The Gymnasium id the family varies."""
    param_space: spaces.Box
    apply: ApplyFn
    sequences: dict[str, list[Any]] = field(default_factory=dict)
    """Named ordered lists of tasks (params or preset names), for continual learning."""
    presets: dict[str, Sequence[float]] = field(default_factory=dict)
    """Named tasks: ``resolve("bigthigh")`` gives their params."""
    default_sequence: str | None = None
    """The sequence the family's own name stands for; its first task is the family's default task."""
    param_names: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    """The ``MjModel`` fields ``apply`` may change (``opt.gravity``, ``stat.meanmass``, ...), constants that MuJoCo
    derives from them included; tests check that no other field changes."""
    reward: RewardFn | None = None
    """Replaces the base env's reward on the Gymnasium path (reward-target families)."""
    torch_reward: TorchRewardFn | None = None
    """Replaces the base env's torch reward on the batched path; must equal ``reward``."""
    test_tasks: np.ndarray | None = None
    """A fixed ``[k, n_params]`` set of tasks to score a curriculum on (the % of them a student masters)."""
    mastery_threshold: float | None = None
    """The episode return above which a task counts as mastered."""
    reward_range: tuple[float, float] | None = None
    """``(low, high)`` episode returns that curriculum teachers comparing returns across tasks (ALP-GMM, RIAC,
    Covar-GMM) map to [0, 1], clipping outside: about a failing student's return (a uniform-random policy's, or 0)
    and a solved task's (the base env's R_max, or the reward's upper bound). ``train.teacher_reward_range``
    overrides it; each family's comment says how its values were chosen."""

    def __repr__(self) -> str:
        return f"TaskFamily({self.name!r}, base_env={self.base_env!r}, params={self.param_names or self.param_space})"

    def check(self, params: Any) -> np.ndarray:
        """``params`` as an array of the param space's shape; raises ``ValueError`` naming what is wrong."""
        try:
            p = np.asarray(params, dtype=self.param_space.dtype).reshape(self.param_space.shape)
        except (TypeError, ValueError):
            raise ValueError(f"task parameters of {self.name} must have shape {self.param_space.shape}, "
                             f"got {params!r}") from None
        if not np.isfinite(p).all():
            raise ValueError(f"task parameters of {self.name} contain NaN or inf: {params!r}")
        if not self.param_space.contains(p):
            low, high = self.param_space.low.ravel(), self.param_space.high.ravel()
            out = np.flatnonzero((p.ravel() < low) | (p.ravel() > high))
            names = self.param_names or tuple(f"p{i}" for i in range(p.size))
            details = ", ".join(f"{names[i]}={p.flat[i]:g} not in [{low[i]:g}, {high[i]:g}]" for i in out)
            raise ValueError(f"task parameters {p.tolist()} of {self.name} are outside its range: {details}")
        return p

    def resolve(self, task: Any) -> np.ndarray:
        """The params of ``task``: a preset name or params (checked against the range)."""
        if isinstance(task, str):
            if task not in self.presets:
                raise ValueError(f"unknown task {task!r} of {self.name}"
                                 + _suggest(task, list(self.presets), "presets"))
            return self.check(self.presets[task])
        return self.check(task)

    @property
    def default_task(self) -> np.ndarray | None:
        """The first task of the default sequence (None for a family without one)."""
        if self.default_sequence is None:
            return None
        return self.resolve(self.sequences[self.default_sequence][0])

    def label(self, task: Any) -> str:
        """A short name for ``task``: its preset name where it has one, else ``name=value`` pairs."""
        if isinstance(task, str):
            return task
        params = self.check(task)
        for name, preset in self.presets.items():
            if np.array_equal(self.check(preset), params):
                return name
        names = self.param_names or tuple(f"p{i}" for i in range(params.size))
        return ",".join(f"{n}={v:g}" for n, v in zip(names, params.ravel(), strict=True))

    def sequence(self, name: str) -> list[tuple[str, np.ndarray]]:
        """The ``(label, params)`` tasks of one of this family's sequences, in order."""
        if name not in self.sequences:
            raise ValueError(f"{self.name} has no sequence {name!r}"
                             + _suggest(name, list(self.sequences), "sequences"))
        return [(self.label(task), self.resolve(task)) for task in self.sequences[name]]

    def model_for(self, base: mujoco.MjModel, params: Any) -> mujoco.MjModel:
        """A copy of ``base`` with ``params`` (or a preset's) applied."""
        model = copy.copy(base)
        built = self.apply(model, self.resolve(params))
        if built is None:
            return model
        if any(getattr(built, k) != getattr(base, k) for k in _SIZE_KEYS):
            raise ValueError(f"{self.name} built a model whose structure differs from {self.base_env}'s "
                             f"({', '.join(f'{k} {getattr(built, k)} vs {getattr(base, k)}' for k in _SIZE_KEYS)})")
        return built

    def features(self, params: Any) -> dict[str, float]:
        """What a curriculum logs about a task: its params by name."""
        p = self.check(params).ravel()
        names = self.param_names or tuple(f"param{i}" for i in range(p.size))
        return {n: float(v) for n, v in zip(names, p, strict=True)}

    def score_tests(self, agent: Any, episodes: int, seed: int) -> np.ndarray:
        """The mean return of ``agent`` (deciding every step, deterministically) on each of :attr:`test_tasks`
        (batched worlds, one row per task)."""
        from cadence.envs.batched.episodes import task_returns  # the batched layer builds on this module

        if self.test_tasks is None:
            raise ValueError(f"{self.name} has no test tasks")
        return task_returns(self.name, agent.act_sequence, list(self.test_tasks), episodes, seed=seed).mean(axis=1)


#: what a rebuilt model must keep for per-world models to share one batch (batched.physics.same_sizes checks more)
_SIZE_KEYS = ("nq", "nv", "nu", "na", "nbody", "njnt", "ngeom", "nsite")


def _suggest(name: str, valid: list[str], what: str) -> str:
    """``"; close matches: ...; <what>: ..."`` for an error message."""
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return f"{hint}; {what}: {', '.join(valid) or 'none'}"


class TaskWrapper(gym.Wrapper):
    """Sets a family's task: ``reset(options={"task": params or preset name})`` rebuilds the physics from the base
    model with the task applied; a reset without a task keeps the current one. Without ``task`` the family's
    default task is set at construction. Reward-target families' rewards are computed here from each step's info.
    ``info["task"]`` reports the current params at every reset and step."""

    accepts_tasks = True

    def __init__(self, env: gym.Env, family: TaskFamily, task: Any = None):
        super().__init__(env)
        if env.spec is not None and env.spec.id != family.base_env:
            raise ValueError(f"task family {family.name} varies {family.base_env}, not {env.spec.id}")
        self.family = family
        self._base_model = copy.copy(env.unwrapped.model)
        self.task: np.ndarray | None = None
        task = task if task is not None else family.default_task
        if task is not None:
            self.set_task(task)

    def set_task(self, task: Any) -> None:
        """Rebuild the physics for ``task`` now; it takes effect in full at the next reset."""
        params = self.family.resolve(task)
        if self.task is not None and np.array_equal(params, self.task):
            return  # same task: keep the model (a spec recompilation costs milliseconds)
        self.task = params
        _swap_model(self.env.unwrapped, self.family.model_for(self._base_model, params))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        options = dict(options or {})
        task = options.pop("task", None)
        if task is not None:
            self.set_task(task)
        obs, info = self.env.reset(seed=seed, options=options or None)
        info["task"] = self.task
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.family.reward is not None:
            reward = self.family.reward(info, self.task, self.env.unwrapped)
        info["task"] = self.task
        return obs, reward, terminated, truncated, info


def _swap_model(env: Any, model: mujoco.MjModel) -> None:
    """Make a MuJoCo env step ``model``; its MjData keeps working because the size signature is the same. A renderer
    built for the old model is closed so the next frame draws the new one."""
    env.model = model
    renderer = getattr(env, "mujoco_renderer", None)
    if renderer is None:
        return
    if renderer._viewers:  # close() keeps the closed viewers; dropping them makes the next render build new ones
        renderer.close()
        renderer._viewers, renderer.viewer = {}, None
    renderer.model = model


def accepts_tasks(env: gym.Env) -> bool:
    """Whether some wrapper in ``env``'s chain takes ``options["task"]`` at reset."""
    while True:
        if getattr(type(env), "accepts_tasks", False):
            return True
        if not isinstance(env, gym.Wrapper):
            return False
        env = env.env


# --- model edits ----------------------------------------------------------------------------------------------------
#: constants MuJoCo derives from masses at compile time (mj_setConst recomputes them after a mass edit)
MASS_CONSTANTS = ("body_subtreemass", "body_invweight0", "dof_invweight0", "dof_M0", "actuator_acc0",
                  "tendon_invweight0", "cam_poscom0", "light_poscom0", "stat.meanmass", "stat.meaninertia")
#: what a geom's size changes: its bounds, and through the masses the compiler derives from geom volumes, the above
GEOMETRY_CONSTANTS = ("geom_rbound", "geom_aabb", "bvh_aabb", "dof_length", "stat.meansize", "stat.extent",
                      "stat.center")

_ASSETS = Path(gym.envs.__file__).parent / "mujoco" / "assets"


def _set_const(model: mujoco.MjModel) -> None:
    """Recompute the constants MuJoCo derives from masses (as a recompilation would); contact softness and the
    actuators' reference accelerations depend on them."""
    mujoco.mj_setConst(model, mujoco.MjData(model))


def _scale_body_mass(model: mujoco.MjModel, body: str, scale: float) -> None:
    """A uniformly denser ``body``: mass and inertia scale together, its shape and centre of mass stay."""
    i = model.body(body).id
    model.body_mass[i] *= scale
    model.body_inertia[i] *= scale


def _compile(spec: mujoco.MjSpec) -> mujoco.MjModel:
    # Gymnasium's half_cheetah.xml sets settotalmass, which MuJoCo 3.3+ warns about at every compilation; loading
    # the env itself warns once already, so the repeat says nothing new
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*settotalmass.*")
        return spec.compile()


#: HalfCheetah's geoms per body part; "leg" is the shin, as in gym-extensions and HyperCRL
CHEETAH_PARTS: dict[str, tuple[str, ...]] = {"torso": ("torso",), "thigh": ("bthigh", "fthigh"),
                                             "leg": ("bshin", "fshin"), "foot": ("bfoot", "ffoot")}


def _scale_cheetah_parts(model: mujoco.MjModel, params: np.ndarray) -> mujoco.MjModel:
    """HalfCheetah recompiled with each part's geoms' ``size`` scaled, as gym-extensions (used by HyperCRL) edits the
    XML: a capsule's radius and half-length grow about its centre, joints stay where they are, and the torso, whose
    length comes from its ``fromto``, only thickens. The compiler then derives masses and inertias from the new
    volumes, and the XML's ``settotalmass="14"`` rescales all bodies to 14 kg: a bigger part is heavier and the
    others lighter, exactly as in the HyperCRL tasks."""
    spec = mujoco.MjSpec.from_file(str(_ASSETS / "half_cheetah.xml"))
    for scale, geoms in zip(params, CHEETAH_PARTS.values(), strict=True):
        for name in geoms:
            geom = spec.geom(name)
            geom.size = geom.size * scale
    return _compile(spec)


def _scale_physics(torso: str) -> ApplyFn:
    """``(gravity, friction, torso mass)`` scales: gravity's vector, every geom's friction coefficients (MuJoCo
    takes the larger of two geoms', so all scale for a contact to), and ``torso``'s density."""

    def apply(model: mujoco.MjModel, params: np.ndarray) -> None:
        gravity, friction, mass = params
        model.opt.gravity[:] = model.opt.gravity * gravity
        model.geom_friction[:] = model.geom_friction * friction
        _scale_body_mass(model, torso, mass)
        _set_const(model)

    return apply


#: Pusher's object slides on two joints whose armature (0.04, the XML's joint default) outweighs the object's own
#: mass (8e-6 kg) by far: the armature is what resists a push, so a heavier object scales both
PUSHER_OBJECT_JOINTS = ("obj_slidey", "obj_slidex")


def _scale_pusher_object(model: mujoco.MjModel, params: np.ndarray) -> None:
    """``(mass, friction)`` scales: the object's mass, inertia and slide-joint armature; every geom's friction (the
    Pusher has no gravity, so friction acts where the arm presses the object)."""
    mass, friction = params
    _scale_body_mass(model, "object", mass)
    for joint in PUSHER_OBJECT_JOINTS:
        model.dof_armature[model.joint(joint).dofadr[0]] *= mass
    model.geom_friction[:] = model.geom_friction * friction
    _set_const(model)


#: HalfCheetah's actuators per leg, in the XML's order (gears 120/90/60 back, 120/60/30 front)
CHEETAH_LEGS: dict[str, tuple[str, ...]] = {"back": ("bthigh", "bshin", "bfoot"), "front": ("fthigh", "fshin", "ffoot")}


def _scale_cheetah_motors(model: mujoco.MjModel, params: np.ndarray) -> None:
    """``(back, front)`` gear scales of each leg's three motors: -1 reverses them (a rewired or malfunctioning motor,
    as the "motor malfunction" half-cheetah tasks of continual model-based RL), 0.5 halves their strength."""
    for scale, actuators in zip(params, CHEETAH_LEGS.values(), strict=True):
        for name in actuators:
            model.actuator_gear[model.actuator(name).id, 0] *= scale
    _set_const(model)


def _no_change(model: mujoco.MjModel, params: np.ndarray) -> None:
    """Reward-target families keep the base physics."""


# --- rewards of reward-target families -------------------------------------------------------------------------------
def _cheetah_vel_reward(info: dict[str, Any], params: np.ndarray, env: Any) -> float:
    """MAML/PEARL's cheetah-vel: ``-|x_velocity - target| - ctrl_cost``."""
    return -abs(info["x_velocity"] - params[0]) + info["reward_ctrl"]


def _cheetah_vel_torch(env: Any, base: TaskPhysics) -> Callable[[PhysicsStep], torch.Tensor]:
    def reward(s: PhysicsStep) -> torch.Tensor:
        velocity = (s.qpos[:, 0] - s.qpos_before[:, 0]) / s.dt
        return -(velocity - s.task[:, 0]).abs() - env._ctrl_cost_weight * s.action.square().sum(-1)

    return reward


def _ant_dir_reward(info: dict[str, Any], params: np.ndarray, env: Any) -> float:
    """Progress along direction θ, ``cos θ·vx + sin θ·vy`` of the main body, + healthy - ctrl - contact costs."""
    theta = params[0]
    forward = env._forward_reward_weight * (np.cos(theta) * info["x_velocity"] + np.sin(theta) * info["y_velocity"])
    return forward + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]


def _ant_dir_torch(env: Any, base: TaskPhysics) -> Callable[[PhysicsStep], torch.Tensor]:
    # the base reward already holds the healthy reward and both costs; its forward term (x progress of the main
    # body, reads[:, 0:3]) is swapped for the progress along the task's direction
    def reward(s: PhysicsStep) -> torch.Tensor:
        dx = (s.reads[:, 0] - s.reads_before[:, 0]) / s.dt
        dy = (s.reads[:, 1] - s.reads_before[:, 1]) / s.dt
        theta = s.task[:, 0]
        return base.reward(s) + env._forward_reward_weight * ((theta.cos() - 1) * dx + theta.sin() * dy)

    return reward


# --- the registered families -----------------------------------------------------------------------------------------
def _box(low: Sequence[float], high: Sequence[float]) -> spaces.Box:
    return spaces.Box(np.asarray(low, np.float64), np.asarray(high, np.float64), dtype=np.float64)


def _body_presets() -> dict[str, tuple[float, ...]]:
    """normal, and big/small variants of each part: size x1.25 / x0.75 (gym-extensions' Big*/Small* envs)."""
    presets = {"normal": (1.0, 1.0, 1.0, 1.0)}
    for prefix, scale in (("big", 1.25), ("small", 0.75)):
        for i, part in enumerate(CHEETAH_PARTS):
            presets[prefix + part] = tuple(scale if j == i else 1.0 for j in range(4))
    return presets


#: HalfCheetah's returns: 0 to its R_max (cadence.evaluation.fas.R_MAX), the range teachers used before families had
#: their own (so saved states still load); a uniform-random policy's ~-280 (control cost) clips to 0, a failure
CHEETAH_RANGE = (0.0, 17000.0)

HALF_CHEETAH_BODY = TaskFamily(
    "HalfCheetahBody-v0", "HalfCheetah-v5", _box([0.5] * 4, [2.0] * 4), _scale_cheetah_parts,
    sequences={"halfcheetah-body-5": ["normal", "bigtorso", "bigthigh", "bigleg", "bigfoot"]},
    presets=_body_presets(), default_sequence="halfcheetah-body-5", param_names=tuple(CHEETAH_PARTS),
    changes=("geom_size", "body_mass", "body_inertia", "body_ipos", "body_iquat", *MASS_CONSTANTS,
             *GEOMETRY_CONSTANTS),
    reward_range=CHEETAH_RANGE,
)

#: Tasks that conflict: the same (s, a) moves a reversed leg the opposite way, so a model that learns one task must
#: unlearn the other (on HalfCheetahBody's x1.25 parts a single model barely forgets: the tasks are too alike)
HALF_CHEETAH_MOTOR = TaskFamily(
    "HalfCheetahMotor-v0", "HalfCheetah-v5", _box([-1.0, -1.0], [1.0, 1.0]), _scale_cheetah_motors,
    sequences={"halfcheetah-motor-3": ["normal", "reversed", "reversed-back"],
               "halfcheetah-motor-4": ["normal", "reversed-back", "reversed-front", "reversed"]},
    presets={"normal": (1.0, 1.0), "reversed-back": (-1.0, 1.0), "reversed-front": (1.0, -1.0),
             "reversed": (-1.0, -1.0), "weak-back": (0.5, 1.0), "weak-front": (1.0, 0.5)},
    default_sequence="halfcheetah-motor-3", param_names=tuple(CHEETAH_LEGS),
    changes=("actuator_gear", *MASS_CONSTANTS), reward_range=CHEETAH_RANGE,
)

#: gravity 0.5-1.5 x, friction 0.25-2 x, torso mass 0.5-2 x: from a moon-like hop to a heavy, slippery one, all
#: still standing at reset
PHYSICS_RANGE = _box([0.5, 0.25, 0.5], [1.5, 2.0, 2.0])
PHYSICS_PRESETS: dict[str, tuple[float, float, float]] = {
    "normal": (1.0, 1.0, 1.0), "low-gravity": (0.6, 1.0, 1.0), "high-gravity": (1.4, 1.0, 1.0),
    "slippery": (1.0, 0.3, 1.0), "grippy": (1.0, 2.0, 1.0), "light-torso": (1.0, 1.0, 0.6),
    "heavy-torso": (1.0, 1.0, 1.75),
}
#: 27 tasks on a 3 x 3 x 3 grid inside the range, for scoring curricula
PHYSICS_TEST_TASKS = np.array(list(itertools.product((0.6, 1.0, 1.4), (0.4, 1.0, 1.6), (0.6, 1.0, 1.6))))
PHYSICS_CHANGES = ("opt.gravity", "geom_friction", "body_mass", "body_inertia", *MASS_CONSTANTS)


def _physics_family(name: str, base: str, prefix: str, mastery: float, r_max: float) -> TaskFamily:
    three = ["normal", "low-gravity", "heavy-torso"]
    return TaskFamily(
        name, base, PHYSICS_RANGE, _scale_physics("torso"),
        sequences={f"{prefix}-3": three, f"{prefix}-5": [*three, "slippery", "high-gravity"]},
        presets=dict(PHYSICS_PRESETS), default_sequence=f"{prefix}-3",
        param_names=("gravity", "friction", "torso_mass"), changes=PHYSICS_CHANGES,
        test_tasks=PHYSICS_TEST_TASKS.copy(), mastery_threshold=mastery, reward_range=(0.0, r_max),
    )


# Mastery needs forward motion: staying upright alone earns 1000 (healthy reward 1 x 1000 steps). Reward range: 0 (a
# hopper or walker that falls at once scores little more than its few steps' healthy reward) to the base env's R_max
# (cadence.evaluation.fas.R_MAX): the range teachers used before families had their own, so saved states still load.
HOPPER_PHYSICS = _physics_family("HopperPhysics-v0", "Hopper-v5", "hopper-physics", 2000.0, 3600.0)
WALKER2D_PHYSICS = _physics_family("Walker2dPhysics-v0", "Walker2d-v5", "walker2d-physics", 2500.0, 5000.0)

# Reward range over the 1000-step episode: -3000, what standing still scores at the fastest target (3 m/s; a
# uniform-random policy measured -760 at 0 m/s to -3290 at 3 m/s), to 0, the reward's bound (exact tracking, no
# control cost).
CHEETAH_VEL = TaskFamily(
    "CheetahVel-v0", "HalfCheetah-v5", _box([0.0], [3.0]), _no_change,
    sequences={"cheetah-vel-3": [[0.5], [1.5], [2.5]], "cheetah-vel-5": [[0.5], [1.0], [1.5], [2.0], [2.5]]},
    default_sequence="cheetah-vel-3", param_names=("velocity",),
    reward=_cheetah_vel_reward, torch_reward=_cheetah_vel_torch, test_tasks=np.linspace(0.0, 3.0, 13)[:, None],
    reward_range=(-3000.0, 0.0),
)

# Reward range: 0 to Ant's R_max (6500, cadence.evaluation.fas.R_MAX): walking along θ is the forward task turned,
# on the same scale. A uniform-random policy falls within 20-320 steps at -114 to -10 (measured, θ = 0, π, 2π) and
# clips to 0 with the other failures; standing still earns the healthy reward, about 1000.
ANT_DIR = TaskFamily(
    "AntDir-v0", "Ant-v5", _box([0.0], [2 * np.pi]), _no_change,
    sequences={"ant-dir-4": ["forward", "left", "backward", "right"], "ant-dir-2": ["forward", "backward"]},
    presets={"forward": (0.0,), "left": (np.pi / 2,), "backward": (np.pi,), "right": (3 * np.pi / 2,)},
    default_sequence="ant-dir-4", param_names=("direction",),
    reward=_ant_dir_reward, torch_reward=_ant_dir_torch, test_tasks=(np.arange(8) * np.pi / 4)[:, None],
    reward_range=(0.0, 6500.0),
)

# Reward range over the 100-step episode: -160, about a uniform-random policy's return (measured -140 to -162 at the
# box's corners and centre; a motionless arm scores -50 to -69), to 0, the reward's bound (object on the goal,
# fingertip on the object, no control cost).
PUSHER_OBJECT = TaskFamily(
    "PusherObject-v0", "Pusher-v5", _box([0.25, 0.25], [4.0, 2.0]), _scale_pusher_object,
    sequences={"pusher-object-3": ["normal", "heavy", "slippery"],
               "pusher-object-5": ["normal", "heavy", "slippery", "light", "heavy-slippery"]},
    presets={"normal": (1.0, 1.0), "heavy": (3.0, 1.0), "light": (0.4, 1.0), "slippery": (1.0, 0.3),
             "heavy-slippery": (3.0, 0.3)},
    default_sequence="pusher-object-3", param_names=("mass", "friction"),
    changes=("body_mass", "body_inertia", "dof_armature", "geom_friction", *MASS_CONSTANTS),
    reward_range=(-160.0, 0.0),
)

FAMILIES: dict[str, TaskFamily] = {f.name: f for f in (HALF_CHEETAH_BODY, HALF_CHEETAH_MOTOR, HOPPER_PHYSICS,
                                                       WALKER2D_PHYSICS, CHEETAH_VEL, ANT_DIR, PUSHER_OBJECT)}


def family(name: str) -> TaskFamily:
    """The registered family ``name`` (``"HalfCheetahBody-v0"``, or without the version); raises ``ValueError``
    listing the valid names."""
    aliases = {**{f.name.split("-v")[0]: f for f in FAMILIES.values()}, **FAMILIES}
    if name not in aliases:
        raise ValueError(f"unknown task family {name!r}" + _suggest(name, list(FAMILIES), "families"))
    return aliases[name]


def family_of(env_id: str) -> TaskFamily | None:
    """The family whose id is ``env_id``, or None for a plain env id."""
    return FAMILIES.get(env_id)


def base_env_id(env_id: str) -> str:
    """The Gymnasium id behind ``env_id``: a family's base env, or ``env_id`` itself. Tables keyed by env id
    (torch physics, terminations, R_max, specs) are looked up with it."""
    found = family_of(env_id)
    return found.base_env if found is not None else env_id


def _sequence_table() -> dict[str, tuple[str, list[Any]]]:
    """Every family's sequences by name, and each family's name (with and without version) for its default."""
    table: dict[str, tuple[str, list[Any]]] = {}
    for fam in FAMILIES.values():
        entries = dict(fam.sequences)
        if fam.default_sequence is not None:
            entries[fam.name] = entries[fam.name.split("-v")[0]] = fam.sequences[fam.default_sequence]
        for name, tasks in entries.items():
            if name in table:
                raise ValueError(f"task sequence {name!r} is defined twice ({table[name][0]} and {fam.name})")
            table[name] = (fam.name, list(tasks))
    return table


#: sequence name -> (family id, ordered tasks: preset names or params)
SEQUENCES: dict[str, tuple[str, list[Any]]] = _sequence_table()


def resolve_sequence(name: str) -> tuple[TaskFamily, list[tuple[str, np.ndarray]]]:
    """The family of sequence ``name`` and its ``(label, params)`` tasks in order; raises ``ValueError`` listing the
    valid names."""
    if name not in SEQUENCES:
        raise ValueError(f"unknown task sequence {name!r}" + _suggest(name, list(SEQUENCES), "sequences"))
    family_id, tasks = SEQUENCES[name]
    fam = FAMILIES[family_id]
    return fam, [(fam.label(task), fam.resolve(task)) for task in tasks]
