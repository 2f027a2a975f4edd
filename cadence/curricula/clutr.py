"""CLUTR's stage 2: a teacher that searches the frozen RVAE's latent space for high-regret maze layouts.

CLUTR (Azad et al., ICML 2023; DESIGN.md section 3) trains a PAIRED teacher whose actions are latents z of a
frozen recurrent VAE (:mod:`cadence.curricula.rvae`); the decoder turns z into a task. Two simplifications keep it
cheap on a CPU and inside the :class:`~cadence.curricula.base.Teacher` protocol (params = the latent vector):

* **Regret estimate, no antagonist.** PAIRED's regret (antagonist return - protagonist return) needs a second
  student, doubling training cost; a positive value loss needs the student's value function, which a teacher never
  sees (DESIGN.md section 1). We use the max-return estimate of Robust PLR's "MaxMC" with returns in place of
  values: ``regret = max(0, best return seen so far on this layout - this episode's return)``. A layout never seen
  before borrows the best return of its nearest seen layout when that one differs in at most ``neighbour_radius``
  cells; with no reference the regret is 0 (no evidence yet). It is high where the student has succeeded before
  but now fails: tasks at the edge of its competence, or ones it is forgetting. A caller that has a better signal
  (an antagonist, a value loss) passes it as ``update(z, ret, regret=...)``.
* **Search, not a PPO policy.** A diagonal Gaussian over z, updated CEM-style: every ``population`` episodes, the
  mean moves (by ``smoothing``) toward the mean of the ``elite_frac`` latents of highest regret, and the std toward
  their spread around the old mean; ``random_frac`` of the samples are uniform in the box so the search never stops
  exploring, and ``min_std`` floors the std.

Its params are latents, not a task family's box: :meth:`CLUTRTeacher.task` turns one into the layout code the maze
env takes (:mod:`cadence.envs.maze_tasks`). Build it by name with
:func:`~cadence.curricula.registry.make_layout_teacher` (``"clutr"``; ``cadence train sac --env PointMazeLayout-v0
--teacher clutr``), with :func:`make_clutr_teacher`, or directly.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cadence.curricula.base import ArrayLike, Teacher, as_array, as_tensor
from cadence.curricula.rvae import LayoutRVAE, fit_rvae
from cadence.envs.maze_tasks import AGENT, FREE, layout_code
from cadence.envs.mazes import MazeLayout, shortest_path

#: decoded layouts kept per teacher so ``update`` does not decode the latent ``sample`` already decoded
_CACHE_SIZE = 1024


def rvae_digest(rvae: LayoutRVAE) -> str:
    """A short hash of the RVAE's weights: a teacher state only makes sense with the decoder it was saved with."""
    h = hashlib.sha1()
    for name, tensor in rvae.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class CLUTRTeacher(Teacher):
    """Proposes RVAE latents z in ``[low, high]^latent_dim``; :meth:`decode` gives the layout to train on.

    :param rvae: a trained, frozen :class:`~cadence.curricula.rvae.LayoutRVAE`.
    :param low: lower bound of the latent box, a scalar or one per dimension (default ``-rvae.latent_bound``).
    :param high: upper bound (default ``+rvae.latent_bound``, the squashed latents' range).
    :param seed: seed of the teacher's generator.
    :param reward_range: optional ``(r_min, r_max)``; regrets are then computed on returns scaled to [0, 1].
    :param population: episodes per search update.
    :param elite_frac: share of a population, by regret, that the search moves toward.
    :param init_std: initial std of the search distribution (its mean starts at the box centre).
    :param min_std: floor of the std.
    :param smoothing: step of the mean and std toward the elites' (1 = jump there).
    :param random_frac: share of samples drawn uniformly from the box.
    :param neighbour_radius: the most cells in which a seen layout may differ to lend its best return.
    """

    name = "clutr"

    def __init__(self, rvae: LayoutRVAE, low: ArrayLike | None = None, high: ArrayLike | None = None, seed: int = 0,
                 reward_range: Sequence[float] | None = None, population: int = 32, elite_frac: float = 0.25,
                 init_std: float = 1.0, min_std: float = 0.2, smoothing: float = 0.5, random_frac: float = 0.1,
                 neighbour_radius: int = 2) -> None:
        dim = rvae.latent_dim
        low = -rvae.latent_bound if low is None else low
        high = rvae.latent_bound if high is None else high
        # a scalar bound stands for every latent dimension
        low, high = (np.broadcast_to(np.asarray(b, dtype=np.float64), (dim,)) for b in (low, high))
        super().__init__(low, high, seed=seed, reward_range=reward_range)
        if population < 2 or not 0 < elite_frac <= 1 or not 0 < smoothing <= 1 or not 0 <= random_frac <= 1:
            raise ValueError("CLUTR teacher needs population >= 2, 0 < elite_frac <= 1, 0 < smoothing <= 1 and "
                             f"0 <= random_frac <= 1; got {population}, {elite_frac}, {smoothing}, {random_frac}")
        if not 0 < min_std <= init_std:
            raise ValueError(f"CLUTR teacher needs 0 < min_std <= init_std, got {min_std}, {init_std}")
        self.rvae = rvae.freeze()
        self.population, self.elite_frac, self.smoothing = int(population), float(elite_frac), float(smoothing)
        self.init_std, self.min_std, self.random_frac = float(init_std), float(min_std), float(random_frac)
        self.neighbour_radius = int(neighbour_radius)
        self._digest = rvae_digest(rvae)
        self.mean = (self.low + self.high) / 2
        self.std = np.full(dim, self.init_std)
        self.generations = 0
        self._gen_z: list[np.ndarray] = []
        self._gen_regret: list[float] = []
        self._regrets: list[float] = []
        self._solvable: list[bool] = []
        self._codes = np.zeros((0, rvae.codec.n_cells), dtype=np.int64)  # seen layouts, one row each
        self._best = np.zeros(0)  # best (normalised) return per seen layout
        self._index: dict[bytes, int] = {}
        self._cache: OrderedDict[bytes, MazeLayout] = OrderedDict()
        self._given_regret: float | None = None

    # ----------------------------------------------------------------------------------------------- public API
    def decode(self, z: ArrayLike) -> MazeLayout:
        """The layout the latent ``z`` stands for (greedy decoding, repaired; the same z gives the same layout)."""
        if isinstance(z, torch.Tensor):
            z = z.detach().cpu().numpy()
        z32 = np.asarray(z, dtype=np.float32).reshape(-1)
        key = z32.tobytes()
        if key not in self._cache:
            self._cache[key] = self.rvae.decode_layouts(z32)[0]
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return self._cache[key]

    def task(self, params: ArrayLike) -> np.ndarray:
        """The code of the layout that latent ``params`` decodes to: what the maze env takes."""
        return layout_code(self.decode(params))

    @property
    def task_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.rvae.codec.n_cells
        return np.full(n, float(FREE)), np.full(n, float(AGENT))

    def update(self, params: ArrayLike, episode_return: float, regret: float | None = None) -> None:
        """Report an episode on latent ``params``; ``regret`` replaces the built-in estimate when given."""
        if regret is not None and not math.isfinite(float(regret)):
            raise ValueError(f"clutr teacher: regret must be finite, got {regret}")
        self._given_regret = None if regret is None else float(regret)
        try:
            super().update(params, episode_return)
        finally:
            self._given_regret = None

    def estimate_regret(self, layout: MazeLayout, episode_return: float) -> float:
        """``max(0, best earlier return on layout (or a near neighbour) - episode_return)``; 0 without a reference.
        Returns are normalised by ``reward_range`` when given. Reads the table, does not change it."""
        r = self.normalise_return(episode_return)
        code = layout_code(layout).astype(np.int64)
        i = self._index.get(code.tobytes())
        if i is not None:
            return max(0.0, float(self._best[i]) - r)
        if self.neighbour_radius <= 0 or len(self._best) == 0:
            return 0.0
        dist = (self._codes != code).sum(1)
        near = np.flatnonzero(dist == dist.min())
        if dist.min() > self.neighbour_radius:
            return 0.0
        return max(0.0, float(self._best[near].max()) - r)

    @property
    def regrets(self) -> np.ndarray:
        """The regret credited to every reported episode, in order."""
        return np.array(self._regrets, dtype=np.float64)

    def metrics(self) -> dict[str, float]:
        recent = self._regrets[-self.population:]
        solvable = self._solvable[-self.population:]
        return {**super().metrics(), "regret_mean": float(np.mean(recent)) if recent else 0.0,
                "solvable": float(np.mean(solvable)) if solvable else 0.0, "search_std": float(self.std.mean()),
                "generations": float(self.generations), "layouts_seen": float(len(self._best))}

    def hparams(self) -> dict[str, Any]:
        return {"population": self.population, "elite_frac": self.elite_frac, "init_std": self.init_std,
                "min_std": self.min_std, "smoothing": self.smoothing, "random_frac": self.random_frac,
                "neighbour_radius": self.neighbour_radius, "rvae": self._digest}

    # ---------------------------------------------------------------------------------------------- internals
    def _sample(self) -> np.ndarray:
        if self.rng.random() < self.random_frac:
            return self.uniform()
        return self.mean + self.std * self.rng.standard_normal(self.dim)

    def _observe(self, params: np.ndarray, episode_return: float) -> None:
        layout = self.decode(params)
        regret = self._given_regret
        if regret is None:
            regret = self.estimate_regret(layout, episode_return)
        self._remember(layout, self.normalise_return(episode_return))
        self._regrets.append(regret)
        self._solvable.append(shortest_path(layout) is not None)
        self._gen_z.append(params)
        self._gen_regret.append(regret)
        if len(self._gen_z) >= self.population:
            self._step_search()

    def _remember(self, layout: MazeLayout, r: float) -> None:
        code = layout_code(layout).astype(np.int64)
        key = code.tobytes()
        i = self._index.get(key)
        if i is None:
            self._index[key] = len(self._best)
            self._codes = np.vstack([self._codes, code[None]])
            self._best = np.append(self._best, r)
        else:
            self._best[i] = max(self._best[i], r)

    def _step_search(self) -> None:
        z, regret = np.array(self._gen_z), np.array(self._gen_regret)
        self._gen_z, self._gen_regret = [], []
        self.generations += 1
        if regret.max() <= regret.min():  # all equal: no direction to move in
            return
        n_elite = max(1, round(self.elite_frac * len(z)))
        elite = z[np.argsort(-regret, kind="stable")[:n_elite]]
        a = self.smoothing
        # the spread around the *old* mean (CMA-ES's rank-mu estimate): it stays wide while the elites all lie to
        # one side, i.e. while the search is still travelling, and shrinks once they surround the mean
        spread = np.sqrt(np.square(elite - self.mean).mean(0))
        self.mean = (1 - a) * self.mean + a * elite.mean(0)
        self.std = np.maximum(self.min_std, (1 - a) * self.std + a * spread)

    def _state(self) -> dict[str, Any]:
        return {"mean": as_tensor(self.mean), "std": as_tensor(self.std), "generations": self.generations,
                "gen_z": as_tensor(np.array(self._gen_z).reshape(-1, self.dim)),
                "gen_regret": as_tensor(self._gen_regret), "regrets": as_tensor(self._regrets),
                "solvable": torch.tensor(self._solvable, dtype=torch.bool),
                "codes": torch.from_numpy(self._codes.copy()), "best": as_tensor(self._best)}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.mean, self.std = as_array(state["mean"]), as_array(state["std"])
        self.generations = int(state["generations"])
        self._gen_z = list(as_array(state["gen_z"]).reshape(-1, self.dim))
        self._gen_regret = as_array(state["gen_regret"]).reshape(-1).tolist()
        self._regrets = as_array(state["regrets"]).reshape(-1).tolist()
        self._solvable = [bool(s) for s in state["solvable"].tolist()]
        self._codes = state["codes"].cpu().numpy().astype(np.int64).reshape(-1, self.rvae.codec.n_cells)
        self._best = as_array(state["best"]).reshape(-1)
        self._index = {row.tobytes(): i for i, row in enumerate(self._codes)}


def make_clutr_teacher(rvae: LayoutRVAE | None = None, seed: int = 0, reward_range: Sequence[float] | None = None,
                       shape: tuple[int, int] = (8, 8), rvae_kwargs: dict[str, Any] | None = None,
                       fit_kwargs: dict[str, Any] | None = None, **teacher_kwargs: Any) -> CLUTRTeacher:
    """A :class:`CLUTRTeacher` on ``rvae``; without one, first builds a :class:`LayoutRVAE` on ``shape`` grids
    (``rvae_kwargs``, DESIGN sizes by default) and trains it with :func:`fit_rvae` (``fit_kwargs``, seeded with
    ``seed``) -- minutes at DESIGN sizes on a CPU, so train once and pass the frozen model where possible."""
    if rvae is None:
        rvae = LayoutRVAE(shape, **(rvae_kwargs or {}))
        fit_rvae(rvae, **{"seed": seed, **(fit_kwargs or {})})
    return CLUTRTeacher(rvae, seed=seed, reward_range=reward_range, **teacher_kwargs)
