"""Curricula: teachers that propose task parameters and learn from the returns (see :mod:`cadence.curricula.base`)."""

from __future__ import annotations

from cadence.curricula.alp import NearestNeighbourALP
from cadence.curricula.alp_gmm import ALPGMMTeacher
from cadence.curricula.base import Teacher
from cadence.curricula.covar_gmm import CovarGMMTeacher
from cadence.curricula.gmm import GMMTeacher, MixtureFit, fit_lowest_aic
from cadence.curricula.random_teacher import RandomTeacher
from cadence.curricula.registry import TEACHERS, make_teacher
from cadence.curricula.riac import RIACTeacher

__all__ = ["TEACHERS", "ALPGMMTeacher", "CovarGMMTeacher", "GMMTeacher", "MixtureFit", "NearestNeighbourALP",
           "RIACTeacher", "RandomTeacher", "Teacher", "fit_lowest_aic", "make_teacher"]
