"""Covar-GMM (Moulin-Frier et al. 2014, as run by Portelas et al. 2019; DESIGN.md section 3).

A mixture is fitted on [p, time, r] over the last ``fit_every`` episodes, where p is in the unit cube, r is the
normalised return and time is the episode's position in that window, i / fit_every in [0, 1). A component's
learning progress is max(0, cov(time, r)) read off its covariance: returns rising over time in its part of the
task space. Schedule, model choice and uniform share are those of ALP-GMM (250 bootstrap episodes, a fit every
250, k = 2..10 by AIC, 20% uniform), as in the reference code; tasks come from the chosen component's marginal
over p, clipped to the box.
"""

from __future__ import annotations

import numpy as np

from cadence.curricula.gmm import GMMTeacher, MixtureFit


class CovarGMMTeacher(GMMTeacher):
    """Teacher that samples where returns covary positively with time.

    :param low: lower bounds of the task parameters.
    :param high: upper bounds of the task parameters.
    :param seed: seed of the teacher's generator.
    :param reward_range: ``(r_min, r_max)`` mapping returns to [0, 1] (required; clipped outside).
    :param fit_every: episodes between two fits, and the window each fit uses (250).
    :param bootstrap: uniform episodes before the first fit (250).
    :param k_range: numbers of components tried, inclusive (2..10); the lowest AIC wins.
    :param random_share: probability of a uniform task after the bootstrap (0.2).
    """

    name = "covar-gmm"
    interest_name = "learning_progress"

    def fit_data(self) -> np.ndarray:
        params, returns = self.history
        params, returns = params[-self.fit_every:], returns[-self.fit_every:]
        # time within the window, as the reference's i / fit_rate: what matters is order, not the absolute episode
        time = np.arange(len(returns)) / self.fit_every
        normalised = [self.normalise_return(r) for r in returns]
        return np.column_stack([self.to_unit(params), time, normalised])

    def interest(self, gmm: MixtureFit) -> np.ndarray:
        """max(0, cov(time, r)) of each component."""
        return np.maximum(gmm.covariances[:, self.dim, self.dim + 1], 0.0)
