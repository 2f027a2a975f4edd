"""The ``Teacher`` base class: a curriculum that proposes task parameters in a box and learns from returns.

A teacher sees task parameters and episode returns only, never agents (docs/ARCHITECTURE.md, "Layers"). The loop asks it
for the next task with :meth:`Teacher.sample`, runs an episode, and reports back with :meth:`Teacher.update`.

State (:meth:`Teacher.state_dict`) holds plain values and ``torch`` tensors only, so a checkpoint bundle that
carries it loads with ``torch.load(..., weights_only=True)``; a restored teacher proposes exactly the tasks the
original would have (generator state, history and any fitted mixture are all in it).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

ArrayLike = np.ndarray | Sequence[float] | torch.Tensor | float
#: how far (as a share of the box's width) reported params may stray outside the box before ``update`` refuses
#: them: float32 round trips through an env move a bound by about 1e-7 of its value
PARAM_TOLERANCE = 1e-5


def check_bounds(low: ArrayLike, high: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``low`` and ``high`` as 1-D float64 arrays; ``ValueError`` unless same shape, finite and ``low < high``."""
    lo = np.atleast_1d(np.asarray(low, dtype=np.float64)).copy()
    hi = np.atleast_1d(np.asarray(high, dtype=np.float64)).copy()
    if lo.shape != hi.shape:
        raise ValueError(f"low and high must have the same shape, got {lo.shape} and {hi.shape}")
    if lo.ndim != 1 or lo.size == 0:
        raise ValueError(f"low and high must be non-empty vectors, got shape {lo.shape}")
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError(f"low and high must be finite, got low={lo.tolist()} high={hi.tolist()}")
    if not (lo < hi).all():
        bad = np.flatnonzero(lo >= hi).tolist()
        raise ValueError(f"low must be below high in every dimension; not so in dimensions {bad} "
                         f"(low={lo.tolist()}, high={hi.tolist()})")
    return lo, hi


def check_reward_range(reward_range: Sequence[float] | None, teacher: str,
                       required: bool) -> tuple[float, float] | None:
    """``reward_range`` as ``(r_min, r_max)`` floats; ``ValueError`` if malformed, or missing where ``required``."""
    if reward_range is None:
        if required:
            raise ValueError(f"the {teacher} teacher needs reward_range=(r_min, r_max): it compares returns across "
                             "tasks on a [0, 1] scale, so give the lowest and highest episode return you expect "
                             "(returns outside are clipped)")
        return None
    try:
        r_min, r_max = (float(r) for r in reward_range)
    except (TypeError, ValueError):
        raise ValueError(f"reward_range must be a pair (r_min, r_max), got {reward_range!r}") from None
    if not (math.isfinite(r_min) and math.isfinite(r_max) and r_min < r_max):
        raise ValueError(f"reward_range must be finite with r_min < r_max, got {(r_min, r_max)}")
    return r_min, r_max


def as_array(x: Any) -> np.ndarray:
    """A float64 NumPy array from an array, a list or a (CPU) tensor: how state values come back."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def as_tensor(x: Any) -> torch.Tensor:
    """A float64 tensor: what arrays are stored as, since ``weights_only`` loading refuses NumPy arrays."""
    return torch.from_numpy(np.array(x, dtype=np.float64))


def choose_proportional(rng: np.random.Generator, weights: ArrayLike) -> int:
    """An index drawn with probability ∝ ``weights`` (negatives count as 0); uniform when they sum to 0."""
    w = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        return int(rng.integers(len(w)))
    return int(rng.choice(len(w), p=w / total))


class Teacher(ABC):
    """Proposes task parameters inside the box ``[low, high]`` and learns from the returns it gets back.

    :param low: lower bounds of the task parameters (the task family's ``param_space.low``).
    :param high: upper bounds, same shape, strictly above ``low``.
    :param seed: seed of the teacher's own ``numpy.random.Generator`` (its state is in :meth:`state_dict`).
    :param reward_range: ``(r_min, r_max)``: returns are mapped to ``(r - r_min) / (r_max - r_min)`` and clipped
        to [0, 1] before the teacher compares them (docs/ARCHITECTURE.md, "ALP-GMM and other teachers").
        Required by teachers that compare returns across tasks (ALP-GMM, RIAC, Covar-GMM); :attr:`history` keeps
        the raw returns.
    """

    #: registry name; also stored in the state, so one teacher's state is never loaded into another
    name: ClassVar[str] = "teacher"
    #: whether the constructor insists on ``reward_range``
    needs_reward_range: ClassVar[bool] = False
    #: settings added after states were first saved, with the value those older states were run with: a state
    #: that lacks one is compared as if it held that value (see :meth:`load_state_dict`)
    settings_before: ClassVar[dict[str, Any]] = {}

    def __init__(self, low: ArrayLike, high: ArrayLike, seed: int = 0,
                 reward_range: Sequence[float] | None = None) -> None:
        self.low, self.high = check_bounds(low, high)
        self.reward_range = check_reward_range(reward_range, self.name, self.needs_reward_range)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._params: list[np.ndarray] = []
        self._returns: list[float] = []

    # ----------------------------------------------------------------------------------------------- public API
    @property
    def dim(self) -> int:
        """Number of task parameters."""
        return self.low.size

    @property
    def n_episodes(self) -> int:
        """Number of episodes reported through :meth:`update`."""
        return len(self._returns)

    @property
    def history(self) -> tuple[np.ndarray, np.ndarray]:
        """Every reported ``(params [n, dim], raw returns [n])`` in order, e.g. for density plots."""
        params = np.array(self._params, dtype=np.float64).reshape(-1, self.dim)
        return params, np.array(self._returns, dtype=np.float64)

    def sample(self) -> np.ndarray:
        """Task parameters for the next episode: a float64 vector inside ``[low, high]``."""
        return np.clip(self._sample(), self.low, self.high)

    def update(self, params: ArrayLike, episode_return: float) -> None:
        """Report the return of an episode run on ``params``; ``ValueError`` for a non-finite return."""
        p = self._check_params(params)
        r = float(episode_return)
        if not math.isfinite(r):
            raise ValueError(f"{self.name} teacher: episode {self.n_episodes + 1} returned {r}; "
                             "returns must be finite")
        self._params.append(p)
        self._returns.append(r)
        self._observe(p, r)

    def task(self, params: ArrayLike) -> np.ndarray:
        """What the env takes for ``params``: the params themselves, unless the teacher searches another space than
        the env's (CLUTR searches latents and hands the env the decoded layout)."""
        return np.asarray(params, dtype=np.float64)

    @property
    def task_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The box that :meth:`task`'s values lie in: the env's task space must be this one."""
        return self.low, self.high

    def metrics(self) -> dict[str, float]:
        """Scalars worth logging (under ``curriculum/``); subclasses add their own."""
        return {"episodes": float(self.n_episodes)}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: plain values and float64 tensors only."""
        params, returns = self.history
        return {
            "name": self.name,
            "low": as_tensor(self.low),
            "high": as_tensor(self.high),
            "reward_range": None if self.reward_range is None else list(self.reward_range),
            "hparams": self.hparams(),
            "rng": self.rng.bit_generator.state,
            "params": as_tensor(params),
            "returns": as_tensor(returns),
            **self._state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; ``ValueError`` if it belongs to another teacher, box or configuration."""
        if state.get("name") != self.name:
            raise ValueError(f"cannot load the state of a {state.get('name')!r} teacher into a {self.name!r} one")
        low, high = as_array(state["low"]), as_array(state["high"])
        if not (np.array_equal(low, self.low) and np.array_equal(high, self.high)):
            raise ValueError(f"the state was saved for the box low={low.tolist()} high={high.tolist()}, "
                             f"this teacher has low={self.low.tolist()} high={self.high.tolist()}")
        saved_range = None if state["reward_range"] is None else tuple(float(r) for r in state["reward_range"])
        # resuming with other settings would silently change the curriculum: refuse instead
        mine = {"reward_range": self.reward_range, **self.hparams()}
        theirs = {"reward_range": saved_range, **self.settings_before, **state["hparams"]}
        if mine != theirs:
            diff = {k: (theirs.get(k), mine.get(k)) for k in sorted(set(mine) | set(theirs))
                    if mine.get(k) != theirs.get(k)}
            raise ValueError(f"the {self.name} teacher state was saved with other settings (saved, now): {diff}")
        self.rng.bit_generator.state = state["rng"]
        self._params = list(as_array(state["params"]).reshape(-1, self.dim))
        self._returns = as_array(state["returns"]).reshape(-1).tolist()
        self._load_state(state)

    def hparams(self) -> dict[str, Any]:
        """The constructor settings that shape the curriculum (checked on :meth:`load_state_dict`)."""
        return {}

    # ---------------------------------------------------------------------------------- helpers for subclasses
    def normalise_return(self, episode_return: float) -> float:
        """``episode_return`` mapped by ``reward_range`` to [0, 1] (clipped); unchanged without a range."""
        if self.reward_range is None:
            return float(episode_return)
        r_min, r_max = self.reward_range
        return float(np.clip((episode_return - r_min) / (r_max - r_min), 0.0, 1.0))

    def to_unit(self, params: ArrayLike) -> np.ndarray:
        """Params mapped to the unit cube [0, 1]^dim (rows or one vector)."""
        return (np.asarray(params, dtype=np.float64) - self.low) / (self.high - self.low)

    def from_unit(self, unit: ArrayLike) -> np.ndarray:
        """Inverse of :meth:`to_unit`, clipping to the cube first."""
        return self.low + np.clip(np.asarray(unit, dtype=np.float64), 0.0, 1.0) * (self.high - self.low)

    def uniform(self) -> np.ndarray:
        """A task drawn uniformly from the box."""
        return self.rng.uniform(self.low, self.high)

    # ------------------------------------------------------------------------------------ for subclasses to fill
    @abstractmethod
    def _sample(self) -> np.ndarray:
        """The next task (clipped to the box by :meth:`sample`)."""

    def _observe(self, params: np.ndarray, episode_return: float) -> None:
        """Learn from one episode, already appended to the history (raw return); by default nothing to learn."""
        return None

    def _state(self) -> dict[str, Any]:
        """State beyond generator and history."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_state` (history and generator are already restored)."""
        return None

    def _check_params(self, params: ArrayLike) -> np.ndarray:
        if isinstance(params, torch.Tensor):
            params = params.detach().cpu().numpy()
        p = np.asarray(params, dtype=np.float64).reshape(-1)
        if p.shape != self.low.shape:
            raise ValueError(f"{self.name} teacher: params must have {self.dim} values, got shape "
                             f"{np.shape(params)}")
        if not np.isfinite(p).all():
            raise ValueError(f"{self.name} teacher: params of episode {self.n_episodes + 1} are not finite: "
                             f"{p.tolist()}")
        slack = PARAM_TOLERANCE * (self.high - self.low)
        if (p < self.low - slack).any() or (p > self.high + slack).any():
            raise ValueError(f"{self.name} teacher: params {p.tolist()} of episode {self.n_episodes + 1} lie outside "
                             f"the box low={self.low.tolist()} high={self.high.tolist()}")
        return np.clip(p, self.low, self.high)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, episodes={self.n_episodes})"
