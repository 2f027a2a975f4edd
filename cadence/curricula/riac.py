"""RIAC (Baranes & Oudeyer 2009, as run by Portelas et al. 2019;
docs/ARCHITECTURE.md, "ALP-GMM and other teachers"): split the task space into regions where learning progress
differs, and sample regions ∝ their progress.

Every region (a box of the unit cube, see Units below) keeps the last ``max_region_size + 1`` (task, normalised
return) pairs that fell in it, in order. Its ALP is |mean of the older half − mean of the newer half| of its last
``alp_window`` returns. A new episode is recorded in every region on its path from the root to a leaf; a leaf
holding more than ``max_region_size`` pairs tries ``n_split_attempts`` random cuts (a dimension, then a threshold
uniform where both children keep at least ``min_width`` of the full range) and takes the one maximising
n_left · n_right · |ALP_left − ALP_right| among those leaving each child at least ``min_region_size`` pairs. If no
cut qualifies, the leaf forgets its oldest quarter instead.

Sampling: 70% a region ∝ its ALP, then a uniform task in it; 20% uniform over the whole box; 10% a region ∝ ALP,
then its lowest-return task mutated with Gaussian noise (std ``mutation_std`` of each dimension's range) and
clipped to the region: the region's weakest spot, nudged. As in the reference, regions are all the nodes of the
tree (parents included) unless ``leaves_only``.

Units. The reference (flowersteam/teachDeepRL, ``teachDRL/teachers/algos/riac.py``) keeps regions and tasks in raw
task units; cadence keeps them in the unit cube. The split rule does not notice: a uniform dimension and threshold,
a least width given as a share of the range, and a score made of counts and ALPs are all unchanged when a dimension
is rescaled. The mutation does: the reference adds N(0, 0.1²) in raw units whatever the range (on its Stump Tracks,
stump height in [0, 3] and spacing in [0, 6], that is 1/30 and 1/60 of each range), while cadence's
``mutation_std`` is a share of each dimension's range, so the nudge has the same relative size in every family and
dimension (AntDir's 2π radians as PusherObject's mass scale). The two agree only on dimensions 1 wide; for the
reference's absolute 0.1 on a box whose dimensions are all ``w`` wide, pass ``mutation_std = 0.1 / w``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadence.curricula.base import ArrayLike, Teacher, as_array, as_tensor, choose_proportional


def window_alp(returns: Sequence[float], window: int) -> float:
    """|mean of the older half − mean of the newer half| of the last ``window`` returns; 0 for 2 or fewer."""
    if len(returns) <= 2:
        return 0.0
    recent = np.asarray(returns, dtype=np.float64)[-window:]
    half = len(recent) // 2
    return float(abs(recent[:-half].mean() - recent[-half:].mean()))


@dataclass
class Region:
    """A box of the unit cube, its recent (task, return) pairs and, once split, the cut and its two children."""

    low: np.ndarray
    high: np.ndarray
    points: deque
    returns: deque
    parent: int = -1
    split_dim: int = -1  #: -1 for a leaf
    threshold: float = 0.0  #: tasks with p[split_dim] < threshold go to the first child
    children: list[int] = field(default_factory=list)
    alp: float = 0.0

    @property
    def is_leaf(self) -> bool:
        return not self.children


class RIACTeacher(Teacher):
    """Robust intelligent adaptive curiosity: a tree of regions split where ALP differs most.

    :param low: lower bounds of the task parameters.
    :param high: upper bounds of the task parameters.
    :param seed: seed of the teacher's generator.
    :param reward_range: ``(r_min, r_max)`` mapping returns to [0, 1] (required; clipped outside).
    :param max_region_size: pairs a leaf holds before it tries to split (200).
    :param alp_window: returns over which a region's ALP is computed (200).
    :param n_split_attempts: random cuts tried per split (50).
    :param min_region_size: pairs each child must receive; default ``max_region_size / 20`` as in the reference.
    :param min_width: least width of a child in every dimension, as a share of the full range (1/15).
    :param discard_share: share of its oldest pairs a leaf forgets when no cut qualifies (1/4).
    :param mutation_std: std of the mutation of the worst task, as a share of each dimension's range (0.1; the
        reference's 0.1 is in raw units, see the module docstring).
    :param shares: probabilities of (region ∝ ALP, uniform, mutate the worst task): (0.7, 0.2, 0.1).
    :param leaves_only: sample among leaves only instead of all regions.
    """

    name = "riac"
    needs_reward_range = True

    def __init__(self, low: ArrayLike, high: ArrayLike, seed: int = 0, reward_range: Sequence[float] | None = None,
                 *, max_region_size: int = 200, alp_window: int = 200, n_split_attempts: int = 50,
                 min_region_size: int | None = None, min_width: float = 1 / 15, discard_share: float = 0.25,
                 mutation_std: float = 0.1, shares: Sequence[float] = (0.7, 0.2, 0.1),
                 leaves_only: bool = False) -> None:
        super().__init__(low, high, seed, reward_range)
        self.max_region_size = int(max_region_size)
        self.min_region_size = int(self.max_region_size // 20 if min_region_size is None else min_region_size)
        if self.max_region_size < 2 or not 1 <= self.min_region_size <= self.max_region_size // 2:
            raise ValueError(f"need max_region_size >= 2 and 1 <= min_region_size <= max_region_size / 2, got "
                             f"{self.max_region_size} and {self.min_region_size}")
        if alp_window < 2 or n_split_attempts < 1:
            raise ValueError(f"alp_window must be >= 2 and n_split_attempts >= 1, got {alp_window}, {n_split_attempts}")
        if not 0 < min_width < 0.5 or not 0 < discard_share < 1 or mutation_std < 0:
            raise ValueError(f"need 0 < min_width < 0.5, 0 < discard_share < 1 and mutation_std >= 0, got "
                             f"{min_width}, {discard_share}, {mutation_std}")
        shares = np.asarray(shares, dtype=np.float64)
        if shares.shape != (3,) or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
            raise ValueError(f"shares must be three non-negative probabilities summing to 1, got {shares.tolist()}")
        self.alp_window, self.n_split_attempts = int(alp_window), int(n_split_attempts)
        self.min_width, self.discard_share = float(min_width), float(discard_share)
        self.mutation_std, self.shares, self.leaves_only = float(mutation_std), shares, bool(leaves_only)
        self.regions: list[Region] = [self._region(np.zeros(self.dim), np.ones(self.dim))]
        self.n_splits = 0

    def hparams(self) -> dict[str, Any]:
        return {"max_region_size": self.max_region_size, "alp_window": self.alp_window,
                "n_split_attempts": self.n_split_attempts, "min_region_size": self.min_region_size,
                "min_width": self.min_width, "discard_share": self.discard_share, "mutation_std": self.mutation_std,
                "shares": self.shares.tolist(), "leaves_only": self.leaves_only}

    def candidates(self) -> list[int]:
        """Indices of the regions sampling chooses among."""
        return [i for i, r in enumerate(self.regions) if r.is_leaf or not self.leaves_only]

    def region_bounds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(low, high)`` of every region in task-parameter units, root first (for plots)."""
        return [(self.from_unit(r.low), self.from_unit(r.high)) for r in self.regions]

    def metrics(self) -> dict[str, float]:
        alps = [self.regions[i].alp for i in self.candidates()]
        return {**super().metrics(), "regions": float(len(self.regions)),
                "leaves": float(sum(r.is_leaf for r in self.regions)), "splits": float(self.n_splits),
                "alp_mean": float(np.mean(alps)), "alp_max": float(np.max(alps))}

    # ------------------------------------------------------------------------------------------------ learning
    def _observe(self, params: np.ndarray, episode_return: float) -> None:
        u, r = self.to_unit(params), self.normalise_return(episode_return)
        i = 0
        while True:
            region = self.regions[i]
            region.points.append(u)
            region.returns.append(r)
            region.alp = window_alp(region.returns, self.alp_window)
            if region.is_leaf:
                break
            i = region.children[0] if u[region.split_dim] < region.threshold else region.children[1]
        if len(region.returns) > self.max_region_size:
            self._split(i)

    def best_split(self, index: int) -> tuple[int, float] | None:
        """The cut (dimension, threshold in the unit cube) the region ``index`` would take now, or ``None``."""
        region = self.regions[index]
        points, returns = np.asarray(region.points), np.asarray(region.returns)
        # dimensions wide enough that both children can keep min_width of the range
        splittable = np.flatnonzero(region.high - region.low >= 2 * self.min_width)
        best, best_score = None, -np.inf
        if len(splittable) == 0:
            return None
        for _ in range(self.n_split_attempts):
            dim = int(self.rng.choice(splittable))
            threshold = float(self.rng.uniform(region.low[dim] + self.min_width, region.high[dim] - self.min_width))
            left = points[:, dim] < threshold
            n_left, n_right = int(left.sum()), int((~left).sum())
            if min(n_left, n_right) < self.min_region_size:
                continue
            gap = abs(window_alp(returns[left], self.alp_window) - window_alp(returns[~left], self.alp_window))
            score = n_left * n_right * gap
            if score > best_score:
                best, best_score = (dim, threshold), score
        return best

    def _split(self, index: int) -> None:
        cut = self.best_split(index)
        region = self.regions[index]
        if cut is None:
            # no cut qualifies: forget the oldest pairs so the leaf can try again with fresher data later
            for _ in range(int(self.max_region_size * self.discard_share)):
                region.points.popleft()
                region.returns.popleft()
            region.alp = window_alp(region.returns, self.alp_window)
            return
        dim, threshold = cut
        left_high, right_low = region.high.copy(), region.low.copy()
        left_high[dim] = right_low[dim] = threshold
        left = self._region(region.low.copy(), left_high, index)
        right = self._region(right_low, region.high.copy(), index)
        for p, r in zip(region.points, region.returns):  # keeps each child's pairs in time order
            child = left if p[dim] < threshold else right
            child.points.append(p)
            child.returns.append(r)
        for child in (left, right):
            child.alp = window_alp(child.returns, self.alp_window)
        region.split_dim, region.threshold = dim, threshold
        region.children = [len(self.regions), len(self.regions) + 1]
        self.regions += [left, right]
        self.n_splits += 1

    # ------------------------------------------------------------------------------------------------ sampling
    def _sample(self) -> np.ndarray:
        mode = self.rng.random()
        region_share, uniform_share, _ = self.shares
        if self.n_episodes == 0 or region_share <= mode < region_share + uniform_share:
            return self.uniform()
        candidates = self.candidates()
        region = self.regions[candidates[choose_proportional(self.rng, [self.regions[i].alp for i in candidates])]]
        if mode < region_share or not region.returns:
            return self.from_unit(self.rng.uniform(region.low, region.high))
        worst = region.points[int(np.argmin(region.returns))]
        mutated = self.rng.normal(worst, self.mutation_std)
        return self.from_unit(np.clip(mutated, region.low, region.high))

    # ------------------------------------------------------------------------------------------------ state
    def _region(self, low: np.ndarray, high: np.ndarray, parent: int = -1) -> Region:
        size = self.max_region_size + 1
        return Region(low, high, deque(maxlen=size), deque(maxlen=size), parent)

    def _state(self) -> dict[str, Any]:
        return {"n_splits": self.n_splits, "regions": [
            {"low": as_tensor(r.low), "high": as_tensor(r.high), "parent": r.parent, "split_dim": r.split_dim,
             "threshold": r.threshold, "children": list(r.children), "alp": r.alp,
             "points": as_tensor(np.asarray(r.points).reshape(-1, self.dim)), "returns": as_tensor(list(r.returns))}
            for r in self.regions]}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.n_splits = int(state["n_splits"])
        self.regions = []
        for s in state["regions"]:
            region = self._region(as_array(s["low"]), as_array(s["high"]), int(s["parent"]))
            region.points.extend(as_array(s["points"]).reshape(-1, self.dim))
            region.returns.extend(as_array(s["returns"]).reshape(-1).tolist())
            region.split_dim, region.threshold = int(s["split_dim"]), float(s["threshold"])
            region.children, region.alp = [int(c) for c in s["children"]], float(s["alp"])
            self.regions.append(region)
