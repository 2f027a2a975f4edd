"""The random teacher: every task uniform in the box, the baseline every curriculum must beat."""

from __future__ import annotations

import numpy as np

from cadence.curricula.base import Teacher


class RandomTeacher(Teacher):
    """Draws every task uniformly from ``[low, high]`` and ignores returns (they still enter :attr:`history`).

    :param low: lower bounds of the task parameters.
    :param high: upper bounds of the task parameters.
    :param seed: seed of the teacher's generator.
    :param reward_range: optional; unused except for :meth:`normalise_return`.
    """

    name = "random"

    def _sample(self) -> np.ndarray:
        return self.uniform()
