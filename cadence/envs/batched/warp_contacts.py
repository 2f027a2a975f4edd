"""MuJoCo's plane-capsule contact frame for MuJoCo Warp, so the warp backend's contacts match ``rollout``'s.

MuJoCo (``mjc_PlaneCapsule``, then ``mju_makeFrame``) always takes a plane-capsule contact's first tangent from the
capsule's axis projected onto the plane. MuJoCo Warp 4.0 does so only while that projection is longer than 0.5,
that is while the capsule is more than 30 degrees off the normal; a steeper capsule gets a fixed tangent (y, or z).
With a pyramidal friction cone the cone's edges follow the tangents, so the two engines apply different friction
forces to the same steep capsule: Ant's lower legs meet the floor that way, and its worlds parted at the first leg
contact (one-step qvel differences up to 0.4). :func:`use_mujoco_plane_capsule_frame` swaps MuJoCo Warp's
plane-capsule function for one that frames the contact as MuJoCo does; it must run before the first kernel build
(Warp resolves a kernel's functions when it builds it, and hashes their source for its kernel cache).
"""

from __future__ import annotations

from typing import Tuple  # noqa: UP035 (Warp reads the return annotation and needs typing.Tuple)

import warp as wp
from mujoco_warp._src.collision_primitive_core import mat23f

#: MuJoCo's mjMINVAL: a shorter projected axis (the capsule along the normal) leaves the tangent to mju_makeFrame
_MIN_NORM = 1e-15

_installed = False


@wp.func
def plane_capsule_mujoco_frame(
    plane_normal: wp.vec3,
    plane_pos: wp.vec3,
    capsule_pos: wp.vec3,
    capsule_axis: wp.vec3,
    capsule_radius: float,
    capsule_half_length: float,
) -> Tuple[wp.vec2, mat23f, wp.mat33]:  # noqa: UP006
    """MuJoCo Warp's ``plane_capsule`` with MuJoCo's frame: both end spheres against the plane, the tangent the
    capsule axis projected onto the plane (MuJoCo's ``(1, 0, 0)`` when the projection vanishes)."""
    n = plane_normal
    projected = capsule_axis - n * wp.dot(n, capsule_axis)
    norm = wp.length(projected)
    b = wp.vec3(1.0, 0.0, 0.0)
    if norm >= float(_MIN_NORM):
        b = projected / norm
    c = wp.cross(n, b)
    frame = wp.mat33(n[0], n[1], n[2], b[0], b[1], b[2], c[0], c[1], c[2])
    segment = capsule_axis * capsule_half_length
    end1 = capsule_pos + segment
    end2 = capsule_pos - segment
    dist1 = wp.dot(end1 - plane_pos, n) - capsule_radius
    dist2 = wp.dot(end2 - plane_pos, n) - capsule_radius
    pos1 = end1 - n * (capsule_radius + 0.5 * dist1)
    pos2 = end2 - n * (capsule_radius + 0.5 * dist2)
    pos = mat23f(pos1[0], pos1[1], pos1[2], pos2[0], pos2[1], pos2[2])
    return wp.vec2(dist1, dist2), pos, frame


def use_mujoco_plane_capsule_frame() -> None:
    """Make MuJoCo Warp's plane-capsule collisions use MuJoCo's contact frame (once per process).

    Raises RuntimeError if this mujoco_warp no longer has the function it replaces (a version cadence does not
    know); the caller then runs with MuJoCo Warp's own frame.
    """
    global _installed
    if _installed:
        return
    from mujoco_warp._src import collision_primitive

    if not hasattr(collision_primitive, "plane_capsule"):
        raise RuntimeError("mujoco_warp._src.collision_primitive.plane_capsule is gone in this mujoco_warp version")
    collision_primitive.plane_capsule = plane_capsule_mujoco_frame
    _installed = True
