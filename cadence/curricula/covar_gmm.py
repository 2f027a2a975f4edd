"""Covar-GMM (Moulin-Frier et al. 2014, as run by Portelas et al. 2019; docs/ARCHITECTURE.md,
"ALP-GMM and other teachers").

A mixture is fitted on [p, time, r] over the last ``fit_every`` episodes, where p is in the unit cube, r is the
normalised return and time is the episode's position in that window, i / fit_every in [0, 1). A component's
learning progress is max(0, cov(time, r)) read off its covariance (|cov(time, r)| with ``absolute_lp``): returns
rising over time in its part of the task space. Schedule, model choice and uniform share are those of the reference
code's ``CovarGMM`` (``teachDRL/teachers/algos/covar_gmm.py``; 250 bootstrap episodes, a fit every 250, k = 2..10
by AIC, 20% uniform); tasks come from the chosen component's marginal over p, clipped to the box. The reference
fits p in raw task units; :mod:`cadence.curricula.gmm` says why cadence uses the unit cube and what that changes.
It also offers BIC and AICc (``criterion``), which the reference's Covar-GMM does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from cadence.curricula.base import ArrayLike
from cadence.curricula.gmm import GMMTeacher, MixtureFit


class CovarGMMTeacher(GMMTeacher):
    """Teacher that samples where returns covary positively with time.

    :param low: lower bounds of the task parameters.
    :param high: upper bounds of the task parameters.
    :param seed: seed of the teacher's generator.
    :param reward_range: ``(r_min, r_max)`` mapping returns to [0, 1] (required; clipped outside).
    :param fit_every: episodes between two fits, and the window each fit uses (250).
    :param bootstrap: uniform episodes before the first fit (250).
    :param k_range: numbers of components tried, inclusive (2..10).
    :param random_share: probability of a uniform task after the bootstrap (0.2).
    :param criterion: how k is chosen: ``"aic"`` (the reference's), ``"bic"`` or ``"aicc"``.
    :param absolute_lp: learning progress is |cov(time, r)|, so falling returns (forgetting) attract too, as the
        reference's ``absolute_lp`` option; by default max(0, cov(time, r)), the original method.
    """

    name = "covar-gmm"
    interest_name = "learning_progress"
    #: states saved before absolute_lp was a setting used max(0, cov)
    settings_before: ClassVar[dict[str, Any]] = {**GMMTeacher.settings_before, "absolute_lp": False}

    def __init__(self, low: ArrayLike, high: ArrayLike, seed: int = 0, reward_range: Sequence[float] | None = None,
                 *, fit_every: int = 250, bootstrap: int = 250, k_range: Sequence[int] = (2, 10),
                 random_share: float = 0.2, criterion: str = "aic", absolute_lp: bool = False) -> None:
        super().__init__(low, high, seed, reward_range, fit_every=fit_every, bootstrap=bootstrap, k_range=k_range,
                         random_share=random_share, criterion=criterion)
        self.absolute_lp = bool(absolute_lp)

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "absolute_lp": self.absolute_lp}

    def fit_data(self) -> np.ndarray:
        params, returns = self.history
        params, returns = params[-self.fit_every:], returns[-self.fit_every:]
        # time within the window, as the reference's i / fit_rate: what matters is order, not the absolute episode
        time = np.arange(len(returns)) / self.fit_every
        normalised = [self.normalise_return(r) for r in returns]
        return np.column_stack([self.to_unit(params), time, normalised])

    def interest(self, gmm: MixtureFit) -> np.ndarray:
        """max(0, cov(time, r)) of each component, or |cov(time, r)| with ``absolute_lp``."""
        covariance = gmm.covariances[:, self.dim, self.dim + 1]
        return np.abs(covariance) if self.absolute_lp else np.maximum(covariance, 0.0)
