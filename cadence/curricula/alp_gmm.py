"""ALP-GMM (Portelas et al., arXiv 1910.07224, CoRL 2019): sample tasks where absolute learning progress is high.

Each new (task p, normalised return r) gets ALP = |r − r_nn| against the nearest earlier task
(:class:`~cadence.curricula.alp.NearestNeighbourALP`, distances measured in the unit cube; 0 until
``alp_min_history`` tasks are in the history, as in the reference). After 250 uniform episodes, and then every
250, mixtures with k = 2..10 are fitted on [p, ALP] over the last 250 episodes and the one with the lowest AIC (or
BIC, AICc: ``criterion``) kept; a task is then uniform with probability 0.2, else drawn from a component chosen ∝
the ALP coordinate of its mean, with the ALP dimension dropped and the result clipped to the box.

The reference (flowersteam/teachDeepRL, ``teachDRL/teachers/algos/alp_gmm.py``) measures neighbour distances in
raw task units; cadence's unit cube gives the same neighbours in one dimension, or where every dimension has the
same range, and otherwise weighs each dimension by its share of the range rather than by its units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from cadence.curricula.alp import NearestNeighbourALP
from cadence.curricula.base import ArrayLike, as_array, as_tensor
from cadence.curricula.gmm import GMMTeacher, MixtureFit


class ALPGMMTeacher(GMMTeacher):
    """Absolute-learning-progress Gaussian-mixture teacher.

    :param low: lower bounds of the task parameters.
    :param high: upper bounds of the task parameters.
    :param seed: seed of the teacher's generator.
    :param reward_range: ``(r_min, r_max)`` mapping returns to [0, 1] (required; clipped outside).
    :param fit_every: episodes between two fits, and the window each fit uses (250).
    :param bootstrap: uniform episodes before the first fit (250).
    :param k_range: numbers of components tried, inclusive (2..10).
    :param random_share: probability of a uniform task after the bootstrap (0.2).
    :param criterion: how k is chosen: ``"aic"`` (the reference's default), ``"bic"`` or ``"aicc"``.
    :param alp_min_history: earlier tasks needed before a task's ALP is computed; 0 before (6: the reference's
        ``len(history) > 5``; 1 computes it from the second task on).
    :param rebuild_every: how many recent tasks the nearest-neighbour search scans before rebuilding its KD-tree.
    """

    name = "alp-gmm"
    interest_name = "alp"
    #: states saved before alp_min_history was a setting computed ALP from the second task on
    settings_before: ClassVar[dict[str, Any]] = {**GMMTeacher.settings_before, "alp_min_history": 1}

    def __init__(self, low: ArrayLike, high: ArrayLike, seed: int = 0, reward_range: Sequence[float] | None = None,
                 *, fit_every: int = 250, bootstrap: int = 250, k_range: Sequence[int] = (2, 10),
                 random_share: float = 0.2, criterion: str = "aic", alp_min_history: int = 6,
                 rebuild_every: int = 256) -> None:
        super().__init__(low, high, seed, reward_range, fit_every=fit_every, bootstrap=bootstrap, k_range=k_range,
                         random_share=random_share, criterion=criterion)
        if alp_min_history < 1:
            raise ValueError(f"alp_min_history must be >= 1, got {alp_min_history}")
        self._alp = NearestNeighbourALP(self.dim, rebuild_every, int(alp_min_history))
        self._alps: list[float] = []

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "alp_min_history": self._alp.min_history}

    @property
    def alps(self) -> np.ndarray:
        """ALP of every episode so far, in order."""
        return np.array(self._alps, dtype=np.float64)

    def fit_data(self) -> np.ndarray:
        params, _ = self.history
        window = slice(-self.fit_every, None)
        return np.column_stack([self.to_unit(params[window]), self.alps[window]])

    def interest(self, gmm: MixtureFit) -> np.ndarray:
        """The ALP coordinate of each component's mean."""
        return np.maximum(gmm.means[:, -1], 0.0)

    def metrics(self) -> dict[str, float]:
        recent = self._alps[-self.fit_every:]
        return {**super().metrics(), "alp_mean": float(np.mean(recent)) if recent else 0.0}

    def _observe(self, params: np.ndarray, episode_return: float) -> None:
        self._alps.append(self._alp.add(self.to_unit(params), self.normalise_return(episode_return)))
        super()._observe(params, episode_return)

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "alps": as_tensor(self._alps), "tree_size": self._alp.tree_size}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self._alps = as_array(state["alps"]).reshape(-1).tolist()
        # the ALP history is the unit-cube params and normalised returns: recompute them instead of storing twice
        params, returns = self.history
        self._alp.load(self.to_unit(params), [self.normalise_return(r) for r in returns], int(state["tree_size"]))
