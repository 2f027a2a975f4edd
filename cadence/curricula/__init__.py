"""Curricula: teachers that propose task parameters and learn from the returns (see :mod:`cadence.curricula.base`)."""

from __future__ import annotations

from cadence.curricula.alp import NearestNeighbourALP
from cadence.curricula.alp_gmm import ALPGMMTeacher
from cadence.curricula.base import Teacher
from cadence.curricula.clutr import CLUTRTeacher, make_clutr_teacher
from cadence.curricula.covar_gmm import CovarGMMTeacher
from cadence.curricula.domain_randomisation import DomainRandomisationTeacher
from cadence.curricula.gmm import CRITERIA, GMMTeacher, MixtureFit, fit_mixture
from cadence.curricula.random_teacher import RandomTeacher
from cadence.curricula.registry import (
    LAYOUT_TEACHERS,
    TEACHERS,
    check_teacher_settings,
    layout_rvae,
    make_layout_teacher,
    make_teacher,
    read_rvae,
    teacher_settings,
)
from cadence.curricula.riac import RIACTeacher
from cadence.curricula.rvae import LayoutRVAE, cached_rvae, fit_rvae, load_rvae, save_rvae, token_accuracy

__all__ = ["CRITERIA", "LAYOUT_TEACHERS", "TEACHERS", "ALPGMMTeacher", "CLUTRTeacher", "CovarGMMTeacher",
           "DomainRandomisationTeacher", "GMMTeacher", "LayoutRVAE", "MixtureFit", "NearestNeighbourALP",
           "RIACTeacher", "RandomTeacher", "Teacher", "cached_rvae", "check_teacher_settings", "fit_mixture",
           "fit_rvae", "layout_rvae", "load_rvae", "make_clutr_teacher", "make_layout_teacher", "make_teacher",
           "read_rvae", "save_rvae", "teacher_settings", "token_accuracy"]
