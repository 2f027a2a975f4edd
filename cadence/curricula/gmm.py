"""Gaussian-mixture teachers (ALP-GMM, Covar-GMM): the refit schedule, the choice of k and the sampling.

Both teachers, after ``bootstrap`` uniform episodes and then every ``fit_every`` episodes, fit full-covariance
mixtures with k in ``k_range`` on a table built from the last ``fit_every`` episodes, keep the one with the lowest
``criterion`` (AIC by default, as the reference; BIC or AICc on request), and then sample: with probability
``random_share`` uniformly, else a component ∝ its *interest* (the subclass decides what that is) and the task
part of a draw from it, clipped to the box (docs/ARCHITECTURE.md, "ALP-GMM and other teachers").

Task parameters enter the table mapped to [0, 1]^dim; the reference code (flowersteam/teachDeepRL) fits them in
raw task units instead. A per-dimension rescaling leaves the mixture model itself unchanged (the maximum-likelihood
fit of the rescaled data is the rescaled fit, every k's log-likelihood moves by the same constant, so AIC/BIC
rank the candidates alike, and a draw mapped back has the same law), but EM is not run to the same fit: its k-means
initialisation measures Euclidean distances, and sklearn's ``reg_covar`` adds a fixed 1e-6 to every variance, so
which task dimension (or the interest column, already in [0, 1]) dominates them depends on the units. The cube
makes every family weigh its parameters by their share of the range, whatever their units (AntDir's radians,
PusherObject's mass scale). The fitted mixture is kept as plain arrays (weights, means, covariances) and sampled
with the teacher's own generator, so a restored teacher draws exactly what the original would have.
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from cadence.curricula.base import ArrayLike, Teacher, as_array, as_tensor, choose_proportional

#: how a number of components is chosen: the lowest Akaike (the reference's default), Bayesian, or small-sample
#: corrected Akaike information criterion
CRITERIA: tuple[str, ...] = ("aic", "bic", "aicc")


@dataclass(frozen=True)
class MixtureFit:
    """A fitted mixture as plain arrays, with the criterion's score of every candidate k that was tried."""

    weights: np.ndarray  #: [k]
    means: np.ndarray  #: [k, D]
    covariances: np.ndarray  #: [k, D, D]
    ks: tuple[int, ...]  #: the candidate numbers of components
    scores: tuple[float, ...]  #: the criterion's score (lower is better) of the fit with each candidate k
    random_state: int  #: ``random_state`` given to sklearn for every candidate
    episode: int  #: episodes seen when it was fitted
    criterion: str = "aic"  #: one of :data:`CRITERIA`

    @property
    def k(self) -> int:
        """Number of components (the candidate with the lowest score)."""
        return len(self.weights)

    def sample(self, rng: np.random.Generator, component: int, dims: slice) -> np.ndarray:
        """A draw from the marginal of ``component`` over ``dims`` (the same law as a full draw, then cut)."""
        return rng.multivariate_normal(self.means[component, dims], self.covariances[component, dims, dims])

    def state_dict(self) -> dict[str, Any]:
        return {"weights": as_tensor(self.weights), "means": as_tensor(self.means),
                "covariances": as_tensor(self.covariances), "ks": list(self.ks), "scores": list(self.scores),
                "criterion": self.criterion, "random_state": self.random_state, "episode": self.episode}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MixtureFit:
        # states saved before the criterion was a choice hold AIC scores under "aics"
        scores = state["scores"] if "scores" in state else state["aics"]
        return cls(as_array(state["weights"]), as_array(state["means"]), as_array(state["covariances"]),
                   tuple(int(k) for k in state["ks"]), tuple(float(s) for s in scores),
                   int(state["random_state"]), int(state["episode"]), str(state.get("criterion", "aic")))


def n_parameters(k: int, dim: int) -> int:
    """Free parameters of a full-covariance mixture of ``k`` components in ``dim`` dimensions: means, covariances
    and the k - 1 free weights (what sklearn's AIC and BIC count)."""
    return k * dim + k * dim * (dim + 1) // 2 + k - 1


def criterion_score(gmm: GaussianMixture, data: np.ndarray, criterion: str) -> float:
    """``criterion`` of a fitted ``gmm`` on ``data`` [n, D]: sklearn's AIC or BIC, or AICc = AIC + 2p(p + 1) /
    (n - p - 1) with p free parameters (+inf where n <= p + 1, too few points for the correction to exist)."""
    if criterion == "bic":
        return float(gmm.bic(data))
    aic = float(gmm.aic(data))
    if criterion == "aic":
        return aic
    n, p = len(data), n_parameters(gmm.n_components, data.shape[1])
    return aic + 2 * p * (p + 1) / (n - p - 1) if n > p + 1 else math.inf


def check_criterion(criterion: str) -> str:
    """``criterion`` if it is one of :data:`CRITERIA`, else ``ValueError`` listing them."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    return criterion


def fit_mixture(data: np.ndarray, ks: Sequence[int], random_state: int, episode: int = 0,
                criterion: str = "aic") -> MixtureFit:
    """Fit a full-covariance ``GaussianMixture`` for each k in ``ks`` on ``data`` [n, D]; keep the one with the
    lowest ``criterion`` (``"aic"``, ``"bic"`` or ``"aicc"``; the first k on a tie)."""
    check_criterion(criterion)
    data = np.asarray(data, dtype=np.float64)
    fits, scores = [], []
    # One thread: k-means initialisation would otherwise start an OpenMP team per fit, which on a busy machine
    # (the learner next to it) made a fit of 250 points ~100x slower; one thread also makes fits independent of
    # the core count. Warnings: a window of near-duplicate points makes EM stop early or find fewer clusters
    # than k: expected, not news.
    with threadpool_limits(limits=1), warnings.catch_warnings(), np.errstate(under="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in ks:
            gmm = GaussianMixture(n_components=k, covariance_type="full", random_state=random_state).fit(data)
            fits.append(gmm)
            scores.append(criterion_score(gmm, data, criterion))
    best = fits[int(np.argmin(scores))]
    return MixtureFit(best.weights_.copy(), best.means_.copy(), best.covariances_.copy(), tuple(int(k) for k in ks),
                      tuple(scores), int(random_state), int(episode), criterion)


class GMMTeacher(Teacher):
    """Base of the mixture teachers; subclasses give the fitted table and each component's interest.

    :param fit_every: episodes between two fits; each fit uses the last ``fit_every`` episodes.
    :param bootstrap: uniform episodes before the first fit (which happens at exactly ``bootstrap`` episodes).
    :param k_range: ``(k_min, k_max)``, inclusive: the numbers of components tried at each fit.
    :param random_share: probability of a uniform task once a mixture is fitted.
    :param criterion: how the number of components is chosen: ``"aic"`` (the reference's default), ``"bic"``
        (fewer components: it charges log(n) rather than 2 per parameter) or ``"aicc"`` (AIC corrected for small
        windows).
    """

    needs_reward_range = True
    #: what a component's interest is called in :meth:`metrics`
    interest_name = "interest"
    #: states saved before the criterion was a setting were fitted by AIC
    settings_before: ClassVar[dict[str, Any]] = {"criterion": "aic"}

    def __init__(self, low: ArrayLike, high: ArrayLike, seed: int = 0, reward_range: Sequence[float] | None = None,
                 *, fit_every: int = 250, bootstrap: int = 250, k_range: Sequence[int] = (2, 10),
                 random_share: float = 0.2, criterion: str = "aic") -> None:
        super().__init__(low, high, seed, reward_range)
        k_min, k_max = (int(k) for k in k_range)
        if not 1 <= k_min <= k_max:
            raise ValueError(f"k_range must be (k_min, k_max) with 1 <= k_min <= k_max, got {tuple(k_range)}")
        if fit_every < k_max or bootstrap < k_max:
            raise ValueError(f"fit_every ({fit_every}) and bootstrap ({bootstrap}) must be at least k_max ({k_max}): "
                             "a mixture needs at least as many points as components")
        if not 0.0 <= random_share <= 1.0:
            raise ValueError(f"random_share must be in [0, 1], got {random_share}")
        self.fit_every, self.bootstrap = int(fit_every), int(bootstrap)
        self.ks = tuple(range(k_min, k_max + 1))
        self.random_share = float(random_share)
        self.criterion = check_criterion(criterion)
        self.gmm: MixtureFit | None = None
        self.n_fits = 0
        self.n_gmm_samples = 0

    def hparams(self) -> dict[str, Any]:
        return {"fit_every": self.fit_every, "bootstrap": self.bootstrap, "k_range": [self.ks[0], self.ks[-1]],
                "random_share": self.random_share, "criterion": self.criterion}

    def fit_due(self) -> bool:
        """Whether the episodes seen so far call for a fit: at ``bootstrap``, then every ``fit_every``."""
        n = self.n_episodes
        return n >= self.bootstrap and (n - self.bootstrap) % self.fit_every == 0

    def fit(self) -> MixtureFit:
        """Fit the mixture on the last ``fit_every`` episodes now (normally called by ``update`` on schedule)."""
        # the seed of each fit comes from the teacher's generator, so fits are reproducible and resumable
        random_state = int(self.rng.integers(2**31 - 1))
        self.gmm = fit_mixture(self.fit_data(), self.ks, random_state, self.n_episodes, self.criterion)
        self.n_fits += 1
        return self.gmm

    @abstractmethod
    def fit_data(self) -> np.ndarray:
        """The table the next fit uses: rows of the last ``fit_every`` episodes, task params first (in [0, 1])."""

    @abstractmethod
    def interest(self, gmm: MixtureFit) -> np.ndarray:
        """How much each component deserves to be sampled (non-negative)."""

    def metrics(self) -> dict[str, float]:
        interest = self.interest(self.gmm) if self.gmm is not None else np.zeros(1)
        return {**super().metrics(), "gmm_components": float(self.gmm.k if self.gmm is not None else 0),
                "gmm_fits": float(self.n_fits), "gmm_samples": float(self.n_gmm_samples),
                f"gmm_{self.interest_name}_max": float(np.max(interest))}

    def _observe(self, params: np.ndarray, episode_return: float) -> None:
        if self.fit_due():
            self.fit()

    def _sample(self) -> np.ndarray:
        if self.gmm is None or self.rng.random() < self.random_share:
            return self.uniform()
        component = choose_proportional(self.rng, self.interest(self.gmm))
        self.n_gmm_samples += 1
        return self.from_unit(self.gmm.sample(self.rng, component, slice(0, self.dim)))

    def _state(self) -> dict[str, Any]:
        return {"gmm": None if self.gmm is None else self.gmm.state_dict(), "n_fits": self.n_fits,
                "n_gmm_samples": self.n_gmm_samples}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.gmm = None if state["gmm"] is None else MixtureFit.from_state(state["gmm"])
        self.n_fits = int(state["n_fits"])
        self.n_gmm_samples = int(state["n_gmm_samples"])
