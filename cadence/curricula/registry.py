"""Teachers by name: :data:`TEACHERS` and :func:`make_teacher`."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from cadence.curricula.alp_gmm import ALPGMMTeacher
from cadence.curricula.base import ArrayLike, Teacher
from cadence.curricula.covar_gmm import CovarGMMTeacher
from cadence.curricula.random_teacher import RandomTeacher
from cadence.curricula.riac import RIACTeacher

# CLUTR is not here: it needs a trained RVAE and proposes latents, not a task family's params
# (see cadence.curricula.clutr.make_clutr_teacher)
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
    if name not in TEACHERS:
        valid = sorted(TEACHERS)
        close = difflib.get_close_matches(str(name).lower(), valid, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown teacher {name!r}: valid names are {', '.join(valid)}{hint}")
    return TEACHERS[name](low, high, seed=seed, reward_range=reward_range, **kwargs)
