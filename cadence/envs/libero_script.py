"""Scripted pick-and-place expert for LIBERO-Object and LIBERO-Spatial, driven by privileged simulator state.

The expert reads the task's single ``On``/``In`` goal from the BDDL problem (``raw_env.env.parsed_problem``), the
poses and collision boxes of every object and fixture from the MuJoCo model, and drives the Panda's OSC_POSE
controller (delta actions: ±1 maps to ±0.05 m and ±0.5 rad per step) with a clipped proportional controller through
four phases: approach, grasp, lift, place. Grasps come from geometry:

* objects narrow enough for the open gripper (boxes, cans, bottles, cartons) are grasped *across* their narrowest
  horizontal section, with the wrist yawed to it, as deep as the palm allows and on faces that are vertical under the
  pads (so a carton is held by its body, not its gable);
* objects too wide for it (the LIBERO bowls, 10 cm) get a *rim pinch*: the gripper pre-shaped half-closed, one finger
  inside and one outside a wall segment near the top, closing along the wall's normal.

Candidates are ranked by clearance of the fingers and the palm column from every other collision geom, by the arm's
reach, and for rim pinches by how well the closing axis lines up with the carry (a bowl pinched at the rim swings
out when accelerated across the closing axis); ``grasp=1, 2`` pick distinct alternatives for a retry. Within an
episode the script also re-plans when the object moves before it is grasped (Spatial task 5's bowl is still falling
after the 10 settle steps), slides an object out from under an overhang before lifting (the open drawer under the
cabinet top, Spatial task 4), lets a pinched bowl settle in the fingers before carrying it, and re-grasps with the
next candidate if the object slips or drops. ``rng`` jitters the waypoints and adds small action noise on free-space
moves so that demonstrations differ. ``libero``/robosuite are imported lazily: this module imports without them.

Typical use (the caller resets, sets the init state and settles; ``reset_control_env`` does all three, with the
fixtures placed from ``seed``, so the same seed gives the same scene; 280 is OpenVLA's LIBERO-Object cap)::

    raw_env, init_states = make_raw_env("libero_object", 3)
    reset_control_env(raw_env, init_states[0], seed=0)
    result = run_scripted_episode(raw_env, np.random.default_rng(0), grasp=0, max_steps=280)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cadence.envs.libero import NOOP_ACTION, SETTLE_STEPS, reset_control_env

# OSC_POSE delta scaling of robosuite's default controller config (output_max).
POS_SCALE = 0.05
ROT_SCALE = 0.5
GRIP_SITE = "gripper0_grip_site"

# Panda gripper, measured in the grip-site frame (fingers close along the site's x axis).
PAD_GAP = 0.075  # inner gap between the finger pads when fully open
FINGER_OFFSET = 0.045  # finger centre from the grip site, along the closing axis, when open
GRIP_STEP = 0.25  # the gripper command integrates 0.01 per substep x 25 substeps per step towards sign(action)
FINGER_HALF = 0.013  # finger half-size in the horizontal plane
FINGER_BELOW = 0.013  # fingertips below the grip site
FINGER_ABOVE = 0.05  # finger top above the grip site
HAND_ABOVE = 0.024  # palm bottom above the grip site
HAND_HALF_LEN = 0.105  # palm half-length along the closing axis
HAND_HALF_WID = 0.035  # palm half-width across it
HAND_TOP = 0.25  # height of the column above the grip site swept by the hand while it descends
WRIST_UP, WRIST_BACK = 0.2, 0.09  # wrist centre (link 6) relative to the grip site, gripper pointing down
ARM_REACH = 0.70  # max shoulder (link 2) to wrist distance of the Panda; beyond ~0.66 the pose gets stiff
GRASP_DEPTH = 0.028  # deepest grasp below an object top (the palm may just touch it)

# Rim pinch (bowls).
RIM_LEVEL = 0.0  # gripper command pre-shaped half-closed (-1 open .. +1 closed): about 3.7 cm between the pads
RIM_FINGER_OFFSET = 0.027  # finger centre from the grip site at that level
RIM_DEPTH = 0.012  # grip site below the top edge of the wall (the pads reach 8 mm up and down)
RIM_ALIGN = 0.06  # score bonus for a closing axis along the carry direction (see grasp_candidates)

_OPEN, _CLOSE = -1.0, 1.0


# ----------------------------------------------------------------------------------------------------------------
# Environment helpers
# ----------------------------------------------------------------------------------------------------------------


def make_raw_env(suite: str, task_index: int, horizon: int = 1000) -> tuple[Any, np.ndarray]:
    """The package's ``ControlEnv`` for ``suite``/``task_index``, state only, with its init states (the adapter's
    :func:`~cadence.envs.libero.make_control_env`)."""
    from cadence.envs.libero import libero_init_states, make_control_env

    return make_control_env(suite, task_index, horizon=horizon), libero_init_states(suite, task_index)


def settle(raw_env: Any, steps: int = SETTLE_STEPS) -> dict:
    """Step ``steps`` no-ops with the gripper open (the init states are unsettled); return the last obs dict."""
    obs = None
    for _ in range(steps):
        obs, _, _, _ = raw_env.step(NOOP_ACTION)
    if obs is None:  # steps == 0: read the current observation without stepping
        obs = raw_env.env._get_observations()
    return obs


def pick_place_goal(raw_env: Any) -> tuple[str, str]:
    """Return ``(object to pick, target object or region)`` of a single ``On``/``In`` goal; ValueError otherwise.

    The target is an object name (``plate_1``) or a region site name (``basket_1_contain_region``), as in the BDDL.
    """
    goal = raw_env.env.parsed_problem["goal_state"]
    preds = [tuple(goal)] if goal and isinstance(goal[0], str) else [tuple(p) for p in goal]
    if len(preds) != 1 or len(preds[0]) != 3 or str(preds[0][0]).lower() not in ("on", "in"):
        raise ValueError(f"not a single pick-and-place goal: {goal!r}")
    _, obj, target = preds[0]
    if obj not in raw_env.env.objects_dict:
        raise ValueError(f"goal {goal!r}: {obj!r} is not a movable object")
    return str(obj), str(target)


# ----------------------------------------------------------------------------------------------------------------
# Geometry: every collision geom as an oriented box (MuJoCo's per-geom AABB in the geom frame, so meshes work too)
# ----------------------------------------------------------------------------------------------------------------

_SIGNS = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=float)


@dataclass
class _Geoms:
    owner: np.ndarray  # (G,) object/fixture name, "" for the static world (floor, table)
    corners: np.ndarray  # (G, 8, 3) world corners
    axes: np.ndarray  # (G, 3, 3) world box axes as columns
    half: np.ndarray  # (G, 3) half extents

    def of(self, name: str) -> _Geoms:
        return self.where(self.owner == name)

    def where(self, mask: np.ndarray) -> _Geoms:
        return _Geoms(self.owner[mask], self.corners[mask], self.axes[mask], self.half[mask])

    @property
    def zmin(self) -> np.ndarray:
        return self.corners[..., 2].min(axis=1)

    @property
    def zmax(self) -> np.ndarray:
        return self.corners[..., 2].max(axis=1)


def _scene_geoms(raw_env: Any) -> _Geoms:
    """Collision geoms of everything except the robot, labelled with the object or fixture that owns them."""
    env = raw_env.env
    m, d = env.sim.model._model, env.sim.data._data
    roots = {}
    for name, obj in list(env.objects_dict.items()) + list(env.fixtures_dict.items()):
        roots[env.sim.model.body_name2id(obj.root_body)] = name
    # top-level ancestor (child of the world body) of every body
    top = np.arange(m.nbody)
    for b in range(m.nbody):
        while top[b] != 0 and m.body_parentid[top[b]] != 0:
            top[b] = m.body_parentid[top[b]]
    owners, keep = [], []
    for g in range(m.ngeom):
        if not (m.geom_contype[g] or m.geom_conaffinity[g]) or m.geom_type[g] == 0:  # visual-only or plane
            continue
        t = top[m.geom_bodyid[g]]
        tname = env.sim.model.body_id2name(int(t)) if t else ""
        if tname.startswith(("robot", "mount", "gripper")):
            continue
        owners.append(roots.get(int(t), ""))
        keep.append(g)
    keep = np.array(keep, dtype=int)
    rot = d.geom_xmat[keep].reshape(-1, 3, 3)
    centre = m.geom_aabb[keep, :3]
    half = m.geom_aabb[keep, 3:]
    local = centre[:, None, :] + _SIGNS[None] * half[:, None, :]
    corners = d.geom_xpos[keep][:, None, :] + np.einsum("gij,gkj->gki", rot, local)
    return _Geoms(np.array(owners, dtype=object), corners, rot, half)


def _rect_separation(geoms: _Geoms, centre: np.ndarray, axis: np.ndarray, half_a: float, half_b: float) -> np.ndarray:
    """Separating-axis gap (m, negative = overlap) between a horizontal rectangle and each geom's footprint."""
    if len(geoms.owner) == 0:
        return np.zeros(0)
    perp = np.array([-axis[1], axis[0]])
    # candidate axes: the rectangle's two, plus the normals of each box's projected edges
    edges = geoms.axes[:, :2, :].transpose(0, 2, 1)  # (G, 3, 2)
    normals = np.stack([-edges[..., 1], edges[..., 0]], axis=-1)
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    normals = np.where(norm > 1e-6, normals / np.maximum(norm, 1e-9), axis[None, None, :])
    axes = np.concatenate([np.broadcast_to(np.stack([axis, perp]), (len(normals), 2, 2)), normals], axis=1)
    pts = geoms.corners[..., :2]  # (G, 8, 2)
    proj = np.einsum("gpk,gak->gap", pts, axes)  # (G, A, 8)
    lo, hi = proj.min(-1), proj.max(-1)
    c = axes @ centre[:2]
    r = half_a * np.abs(axes @ axis) + half_b * np.abs(axes @ perp)
    gap = np.maximum(lo - (c + r), (c - r) - hi)  # (G, A)
    return gap.max(axis=1)


@dataclass(eq=False)
class Grasp:
    """One grasp: grip-site position, closing axis (horizontal unit vector) and kind."""

    pos: np.ndarray
    axis: np.ndarray
    kind: str  # "across" (narrow axis) or "rim" (bowl rim pinch)
    width: float  # object width along the closing axis
    clearance: float  # free distance (m) of fingers and palm to the nearest other geom
    score: float = 0.0


def _clearance(others: _Geoms, pos: np.ndarray, axis: np.ndarray, offset: float = FINGER_OFFSET) -> float:
    """Free distance of the fingers (``offset`` apart from the centre) and the palm at ``pos`` to the other geoms."""
    z = pos[2]
    gaps = [np.inf]
    fingers = others.where((others.zmax > z - FINGER_BELOW) & (others.zmin < z + FINGER_ABOVE))
    for s in (-1.0, 1.0):
        c = pos[:2] + s * offset * axis
        gaps.extend(_rect_separation(fingers, c, axis, FINGER_HALF, FINGER_HALF))
    palm = others.where((others.zmax > z + HAND_ABOVE) & (others.zmin < z + HAND_TOP))
    gaps.extend(_rect_separation(palm, pos[:2], axis, HAND_HALF_LEN, HAND_HALF_WID))
    return float(min(gaps))


def _width(points: np.ndarray, axis: np.ndarray) -> tuple[float, float]:
    """Extent of ``points`` (..., >=2) along the horizontal ``axis``: (width, midpoint coordinate)."""
    p = points[..., :2].reshape(-1, 2) @ axis
    return float(p.max() - p.min()), float(0.5 * (p.max() + p.min()))


def _unit(theta: float) -> np.ndarray:
    return np.array([np.cos(theta), np.sin(theta)])


_EDGES = np.array([(i, j) for i in range(8) for j in range(i + 1, 8) if np.abs(_SIGNS[i] - _SIGNS[j]).sum() == 2])


def _section(corners: np.ndarray, z: float) -> np.ndarray:
    """Horizontal cross-section of boxes at height ``z``: the points (N, 2) where their edges cross the plane."""
    a, b = corners[:, _EDGES[:, 0]], corners[:, _EDGES[:, 1]]  # (G, 12, 3)
    za, zb = a[..., 2], b[..., 2]
    cross = (za - z) * (zb - z) <= 0
    t = np.where(cross, (z - za) / np.where(np.abs(zb - za) > 1e-9, zb - za, 1.0), 0.0)
    pts = a + t[..., None] * (b - a)
    return pts[cross][:, :2]


def _across_candidates(target: _Geoms, others: _Geoms) -> list[Grasp]:
    """Grasps across the object, as deep as the palm allows, on faces that are vertical over the finger pads."""
    top, bottom = float(target.zmax.max()), float(target.zmin.min())
    z_lo = max(bottom + FINGER_BELOW + 0.004, top - GRASP_DEPTH)
    z_hi = max(z_lo, top - 0.01)
    out = []
    for z in np.linspace(z_lo, z_hi, 3):
        # cross-sections over the span of the finger pads (clipped to the object)
        spans = (max(z - 0.007, bottom + 0.002), z, min(z + 0.007, top - 0.002))
        planes = [_section(target.corners, zz) for zz in spans]
        if any(len(p) < 3 for p in planes):
            continue
        for theta in np.deg2rad(np.arange(0.0, 180.0, 7.5)):
            a = _unit(theta)
            b = np.array([-a[1], a[0]])
            widths = [_width(p, a)[0] for p in planes]
            w, taper = max(widths), max(widths) - min(widths)
            if w > PAD_GAP - 0.008:
                continue
            mid_a = _width(planes[int(np.argmax(widths))], a)[1]
            length, mid_b = _width(planes[1], b)
            # on an elongated box the fingers may also close off-centre along its length: distinct alternatives
            shift = min(0.015, length / 2 - 0.02) if length > 1.5 * w else 0.0
            for off in (0.0, -shift, shift) if shift > 0.005 else (0.0,):
                pos = np.array([*(mid_a * a + (mid_b + off) * b), z])
                g = Grasp(pos, a, "across", w, _clearance(others, pos, a))
                # narrow axis, vertical faces under the pads, deep, centred; clearance counts up to 3 cm
                g.score = min(g.clearance, 0.03) - 1.5 * w - 2.0 * taper - 0.3 * (z - z_lo) - 1.0 * abs(off)
                out.append(g)
    return out


def _rim_candidates(target: _Geoms, others: _Geoms) -> list[Grasp]:
    """Rim pinches: one finger inside, one outside each wall segment near the top, closing along its normal."""
    top = float(target.zmax.max())
    out = []
    for i in np.flatnonzero(target.zmax > top - 0.015):
        k = int(np.argmin(target.half[i]))
        n = target.axes[i][:2, k]
        if np.linalg.norm(n) < 0.5:  # wall lies too flat to pinch
            continue
        a = n / np.linalg.norm(n)
        c = target.corners[i]
        upper = c[np.argsort(c[:, 2])[-4:]]  # the top edge of the wall segment
        pos = np.array([*upper[:, :2].mean(0), upper[:, 2].mean() - RIM_DEPTH])
        # the gripper is pre-shaped half-closed: a thin wall needs no more, and the outer finger then fits between
        # the rim and a close neighbour (the drawer walls of Spatial task 4)
        g = Grasp(pos, a, "rim", float(2 * target.half[i][k]), _clearance(others, pos, a, RIM_FINGER_OFFSET))
        g.score = min(g.clearance, 0.04) + 0.3 * (pos[2] - top)  # on a tilted bowl prefer the high side
        out.append(g)
    return out


def grasp_candidates(
    raw_env: Any, obj: str, geoms: _Geoms | None = None, carry_to: np.ndarray | None = None
) -> list[Grasp]:
    """All grasps of ``obj``, best first, deduplicated so that consecutive entries are distinct alternatives.

    ``carry_to`` (xy of the place target) favours rim pinches whose closing axis points along the carry: a bowl
    pinched at the rim swings about the closing axis when accelerated across it, and can fall out.
    """
    geoms = _scene_geoms(raw_env) if geoms is None else geoms
    target, others = geoms.of(obj), geoms.where(geoms.owner != obj)
    cands = _across_candidates(target, others)
    if not cands or max(g.clearance for g in cands) < -0.005:
        cands += _rim_candidates(target, others)
    if not cands:
        raise ValueError(f"no grasp found for {obj!r}")
    shoulder = _shoulder(raw_env)
    for g in cands:  # grasps at the edge of the arm's reach (far side of a high bowl) are slow or unreachable
        g.score -= 2.0 * max(0.0, _wrist_reach(g.pos + np.array([0, 0, 0.06]), shoulder) - 0.64)
    if carry_to is not None:
        d = np.asarray(carry_to)[:2] - target.corners[..., :2].reshape(-1, 2).mean(0)
        d = d / max(float(np.linalg.norm(d)), 1e-9)
        for g in cands:
            if g.kind == "rim":
                g.score += RIM_ALIGN * abs(float(g.axis @ d))
    cands.sort(key=lambda g: -g.score)
    centre = target.corners[..., :2].reshape(-1, 2).mean(0)
    picked: list[Grasp] = []
    for g in cands:
        if all(_distinct(g, p, centre) for p in picked):
            picked.append(g)
    return picked + [g for g in cands if not any(g is p for p in picked)]


def _shoulder(raw_env: Any) -> np.ndarray:
    sim = raw_env.env.sim
    return np.array(sim.data.body_xpos[sim.model.body_name2id("robot0_link2")])


def _wrist_reach(grip: np.ndarray, shoulder: np.ndarray) -> float:
    """Shoulder-to-wrist distance when the grip site is at ``grip`` with the gripper pointing down."""
    d = grip[:2] - shoulder[:2]
    back = WRIST_BACK * d / max(float(np.linalg.norm(d)), 1e-9)
    return float(np.linalg.norm(np.array([*(d - back), grip[2] + WRIST_UP - shoulder[2]])))


def _distinct(g: Grasp, h: Grasp, centre: np.ndarray) -> bool:
    """Alternatives differ in where (rim: 50° around the bowl; across: 8 mm) or how (across: 20° of closing axis)."""
    if g.kind == "rim":
        u, v = g.pos[:2] - centre, h.pos[:2] - centre
        cos = u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-9)
        return bool(cos < np.cos(np.deg2rad(50)))
    return bool(abs(g.axis @ h.axis) < np.cos(np.deg2rad(20)) or np.linalg.norm(g.pos - h.pos) > 0.008)


# ----------------------------------------------------------------------------------------------------------------
# Control
# ----------------------------------------------------------------------------------------------------------------


def _down_rotation(axis: np.ndarray) -> np.ndarray:
    """Grip-site frame (columns) pointing straight down, fingers closing along the horizontal ``axis``.

    (Tilting the closing axis square to a flared bowl wall was tried: the inner finger then leans over the rim.)
    """
    c, s = axis
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def _rot_to_axis_angle(r: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    if np.pi - angle < 1e-3:  # near pi: axis from the diagonal
        ax = np.sqrt(np.maximum((np.diag(r) + 1) / 2, 0))
        k = int(np.argmax(ax))
        ax = r[:, k] + (np.eye(3)[:, k])
        return angle * ax / np.linalg.norm(ax)
    ax = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2 * np.sin(angle))
    return angle * ax


class ScriptedPickPlace:
    """Approach, grasp, lift, place: a state machine over privileged poses of one LIBERO pick-and-place task.

    ``raw_env`` is the package's ``ControlEnv``, already reset, set to an init state and settled. ``grasp`` indexes
    :func:`grasp_candidates` (0 = best by geometry and clearance; 1, 2 = distinct alternatives). If a grasp slips
    (the object does not rise with the hand, or drops while carried) the script opens, backs off and re-plans with
    the next candidate from the current scene, within the same episode.
    """

    # speed limits as fractions of the full ±1 action
    _SPEED = {"approach": 1.0, "descend": 0.35, "lower": 0.5}
    _LIFT_SPEED = 0.5
    _CARRY_SPEED = 1.0
    _GAIN = 1.5  # proportional gain: action = gain * error / scale (OSC moves ~26% of the commanded delta a step)
    _ACCEL = 0.15  # max change of the translation action per step while holding the object (smooth, no jerks)

    def __init__(self, raw_env: Any, rng: np.random.Generator, grasp: int = 0) -> None:
        self.env = raw_env
        self.rng = rng
        self.obj, self.target = pick_place_goal(raw_env)
        sim = raw_env.env.sim
        self._site = sim.model.site_name2id(GRIP_SITE)
        self._obj_body = raw_env.env.obj_body_id[self.obj]
        self._geoms = _scene_geoms(raw_env)
        self._place = self._place_spec(self._geoms)
        # small random perturbations so that demonstrations differ; they stay well inside the success tolerances
        self._noise = 0.02
        self._jitter = {
            "pre": rng.uniform(0.04, 0.07),
            "grasp": np.array([*rng.normal(0, 0.002, 2), rng.uniform(-0.003, 0.003)]),
            "carry": rng.uniform(0.03, 0.06),
            "place": rng.normal(0, 0.004, 2),
        }
        self._grasp_index = grasp
        self._retries = 0
        self._replans = 0
        self._last_v = np.zeros(3)
        self._done = False
        self._plan(grasp)

    # ---- planning ---------------------------------------------------------------------------------------------

    def _plan(self, index: int) -> None:
        """Pick grasp ``index`` from the current scene and set up the approach."""
        self.candidates = grasp_candidates(self.env, self.obj, self._geoms, carry_to=self._place["xy"])
        self.grasp = self.candidates[min(index, len(self.candidates) - 1)]
        # the closing axis sign is free: take the one that needs the least wrist yaw from the current pose
        cur = self.env.env.sim.data.site_xmat[self._site].reshape(3, 3)[:2, 0]
        if self.grasp.axis @ cur < 0:
            self.grasp.axis = -self.grasp.axis
        self._rot = _down_rotation(self.grasp.axis)
        self.grasp_pos = self.grasp.pos + self._jitter["grasp"]
        self._waypoints = self._approach_waypoints()
        self._planned_pose = self._obj_pose()
        self._prev_q: np.ndarray | None = None
        self._hang = 0.0  # grip-site height above the carried object's bottom
        self._squared = False
        self._set("approach")

    def _eef(self) -> np.ndarray:
        return np.array(self.env.env.sim.data.site_xpos[self._site])

    def _obj_pos(self) -> np.ndarray:
        return np.array(self.env.env.sim.data.body_xpos[self._obj_body])

    def _obj_pose(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.env.env.sim.data
        return np.array(d.body_xpos[self._obj_body]), np.array(d.body_xmat[self._obj_body]).reshape(3, 3)

    def _obj_moved(self, tol: float) -> bool:
        """The object moved more than ``tol`` m (or 3 deg) since the grasp was planned."""
        (p0, r0), (p, r) = self._planned_pose, self._obj_pose()
        angle = np.arccos(np.clip((np.trace(r0.T @ r) - 1) / 2, -1.0, 1.0))
        return bool(np.linalg.norm(p - p0) > tol or angle > np.deg2rad(3))

    def _obj_bottom(self) -> float:
        return float(_scene_geoms(self.env).of(self.obj).zmin.min())

    def _approach_waypoints(self) -> list[tuple[np.ndarray, str, float]]:
        """Rise if needed, travel above the grasp high enough to clear everything, descend straight down."""
        eef, g = self._eef(), self.grasp_pos
        pre = g + np.array([0, 0, self._jitter["pre"]])
        z_travel = max(_corridor_top(eef, g, self._geoms, half=0.06) + FINGER_BELOW + 0.04, pre[2])
        # but not above what the arm reaches over the grasp (the descent column is checked by the grasp clearance)
        shoulder = _shoulder(self.env)
        while z_travel > pre[2] and _wrist_reach(np.array([g[0], g[1], z_travel]), shoulder) > ARM_REACH - 0.02:
            z_travel -= 0.01
        wps = []
        if eef[2] < z_travel - 0.01:
            wps.append((np.array([eef[0], eef[1], z_travel]), "approach", 0.02))
        wps.append((np.array([g[0], g[1], z_travel]), "approach", 0.015))
        if z_travel > pre[2] + 0.01:
            wps.append((pre, "approach", 0.01))
        wps.append((g, "descend", 0.004))
        return wps

    def _place_spec(self, geoms: _Geoms) -> dict:
        """Where to put the object: xy centre, support height, rim height of the receptacle and its owner."""
        env = self.env.env
        if self.target in env.objects_dict:  # On(obj, other object): centre of the other object's top
            tg = geoms.of(self.target)
            centre = np.array(env.sim.data.body_xpos[env.obj_body_id[self.target]])
            inner = np.linalg.norm(tg.corners[..., :2].mean(1) - centre[:2], axis=1) < 0.03
            support = float(tg.zmax[inner].max() if inner.any() else tg.zmax.max())
            return {"xy": centre[:2], "support": support, "rim": float(tg.zmax.max()), "owner": self.target}
        if self.target in env.object_sites_dict:  # In(obj, region site): the site's box, inside its parent object
            site = env.object_sites_dict[self.target]
            pos = np.array(env.sim.data.get_site_xpos(self.target))
            mat = np.array(env.sim.data.get_site_xmat(self.target))
            size = np.abs(mat @ np.asarray(site.size, dtype=float))  # as the package's in_box() reads it
            parent = getattr(site, "parent_name", None) or ""
            pg = geoms.of(parent)
            rim = float(pg.zmax.max()) if len(pg.owner) else float(pos[2] + size[2])
            return {"xy": pos[:2], "support": float(pos[2] - size[2]), "rim": rim, "owner": parent}
        raise ValueError(f"unknown goal target {self.target!r}")

    def _carry_height(self, eef: np.ndarray) -> float:
        """Grip-site height at which the hanging object clears everything on the way to the target."""
        others = self._geoms.where(self._geoms.owner != self.obj)
        top = _corridor_top(eef, np.array([*self._place["xy"], 0.0]), others, half=0.08)
        return max(top + 0.03 + self._jitter["carry"] + self._hang, eef[2] + 0.05)

    def _release_height(self, eef: np.ndarray) -> float:
        """Lowest grip-site height: object bottom just above the support, palm above a receptacle's rim."""
        p = self._place
        # how far the object hangs below the hand now: it may have turned in the fingers since it was grasped
        z = p["support"] + 0.01 + eef[2] - self._obj_bottom()
        if p["owner"] != self.target:  # a region inside a receptacle (basket): keep the palm above its walls
            z = max(z, p["rim"] + 0.01 - HAND_ABOVE)
        return z

    # ---- acting -----------------------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """The script has finished: it released the object above the target."""
        return self._done

    @property
    def regrasps(self) -> int:
        """How often a grasp slipped and the script re-planned within this episode."""
        return self._retries

    def _move(
        self, target: np.ndarray, speed: float, gripper: float, eef: np.ndarray, z_speed: float | None = None
    ) -> np.ndarray:
        """Proportional control on grip-site position and orientation; translation saturated at ``speed``.

        ``z_speed`` limits the vertical part on its own, so a slow descent still corrects sideways drift at full
        gain (near the reach limit the arm keeps drifting after fast moves and a weak correction loses the grasp).
        """
        v = self._GAIN * (target - eef) / POS_SCALE
        if speed > 0.5:  # action noise only on fast free-space moves, never near contact
            v += self.rng.normal(0, self._noise, 3)
        if z_speed is not None:
            v[2] = np.clip(v[2], -z_speed, z_speed)
            m = np.abs(v[:2]).max()
            if m > speed:
                v[:2] *= speed / m
        else:
            m = np.abs(v).max()
            if m > speed:
                v *= speed / m
        if self.phase in ("lift", "carry", "lower"):  # holding the object: ramp the translation smoothly
            v = self._last_v + np.clip(v - self._last_v, -self._ACCEL, self._ACCEL)
        self._last_v = v
        w = self._GAIN * _rot_to_axis_angle(self._rot @ self._cur_rot().T) / ROT_SCALE
        return np.clip(np.concatenate([v, w, [gripper]]), -1, 1)

    def _cur_rot(self) -> np.ndarray:
        return self.env.env.sim.data.site_xmat[self._site].reshape(3, 3)

    def _rot_err(self) -> float:
        return float(np.linalg.norm(_rot_to_axis_angle(self._rot @ self._cur_rot().T)))

    def _open_to(self, level: float) -> float:
        """Gripper action that moves the (integrating) gripper command towards ``level`` and then holds it."""
        cur = self._grip_level()
        if level > cur + GRIP_STEP / 2:
            return _CLOSE
        if level < cur - GRIP_STEP / 2 or level <= -1.0:
            return _OPEN
        return 0.0

    def _preshape(self) -> float:
        return self._open_to(RIM_LEVEL if self.grasp.kind == "rim" else -1.0)

    def _grip_level(self) -> float:
        gripper = self.env.env.robots[0].gripper
        ca = getattr(gripper, "current_action", None)
        return float(np.asarray(ca).ravel()[-1]) if ca is not None else -1.0

    def _set(self, phase: str) -> None:
        self.phase, self._count = phase, 0
        self._best, self._best_t = np.inf, 0

    def _stalled(self, dist: float, steps: int = 10) -> bool:
        """No progress (2 mm) towards the current target for ``steps`` steps: it is out of reach or blocked."""
        if dist < self._best - 0.002:
            self._best, self._best_t = dist, self._count
        return self._count - self._best_t > steps

    def _regrasp(self, eef: np.ndarray) -> np.ndarray:
        """The object is not in the hand: back off upwards with the gripper open, then re-plan the next grasp;
        returns this step's action (open, in place)."""
        self._retries += 1
        self._backoff = eef + np.array([0, 0, 0.06])
        self._set("backoff")
        return self._move(eef, 0.0, _OPEN, eef)

    def _replan(self) -> None:
        """Plan the current grasp again from the scene as it is now (the object may have moved)."""
        self._geoms = _scene_geoms(self.env)
        self._plan(self._grasp_index + self._retries)

    def act(self, obs: dict) -> np.ndarray:
        """The next 7-D OSC_POSE delta action in [-1, 1] (last entry: gripper, -1 open, +1 closed)."""
        self._count += 1
        eef = np.asarray(obs["robot0_eef_pos"], dtype=float)
        q = np.asarray(obs["robot0_gripper_qpos"], dtype=float)
        if self.phase == "approach":
            # the object may still be settling (Spatial task 5's bowl falls for ~15 steps) or get nudged: re-plan
            # from its current pose; only a large move counts once the fingers are on their way down to it
            if self._replans < 30 and self._obj_moved(0.02 if self._waypoints[0][1] == "descend" else 0.005):
                self._replans += 1
                self._replan()
                self._count = 1
            target, kind, tol = self._waypoints[0]
            if self._count == 1:
                self._hold_z = eef[2]
            if kind == "descend":
                # go down only while the wrist is aligned and the hand is over the grasp point; otherwise hold the
                # lowest height reached so far (a zero z action would let the arm drift up after a fast move)
                if self._rot_err() > np.deg2rad(8) or np.linalg.norm(target[:2] - eef[:2]) > 0.01:
                    target = np.array([target[0], target[1], max(target[2], self._hold_z)])
                    self._best_t = self._count  # waiting for alignment is not a stall
                else:
                    self._hold_z = min(self._hold_z, eef[2])
                act = self._move(target, 1.0, self._preshape(), eef, z_speed=self._SPEED[kind])
            else:
                act = self._move(target, self._SPEED[kind], self._preshape(), eef)
            dist = float(np.linalg.norm(target - eef))
            if dist < tol or self._stalled(dist) or (kind == "descend" and self._count > 60):
                self._waypoints.pop(0)
                self._set("approach")
                if not self._waypoints:
                    self._set("close")
            return act
        if self.phase == "close":  # close until the fingers stop moving
            moving = self._prev_q is None or np.abs(q - self._prev_q).max() > 5e-4
            self._prev_q = q
            if (self._count >= 6 and not moving) or self._count > 15:
                self._hang = eef[2] - self._obj_bottom()
                self._lift_z = self._carry_height(eef)
                escape = _escape(self._geoms.of(self.obj), self._geoms.where(self._geoms.owner != self.obj))
                self._extract_to = eef + np.array([escape[0], escape[1], 0.004 if escape.any() else 0.0])
                self._set("extract" if escape.any() else "lift")
                self._lift_from = (eef[2], self._obj_pos()[2])
            return self._move(self.grasp_pos, 0.3, _CLOSE, eef)
        if self.phase == "extract":
            # slide the object out from under an overhang (the cabinet top over the open drawer) before lifting
            dist = float(np.linalg.norm(self._extract_to - eef))
            if dist < 0.004 or self._stalled(dist, 6):
                self._lift_from = (eef[2], self._obj_pos()[2])
                self._set("lift")
            return self._move(self._extract_to, 0.4, _CLOSE, eef)
        if self.phase == "lift":
            rise = eef[2] - self._lift_from[0]
            if rise > 0.04 and self._obj_pos()[2] - self._lift_from[1] < 0.5 * rise:  # slipped
                return self._regrasp(eef)
            if self.grasp.kind == "rim" and not self._squared and rise > 0.025:
                self._square_at, self._prev_q, self._steady = eef.copy(), q, 0
                self._set("square")
            elif eef[2] > self._lift_z - 0.02 or self._stalled(self._lift_z - eef[2]):
                self._set("carry")
            return self._move(np.array([eef[0], eef[1], self._lift_z]), self._LIFT_SPEED, _CLOSE, eef)
        if self.phase == "square":
            # A pinched bowl turns in the fingers until its flared wall (15 deg) is square to the pads. Let it do so
            # at rest, where it settles within ~20 steps, rather than while carried, where it can fall out.
            self._steady = self._steady + 1 if np.abs(q - self._prev_q).max() < 1e-4 else 0
            self._prev_q = q
            if self._steady >= 3 or self._count > 30:
                self._squared = True
                self._hang = eef[2] - self._obj_bottom()  # the bowl now hangs lower and tilted
                self._lift_z = max(self._lift_z, self._carry_height(eef))
                self._set("lift")
            return self._move(self._square_at, 1.0, _CLOSE, eef)
        if self.phase in ("carry", "lower"):
            if eef[2] - self._obj_bottom() > self._hang + 0.04:  # dropped on the way
                return self._regrasp(eef)
            # close the loop on the object itself: move it over the target, then down to release height
            xy = self._place["xy"] + self._jitter["place"] - (self._obj_pos()[:2] - eef[:2])
            if self.phase == "carry":
                target = np.array([xy[0], xy[1], self._lift_z])
                dist = float(np.linalg.norm(target - eef))
                if dist < 0.015 or self._stalled(dist):
                    self._set("lower")
                return self._move(target, self._CARRY_SPEED, _CLOSE, eef)
            z_rel = self._release_height(eef)
            if eef[2] < z_rel + 0.006 or self._stalled(eef[2] - z_rel, 6):
                self._set("release")
            z_speed = 1.0 if eef[2] > z_rel + 0.06 else self._SPEED["lower"]
            return self._move(np.array([xy[0], xy[1], z_rel]), 1.0, _CLOSE, eef, z_speed=z_speed)
        if self.phase == "release":
            if self._count >= 8:
                self._done = True
                self._retreat = eef + np.array([0, 0, 0.1])
                self._set("retreat")
            return self._move(eef, 0.0, _OPEN, eef)
        if self.phase == "backoff":
            if self._count > 6 and (np.linalg.norm(self._backoff - eef) < 0.015 or self._count > 25):
                self._replan()
            return self._move(self._backoff, 1.0, _OPEN, eef)
        return self._move(self._retreat, 1.0, _OPEN, eef)


def _escape(target: _Geoms, others: _Geoms, margin: float = 0.01) -> np.ndarray:
    """Horizontal move (xy) that takes ``target`` out from under geoms hanging just above it (zero if none)."""
    top = float(target.zmax.max())
    above = others.where((others.zmin > top - 0.005) & (others.zmin < top + 0.05))
    best = np.zeros(2)
    pts = target.corners[..., :2].reshape(-1, 2)
    for corners, axes in zip(above.corners, above.axes):
        overlaps = []
        for k in np.argsort(-np.linalg.norm(axes[:2], axis=0))[:2]:  # the box's two most horizontal axes
            e = axes[:2, k] / np.linalg.norm(axes[:2, k])
            lo, hi = (corners[:, :2] @ e).min(), (corners[:, :2] @ e).max()
            plo, phi = (pts @ e).min(), (pts @ e).max()
            over = min(hi, phi) - max(lo, plo)
            if over <= 0:
                break
            # move away from the box along e: out past its near face
            sign = 1.0 if (plo + phi) > (lo + hi) else -1.0
            overlaps.append(((hi - plo) if sign > 0 else (phi - lo), sign * e))
        else:
            depth, direction = min(overlaps, key=lambda o: o[0])
            move = (depth + margin) * direction
            if np.linalg.norm(move) > np.linalg.norm(best):
                best = move
    return best


def _corridor_top(a: np.ndarray, b: np.ndarray, geoms: _Geoms, half: float = 0.09) -> float:
    """Highest geom top within ``half`` m (horizontally) of the segment a-b."""
    if len(geoms.owner) == 0:
        return -np.inf
    pts = np.concatenate([geoms.corners[..., :2], geoms.corners[..., :2].mean(1, keepdims=True)], axis=1)
    d = b[:2] - a[:2]
    length = float(np.linalg.norm(d))
    u = d / length if length > 1e-6 else np.zeros(2)
    t = np.clip((pts - a[:2]) @ u, 0, length)
    dist = np.linalg.norm(pts - (a[:2] + t[..., None] * u), axis=-1).min(1)
    near = dist < half
    return float(geoms.zmax[near].max()) if near.any() else -np.inf


def run_scripted_episode(raw_env: Any, rng: np.random.Generator, grasp: int = 0, max_steps: int = 300) -> dict:
    """Run the expert until success or ``max_steps`` (the caller has reset, set the init state and settled)."""
    policy = ScriptedPickPlace(raw_env, rng, grasp=grasp)
    obs = raw_env.env._get_observations(force_update=True)
    observations, actions = [obs], []
    success = False
    for _ in range(max_steps):
        a = policy.act(obs)
        obs, _, done, _ = raw_env.step(a)
        observations.append(obs)
        actions.append(a)
        if bool(done) or raw_env.check_success():
            success = True
            break
    return {
        "success": success,
        "steps": len(actions),
        "observations": observations,  # steps + 1 obs dicts, the first one before any action
        "actions": np.asarray(actions, dtype=np.float32).reshape(-1, 7),
        "phase": policy.phase,  # where the script was when the episode ended
        "regrasps": policy.regrasps,
    }


__all__ = [
    "Grasp",
    "ScriptedPickPlace",
    "grasp_candidates",
    "make_raw_env",
    "pick_place_goal",
    "reset_control_env",
    "run_scripted_episode",
    "settle",
]
