"""Teachers by name: :data:`TEACHERS` over a task family's parameter box (:func:`make_teacher`), and
:data:`LAYOUT_TEACHERS` over maze layouts (:func:`make_layout_teacher`)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from cadence.curricula.alp_gmm import ALPGMMTeacher
from cadence.curricula.base import ArrayLike, Teacher
from cadence.curricula.clutr import CLUTRTeacher
from cadence.curricula.covar_gmm import CovarGMMTeacher
from cadence.curricula.domain_randomisation import DomainRandomisationTeacher
from cadence.curricula.random_teacher import RandomTeacher
from cadence.curricula.riac import RIACTeacher
from cadence.curricula.rvae import cached_rvae, load_rvae
from cadence.envs.maze_tasks import LayoutFamily

TEACHERS: dict[str, type[Teacher]] = {
    "random": RandomTeacher,
    "alp-gmm": ALPGMMTeacher,
    "riac": RIACTeacher,
    "covar-gmm": CovarGMMTeacher,
}


def make_teacher(name: str, low: ArrayLike, high: ArrayLike, seed: int = 0,
                 reward_range: Sequence[float] | None = None, **kwargs: Any) -> Teacher:
    """Build the teacher registered as ``name`` over the box ``[low, high]``.

    :param name: one of :data:`TEACHERS` (``random``, ``alp-gmm``, ``riac``, ``covar-gmm``).
    :param low: lower bounds of the task parameters (e.g. a task family's ``param_space.low``).
    :param high: upper bounds of the task parameters.
    :param seed: seed of the teacher's generator.
    :param reward_range: ``(r_min, r_max)`` of episode returns; required by all but ``random``.
    :param kwargs: the teacher's own settings (e.g. ``fit_every`` for ``alp-gmm``).
    :raises ValueError: for an unknown name (listing the valid ones) or invalid settings.
    """
    if name in LAYOUT_TEACHERS:
        raise ValueError(f"the {name} teacher proposes maze layouts, not parameters in a box: use it on a layout env "
                         "(PointMazeLayout-v0) through make_layout_teacher")
    check_name(name, TEACHERS)
    return TEACHERS[name](low, high, seed=seed, reward_range=reward_range, **kwargs)


#: teachers over maze layouts (a :class:`~cadence.envs.maze_tasks.LayoutFamily`): domain randomisation and CLUTR
LAYOUT_TEACHERS: tuple[str, ...] = ("dr", "clutr")


def check_name(name: str, valid_names: Any) -> None:
    """``ValueError`` for a name not in ``valid_names``, listing them and the close matches."""
    if name not in valid_names:
        valid = sorted(valid_names)
        close = difflib.get_close_matches(str(name).lower(), valid, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown teacher {name!r}: valid names are {', '.join(valid)}{hint}")


def make_layout_teacher(name: str, family: LayoutFamily, seed: int = 0, rvae: str = "",
                        **kwargs: Any) -> Teacher:
    """Build the layout teacher ``name`` (``dr`` or ``clutr``) for ``family``'s mazes.

    :param rvae: ``clutr`` only: a checkpoint from :func:`~cadence.curricula.rvae.save_rvae`; by default the
        CPU-sized RVAE for the family's shape, trained and cached on first use.
    :param kwargs: the teacher's own settings.
    """
    check_name(name, LAYOUT_TEACHERS)
    if name == "dr":
        return DomainRandomisationTeacher(family.shape, family.max_obstacles, seed=seed, **kwargs)
    model = load_rvae(rvae) if rvae else cached_rvae(family.shape, family.max_obstacles)
    if tuple(model.codec.shape) != tuple(family.shape):
        raise ValueError(f"the RVAE encodes {model.codec.shape} layouts, {family.name}'s are {family.shape}")
    return CLUTRTeacher(model, seed=seed, reward_range=(0.0, 1.0), **kwargs)
