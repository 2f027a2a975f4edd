"""Continual memory: which transitions a fixed-size buffer keeps across a sequence of tasks
(docs/ARCHITECTURE.md, "Replay and data" and "OER: continual offline RL").

A :class:`ContinualMemory` is filled in one of two ways:

- **reservoir**: a uniform sample of every transition ever offered (Vitter's Algorithm R), blind to tasks;
- **per-task quota**: when a task ends, the capacity is split equally over the tasks seen so far and a
  :class:`Selector` decides which rows of each task to keep (:class:`RandomSelector`, :class:`CoresetSelector`,
  or :class:`ScoreSelector`, which is where OER's model-based experience selection plugs in).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch

from cadence.replay.buffer import ReplayBuffer

Transitions = dict[str, torch.Tensor]
"""Transition fields (the keys of ``ReplayBuffer.storage``), each with the rows as leading dimension."""

REQUIRED_FIELDS = ("obs", "action", "reward", "next_obs", "terminated")


def num_rows(transitions: Transitions) -> int:
    """Number of rows; raises ``ValueError`` when there are no fields or the fields disagree in length."""
    if not transitions:
        raise ValueError("transitions have no fields")
    lengths = {k: (v.shape[0] if torch.is_tensor(v) and v.dim() > 0 else None) for k, v in transitions.items()}
    if None in lengths.values():
        raise ValueError(f"every field must be a tensor with a leading row dimension, got lengths {lengths}")
    if len(set(lengths.values())) > 1:
        raise ValueError(f"transition fields have different lengths: {lengths}")
    return next(iter(lengths.values()))


def take(transitions: Transitions, idx: Any) -> Transitions:
    """The rows ``idx`` (indices, a boolean mask or a slice) of every field."""
    return {k: v[idx] for k, v in transitions.items()}


def equal_quotas(capacity: int, n_tasks: int) -> list[int]:
    """``capacity`` split over ``n_tasks`` tasks: ``capacity // n_tasks`` each, the remainder to the earliest."""
    return [capacity // n_tasks + int(i < capacity % n_tasks) for i in range(n_tasks)]


def nearest_distance(points: torch.Tensor, refs: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """Euclidean distance from each row of ``points`` to its nearest row of ``refs`` (rows flattened).

    Computed ``chunk_size`` points at a time, so memory is O(chunk_size * len(refs)), not O(len(points) * len(refs)).
    """
    if len(refs) == 0:
        raise ValueError("refs is empty: no reference rows to measure distance to")
    p = points.reshape(len(points), -1).float()
    r = refs.reshape(len(refs), -1).float().to(p.device)
    if len(p) == 0:
        return p.new_zeros(0)
    return torch.cat([torch.cdist(chunk, r).min(dim=1).values for chunk in p.split(chunk_size)])


# --- selectors ---------------------------------------------------------------------------------------------
class Selector(ABC):
    """Chooses which rows of one task's transitions to keep.

    Subclasses implement :meth:`_select`; :meth:`select` validates the input, handles ``k == 0`` and ``k >= n``,
    and checks the answer, so a new policy (e.g. MBES) only has to rank rows.
    """

    def select(self, candidates: Transitions, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Indices of ``min(k, n)`` distinct rows of ``candidates``, ascending so kept rows stay in their order."""
        n = num_rows(candidates)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        device = next(iter(candidates.values())).device
        if k >= n:
            return torch.arange(n, device=device)
        if k == 0:
            return torch.zeros(0, dtype=torch.int64, device=device)
        idx = self._select(candidates, int(k), generator).to(device=device, dtype=torch.int64)
        if idx.shape != (k,) or torch.unique(idx).numel() != k or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"{type(self).__name__} must return {k} distinct row indices in [0, {n}), got {idx}")
        return torch.sort(idx).values

    @abstractmethod
    def _select(self, candidates: Transitions, k: int, generator: torch.Generator | None) -> torch.Tensor:
        """``k`` distinct row indices; called only with ``0 < k < n``."""


def _rand_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


class RandomSelector(Selector):
    """Uniformly random rows, without replacement."""

    def _select(self, candidates: Transitions, k: int, generator: torch.Generator | None) -> torch.Tensor:
        n = num_rows(candidates)
        return torch.randperm(n, generator=generator, device=_rand_device(generator))[:k]


class CoresetSelector(Selector):
    """Greedy k-center coreset: each pick is the row farthest from every row picked so far.

    Rows are compared by Euclidean distance on the concatenated, flattened ``fields``, each feature standardised
    over the candidates so that no feature dominates through its units. The first pick is drawn from the generator;
    the rest is deterministic. The coverage radius (largest distance from a row to its nearest pick) is at most
    twice the optimum (Gonzalez, 1985). Cost: O(n k d) time, O(n d) memory; no n x n distance matrix is formed.
    """

    def __init__(self, fields: Sequence[str] = ("obs", "action")):
        self.fields = tuple(fields)

    def _select(self, candidates: Transitions, k: int, generator: torch.Generator | None) -> torch.Tensor:
        n = num_rows(candidates)
        missing = [f for f in self.fields if f not in candidates]
        if missing:
            raise ValueError(f"CoresetSelector needs fields {missing}, candidates have {sorted(candidates)}")
        x = torch.cat([candidates[f].reshape(n, -1).float() for f in self.fields], dim=1)
        x = (x - x.mean(0)) / x.std(0, unbiased=False).clamp_min(1e-8)  # constant features stay 0
        sq_norm = (x * x).sum(1)
        min_dist = torch.full((n,), float("inf"), device=x.device)
        picks = torch.empty(k, dtype=torch.int64)
        pick = int(torch.randint(n, (1,), generator=generator, device=_rand_device(generator)))
        for i in range(k):
            picks[i] = pick
            # |x - c|^2 = |x|^2 - 2 x.c + |c|^2 is one mat-vec: no n x d temporary per step
            dist = (sq_norm - 2 * (x @ x[pick]) + sq_norm[pick]).clamp_min_(0)
            min_dist = torch.minimum(min_dist, dist)
            min_dist[pick] = -1.0  # never pick a row twice, even among exact duplicates
            pick = int(min_dist.argmax())  # first index on ties
        return picks


class ScoreSelector(Selector):
    """Keeps the ``k`` rows with the highest ``score_fn(candidates)`` (shape ``[n]``); ties go to the earlier row.

    OER's model-based experience selection (MBES) plugs in here: roll the current policy out in a learned model
    and score each candidate by minus the distance from its state to the nearest model-visited state, e.g.
    ``ScoreSelector(lambda c: -nearest_distance(c["obs"], visited_states))``, so the kept transitions are those
    closest to where the policy goes. ``candidates["task_id"]`` says which task's policy to roll out.
    """

    def __init__(self, score_fn: Callable[[Transitions], torch.Tensor]):
        self.score_fn = score_fn

    def _select(self, candidates: Transitions, k: int, generator: torch.Generator | None) -> torch.Tensor:
        n = num_rows(candidates)
        scores = torch.as_tensor(self.score_fn(candidates))
        if scores.shape != (n,):
            raise ValueError(f"score_fn must return one score per row, shape ({n},), got {tuple(scores.shape)}")
        if torch.isnan(scores).any():
            raise ValueError("score_fn returned NaN scores")
        return torch.sort(scores, descending=True, stable=True).indices[:k]


class NearestSelector(ScoreSelector):
    """Keeps the rows whose states lie nearest a task's reference states: OER's model-based experience selection
    (MBES) when the references are the real states a policy reaches in a learned model (``agents.oer``).

    ``references[task_id]`` are ``[m, obs_dim]`` states; a candidate's score is minus the distance from its ``obs``
    to the nearest reference of its task (every candidate of one call belongs to one task, as
    :meth:`ContinualMemory.end_task` calls it). Distances are measured after standardising each feature by
    ``scale`` (e.g. the data's std), so no feature dominates through its units. Batched torch distances
    (:func:`nearest_distance`), chunked: O(n m d) time, O(chunk m) memory.

    Ties go to the earlier row, or, with ``random_ties``, to a uniformly random one: when the references are rows
    of the candidates themselves (MBES's visited states) they all tie at distance 0, and a quota smaller than
    them should keep a uniform sample of them, not the ones that come first in the data.
    """

    def __init__(self, references: dict[int, torch.Tensor] | None = None, scale: torch.Tensor | None = None,
                 chunk_size: int = 4096, random_ties: bool = False):
        super().__init__(self.scores)
        self.references: dict[int, torch.Tensor] = dict(references or {})
        self.scale = scale
        self.chunk_size = int(chunk_size)
        self.random_ties = bool(random_ties)

    def _select(self, candidates: Transitions, k: int, generator: torch.Generator | None) -> torch.Tensor:
        if not self.random_ties:
            return super()._select(candidates, k, generator)
        # rank a random permutation of the rows with a stable sort: equal scores keep the permutation's order
        perm = torch.randperm(num_rows(candidates), generator=generator, device=_rand_device(generator))
        perm = perm.to(next(iter(candidates.values())).device)
        return perm[super()._select(take(candidates, perm), k, generator).to(perm.device)]

    def scores(self, candidates: Transitions) -> torch.Tensor:
        """Minus the distance from each candidate's state to the nearest reference state of its task."""
        tasks = torch.unique(candidates["task_id"]).tolist() if "task_id" in candidates else []
        if len(tasks) != 1:
            raise ValueError(f"NearestSelector scores one task's rows at a time, got task ids {tasks}")
        if tasks[0] not in self.references:
            raise ValueError(f"no reference states for task {tasks[0]} (have {sorted(self.references)})")
        obs, refs = candidates["obs"].reshape(num_rows(candidates), -1).float(), self.references[tasks[0]].float()
        if self.scale is not None:
            scale = self.scale.reshape(1, -1).float().clamp_min(1e-8)
            obs, refs = obs / scale.to(obs.device), refs / scale.to(refs.device)
        return -nearest_distance(obs, refs, self.chunk_size)


# --- memory ------------------------------------------------------------------------------------------------
class ContinualMemory:
    """Fixed-capacity replay memory over a task sequence, held in a :class:`ReplayBuffer` (``.buffer``).

    - ``selector=None`` (:meth:`reservoir`): every transition offered through :meth:`add` or :meth:`end_task`
      enters a reservoir sample; after N offers each is in memory with probability ``min(1, capacity / N)``.
    - a :class:`Selector` (:meth:`per_task`): data arrives one finished task at a time through :meth:`end_task`;
      each task gets an equal share of the capacity and the selector picks its rows.

    Memory rows are not contiguous episodes: draw them with :meth:`sample`, not ``buffer.sample_sequences``.

    Args:
        capacity: the most transitions kept.
        obs_shape, act_shape, device: as for :class:`ReplayBuffer`.
        selector: the per-task selection policy, or ``None`` for reservoir sampling.
        seed: seeds the memory's own generator, used for reservoir draws and handed to the selector.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: int | Sequence[int],
        act_shape: int | Sequence[int],
        selector: Selector | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs_shape, self.act_shape, self.device = obs_shape, act_shape, torch.device(device)
        self.selector = selector
        self.buffer = ReplayBuffer(self.capacity, obs_shape, act_shape, self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.offered = 0  # transitions offered to the reservoir so far
        self.task_order: list[int] = []  # task ids given to end_task, in order

    @classmethod
    def reservoir(
        cls, capacity: int, obs_shape: int | Sequence[int], act_shape: int | Sequence[int], seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> ContinualMemory:
        """A reservoir sample over every transition offered, across all tasks."""
        return cls(capacity, obs_shape, act_shape, None, device, seed)

    @classmethod
    def per_task(
        cls, capacity: int, obs_shape: int | Sequence[int], act_shape: int | Sequence[int], selector: Selector,
        seed: int = 0, device: str | torch.device = "cpu",
    ) -> ContinualMemory:
        """An equal quota per task, filled by ``selector``."""
        return cls(capacity, obs_shape, act_shape, selector, device, seed)

    @property
    def mode(self) -> str:
        return "reservoir" if self.selector is None else "per_task"

    def __len__(self) -> int:
        return len(self.buffer)

    # --- filling -------------------------------------------------------------------------------------------
    def add(self, batch: Transitions) -> None:
        """Offer transitions to the reservoir in row order (reservoir mode only).

        Offering a batch draws the same random numbers, and gives the same memory, as offering its rows one by one.
        """
        if self.selector is not None:
            raise ValueError("add() is for reservoir memories; a per-task memory takes a task's data at end_task()")
        rows = self._complete(batch)
        n = num_rows(rows)
        fill = min(self.capacity - len(self.buffer), n)  # until the memory is full, everything is kept
        if fill > 0:
            self._append(take(rows, slice(0, fill)))
        if n > fill:
            # Algorithm R: the t-th offer (0-based) lands in slot j ~ U{0..t}, and is kept if j < capacity
            t = self.offered + fill + torch.arange(n - fill, dtype=torch.float64)
            slot = (torch.rand(n - fill, generator=self.generator, dtype=torch.float64) * (t + 1)).long()
            src = torch.nonzero(slot < self.capacity).squeeze(1)
            slot, order = torch.sort(slot[src], stable=True)
            src = src[order] + fill
            # a slot hit twice in one batch must end with the later row, as if the rows came one by one
            last = torch.ones_like(slot, dtype=torch.bool)
            last[:-1] = slot[1:] != slot[:-1]
            self._write(slot[last], take(rows, src[last]))
        self.offered += n

    def end_task(self, task_data: Transitions, task_id: int) -> None:
        """Hand over a finished task's transitions; their ``task_id`` field is set to ``task_id``.

        Reservoir: the rows are offered to the reservoir. Per-task quota: the capacity is re-split equally over
        the tasks seen so far (:func:`equal_quotas`), each stored task is shrunk to its new quota by the selector
        applied to its stored rows, and the selector picks the new task's rows from ``task_data``. A quota a task
        cannot fill (too few rows) stays empty.
        """
        task_id = int(task_id)
        if task_id in self.task_order:
            raise ValueError(f"task_id {task_id} was already given to end_task (tasks so far: {self.task_order})")
        rows = self._complete(task_data, task_id)
        if self.selector is None:
            self.add(rows)
        else:
            quotas = equal_quotas(self.capacity, len(self.task_order) + 1)
            stored = self.transitions()
            kept = []
            for old_id, quota in zip(self.task_order, quotas):
                own = take(stored, stored["task_id"] == old_id)
                kept.append(take(own, self.selector.select(own, quota, self.generator)))
            kept.append(take(rows, self.selector.select(rows, quotas[-1], self.generator)))
            merged = {k: torch.cat([part[k] for part in kept]) for k in rows}
            self.buffer = ReplayBuffer(self.capacity, self.obs_shape, self.act_shape, self.device)
            if num_rows(merged) > 0:
                self._append(merged)
        self.task_order.append(task_id)

    # --- reading -------------------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> Transitions:
        """Draw ``n`` transitions uniformly (with replacement) from the memory."""
        return self.buffer.sample(n, generator)

    def transitions(self) -> Transitions:
        """Every stored transition (views into the buffer)."""
        return take(self.buffer.storage, slice(0, len(self.buffer)))

    def task_counts(self) -> dict[int, int]:
        """Stored transitions per task id: tasks given to end_task first (0 if all evicted), then any others."""
        ids, counts = torch.unique(self.transitions()["task_id"], return_counts=True)
        out = dict.fromkeys(self.task_order, 0)
        out.update(zip(ids.tolist(), counts.tolist()))
        return out

    # --- persistence ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "mode": self.mode,
            "offered": self.offered,
            "task_order": list(self.task_order),
            "generator": self.generator.get_state(),
            "buffer": self.buffer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["capacity"], state["mode"]) != (self.capacity, self.mode):
            raise ValueError(
                f"memory state has capacity/mode {state['capacity']}/{state['mode']}, "
                f"this memory has {self.capacity}/{self.mode}"
            )
        self.buffer = ReplayBuffer(self.capacity, self.obs_shape, self.act_shape, self.device)
        self.buffer.load_state_dict(state["buffer"])
        self.generator.set_state(state["generator"])
        self.offered = int(state["offered"])
        self.task_order = [int(t) for t in state["task_order"]]

    # --- helpers -------------------------------------------------------------------------------------------
    def _complete(self, batch: Transitions, task_id: int | None = None) -> Transitions:
        """Validated rows with every storage field, on the memory's device; absent optional fields are zero."""
        missing = [f for f in REQUIRED_FIELDS if f not in batch]
        unknown = [f for f in batch if f not in self.buffer.storage]
        if missing or unknown:
            optional = [f for f in self.buffer.storage if f not in REQUIRED_FIELDS]
            raise ValueError(
                f"transitions are missing fields {missing} / have unknown fields {unknown}; "
                f"expected {list(REQUIRED_FIELDS)} plus optionally {optional}"
            )
        rows = {k: torch.as_tensor(v).to(self.device) for k, v in batch.items()}
        n = num_rows(rows)
        for k, store in self.buffer.storage.items():
            if k not in rows:
                rows[k] = torch.zeros((n, *store.shape[1:]), dtype=store.dtype, device=self.device)
        if task_id is not None:
            rows["task_id"] = torch.full((n,), task_id, dtype=torch.int64, device=self.device)
        return rows

    def _append(self, rows: Transitions) -> None:
        self.buffer.add(**{k: v.cpu() for k, v in rows.items()})

    def _write(self, slots: torch.Tensor, rows: Transitions) -> None:
        # the buffer's public API only appends; a reservoir replaces given slots of its storage in place
        for k, store in self.buffer.storage.items():
            store[slots.to(store.device)] = rows[k].to(store.device, store.dtype).reshape(len(slots), *store.shape[1:])
