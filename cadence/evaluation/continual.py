"""Continual-learning evaluation: the performance matrix of a task sequence, its metrics and TensorBoard logging.

A run trains tasks 0..T-1 in order. ``p[i, j]`` is the performance on task j measured at the end of training task i
(the matrix; NaN where not measured), and the history holds every evaluation row with its global step: periodic
rows measured inside a task (for the stability gap and live curves) and the task-end rows themselves.

Sources (docs/ARCHITECTURE.md, "Continual metrics"):

- Continual World, Wołczyk et al., arXiv 2105.10919: average performance, forgetting, forward transfer;
- Chaudhry et al., arXiv 1801.10112 (RWalk): forgetting as the best earlier performance minus the final one;
- the stability gap, De Lange et al., arXiv 2205.13452: min-ACC, WC-ACC and the stability gap;
- LIBERO, Liu et al., arXiv 2306.03310, section 5: FWT, NBT and AUC.

Every metric handles both directions. With ``higher_is_better`` (returns, success) it is as published; for errors
(``higher_is_better=False``, e.g. a world model's prediction error) differences are sign-flipped so that a positive
forgetting, forward transfer, stability gap or NBT means the same as for returns (forgot, helped, dipped, forgot),
and "worst" and "best" mean the largest and smallest error. Averages (P, min-ACC, WC-ACC, LIBERO FWT and AUC) stay
in the metric's own units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cadence.io import atomic_write_json, read_json

#: The keys :func:`summary` can return, in the order it returns them.
SUMMARY_KEYS = ("average_performance", "forgetting", "forgetting_chaudhry", "forward_transfer", "forward_transfer_auc",
                "min_acc", "wc_acc", "stability_gap", "libero_fwt", "libero_nbt", "libero_auc")


# ---------------------------------------------------------------------------------------------------------------
# the record
# ---------------------------------------------------------------------------------------------------------------

@dataclass(eq=False)  # arrays inside: compare fields explicitly
class EvaluationRow:
    """One evaluation of every task: at global ``step``, while (or, with ``final``, at the end of) training task
    ``task_index``. ``values[j]`` is the performance on task j, NaN where task j was not evaluated."""

    step: int
    task_index: int
    values: np.ndarray
    final: bool = False


def _float_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _as_row(values: Sequence[float] | np.ndarray, n_tasks: int, what: str) -> np.ndarray:
    """``values`` as a float row of length ``n_tasks`` (None read as NaN); infinities are refused."""
    items = np.asarray(values, dtype=object)
    if items.ndim != 1 or items.shape[0] != n_tasks:
        raise ValueError(f"{what} has {items.size} values, expected {n_tasks} (one per task)")
    row = np.array([np.nan if v is None else v for v in items], dtype=np.float64)
    if np.isinf(row).any():
        raise ValueError(f"{what} holds an infinite value: {row.tolist()}")
    return row


@dataclass(eq=False)
class ContinualEvaluation:
    """The evaluations of one continual run over ``tasks`` (labels in training order).

    Attributes:
        tasks: task labels, in training order.
        metric_name: what the values are, e.g. ``"return"``, ``"success"``, ``"model_error"``.
        higher_is_better: True for returns and success, False for errors (see the module docstring).
        matrix: ``[T, T]``; ``matrix[i, j]`` is the performance on task j after training task i, NaN where not
            measured (rows are filled as training proceeds).
        history: every evaluation row in the order measured, periodic ones and task-end ones (``final``).
    """

    tasks: list[str]
    metric_name: str = "return"
    higher_is_better: bool = True
    matrix: np.ndarray | None = None
    history: list[EvaluationRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tasks = [str(t) for t in self.tasks]
        if not self.tasks:
            raise ValueError("a continual evaluation needs at least one task")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"task labels must be unique, got {self.tasks}")
        n = len(self.tasks)
        if self.matrix is None:
            self.matrix = np.full((n, n), np.nan)
        else:
            self.matrix = check_matrix(self.matrix)
            if self.matrix.shape != (n, n):
                raise ValueError(f"matrix is {self.matrix.shape[0]}x{self.matrix.shape[1]}, expected {n}x{n} "
                                 f"(one row and one column per task)")

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def periodic(self) -> list[EvaluationRow]:
        """The rows measured inside a task (not at its end)."""
        return [row for row in self.history if not row.final]

    @property
    def n_finished(self) -> int:
        """How many tasks have their task-end row, i.e. a measured diagonal cell (they finish in order)."""
        done = np.isfinite(np.diag(self.matrix))
        return int(np.argmin(done)) if not done.all() else self.n_tasks

    def add_row(self, task_index: int, values: Sequence[float] | np.ndarray, step: int | None = None,
                final: bool = False) -> EvaluationRow | None:
        """Record one evaluation of every task (NaN for tasks not evaluated) while training ``task_index``.

        ``final`` marks the evaluation at the end of that task: it fills ``matrix[task_index]`` and must measure the
        task itself. Tasks finish in order. With a ``step`` the row also joins the history (steps and training tasks
        never go back); a periodic row needs one. Returns the history row, or None for a final row without a step.
        """
        if isinstance(task_index, bool) or int(task_index) != task_index or not 0 <= task_index < self.n_tasks:
            raise ValueError(f"task_index must be an integer in [0, {self.n_tasks}), got {task_index!r}")
        task_index = int(task_index)
        row = _as_row(values, self.n_tasks, f"the row for task {task_index} ({self.tasks[task_index]!r})")
        if final:
            self._check_final(task_index, row)
        if step is None:
            if not final:
                raise ValueError("a periodic row needs its global step")
            self.matrix[task_index] = row
            return None
        entry = EvaluationRow(self._check_step(step, task_index), task_index, row, bool(final))
        if final:
            self.matrix[task_index] = row
        self.history.append(entry)
        return entry

    def _check_final(self, task_index: int, row: np.ndarray) -> None:
        if np.isfinite(self.matrix[task_index, task_index]):
            raise ValueError(f"task {task_index} ({self.tasks[task_index]!r}) already has its task-end row")
        if self.n_finished < task_index:
            raise ValueError(f"task {task_index} cannot end before task {self.n_finished} "
                             f"({self.tasks[self.n_finished]!r}): tasks finish in training order")
        if not np.isfinite(row[task_index]):
            raise ValueError(f"the task-end row of task {task_index} must measure that task (got NaN)")

    def _check_step(self, step: int, task_index: int) -> int:
        if isinstance(step, bool) or int(step) != step or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        if self.history:
            last = self.history[-1]
            if step < last.step:
                raise ValueError(f"step {step} comes before the last recorded step {last.step}")
            if task_index < last.task_index:
                raise ValueError(f"a row for task {task_index} after rows for task {last.task_index}: "
                                 "tasks are trained in order")
        return int(step)

    def prefix(self, k: int) -> ContinualEvaluation:
        """The record as if the sequence were its first ``k`` tasks: the metrics of a run in progress."""
        if not 1 <= k <= self.n_tasks:
            raise ValueError(f"k must be in [1, {self.n_tasks}], got {k}")
        history = [EvaluationRow(r.step, r.task_index, r.values[:k].copy(), r.final)
                   for r in self.history if r.task_index < k]
        return ContinualEvaluation(self.tasks[:k], self.metric_name, self.higher_is_better,
                                   self.matrix[:k, :k].copy(), history)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; NaN (not measured) is written as null."""
        return {
            "tasks": list(self.tasks), "metric_name": self.metric_name, "higher_is_better": self.higher_is_better,
            "matrix": [[_float_or_none(v) for v in row] for row in self.matrix],
            "history": [{"step": r.step, "task_index": r.task_index, "final": r.final,
                         "values": [_float_or_none(v) for v in r.values]} for r in self.history],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContinualEvaluation:
        """The inverse of :meth:`to_dict`; raises ValueError on a missing key or a malformed matrix or row."""
        missing = [k for k in ("tasks", "matrix") if k not in data]
        if missing:
            raise ValueError(f"a continual evaluation needs {', '.join(missing)}")
        record = cls(list(data["tasks"]), str(data.get("metric_name", "return")),
                     bool(data.get("higher_is_better", True)), check_matrix(data["matrix"]))
        for i, row in enumerate(data.get("history", [])):
            task, step = int(row["task_index"]), int(row["step"])
            if not 0 <= task < record.n_tasks or step < 0:
                raise ValueError(f"history row {i} has task_index {task} (expected [0, {record.n_tasks})) "
                                 f"and step {step} (expected >= 0)")
            values = _as_row(row["values"], record.n_tasks, f"history row {i}")
            record.history.append(EvaluationRow(step, task, values, bool(row.get("final", False))))
        return record

    def save(self, path: str | Path) -> Path:
        """Write the record as JSON, atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ContinualEvaluation:
        return cls.from_dict(read_json(path))


@dataclass
class TaskReference:
    """Single-task reference runs (each task trained alone from scratch), for forward transfer.

    ``final[i]`` is task i's performance at the end of its reference run; ``auc[i]`` the normalised area under its
    [0, 1] performance curve (:func:`normalized_auc`), needed only by :func:`forward_transfer_auc`.
    """

    final: Sequence[float]
    auc: Sequence[float] | None = None

    @classmethod
    def from_curves(cls, curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> TaskReference:
        """From one ``(steps, values)`` curve per task: the last value and the normalised AUC."""
        return cls([float(np.asarray(v, dtype=np.float64)[-1]) for _, v in curves],
                   [normalized_auc(s, v) for s, v in curves])


# ---------------------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------------------

def check_matrix(matrix: Any) -> np.ndarray:
    """``matrix`` as a square float array (None read as NaN); raises ValueError if it is not square or holds an
    infinity."""
    rows = np.asarray(matrix, dtype=object)
    if rows.ndim != 2 or rows.shape[0] != rows.shape[1] or rows.shape[0] == 0:
        raise ValueError(f"the performance matrix must be square T x T (T >= 1), got shape {rows.shape}")
    out = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
    if np.isinf(out).any():
        raise ValueError("the performance matrix holds an infinite value")
    return out


Data = ContinualEvaluation | np.ndarray | Sequence[Sequence[float]]


def _unpack(data: Data, higher_is_better: bool | None) -> tuple[np.ndarray, bool, list[str]]:
    """(matrix, higher_is_better, task labels) of a record or a raw matrix (labels "task 0", ...)."""
    if isinstance(data, ContinualEvaluation):
        if higher_is_better is not None and higher_is_better != data.higher_is_better:
            raise ValueError(f"higher_is_better={higher_is_better} contradicts the record's "
                             f"{data.higher_is_better} ({data.metric_name})")
        return data.matrix, data.higher_is_better, data.tasks
    matrix = check_matrix(data)
    return matrix, True if higher_is_better is None else higher_is_better, [f"task {i}" for i in range(len(matrix))]


def _need(matrix: np.ndarray, cells: Sequence[tuple[int, int]], what: str, tasks: Sequence[str]) -> None:
    """Raise a ValueError naming the first cell of ``cells`` that is NaN (not measured)."""
    for i, j in cells:
        if not np.isfinite(matrix[i, j]):
            raise ValueError(f"{what} needs p[{i}, {j}] (after training {tasks[i]!r}, evaluated on {tasks[j]!r}), "
                             "which is NaN: not measured")


def _lower_triangle(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1)]


def _sign(higher_is_better: bool) -> float:
    return 1.0 if higher_is_better else -1.0


def _worst(values: np.ndarray, higher_is_better: bool) -> float:
    return float(np.min(values) if higher_is_better else np.max(values))


# ---------------------------------------------------------------------------------------------------------------
# Continual World metrics
# ---------------------------------------------------------------------------------------------------------------

def average_performance(data: Data, higher_is_better: bool | None = None) -> float:
    """P = (1/T) Σ_i p[T-1, i]: the mean over tasks of the performance at the end of the run (the last row)."""
    matrix, _, tasks = _unpack(data, higher_is_better)
    n = len(matrix)
    _need(matrix, [(n - 1, j) for j in range(n)], "average performance", tasks)
    return float(np.mean(matrix[-1]))


def forgetting(data: Data, higher_is_better: bool | None = None) -> np.ndarray:
    """Continual World's forgetting per task i < T-1: F_i = p[i, i] - p[T-1, i], the performance lost between the
    end of its own training and the end of the run (for errors, p[T-1, i] - p[i, i]); positive means forgotten. Its
    mean is the reported ``forgetting``; :func:`forgetting_chaudhry` is the best-earlier variant. Empty for one
    task."""
    matrix, better, tasks = _unpack(data, higher_is_better)
    n = len(matrix)
    _need(matrix, [c for i in range(n - 1) for c in ((i, i), (n - 1, i))], "forgetting", tasks)
    return _sign(better) * (np.diag(matrix)[:-1] - matrix[-1, :-1])


def forgetting_chaudhry(data: Data, higher_is_better: bool | None = None) -> np.ndarray:
    """Chaudhry et al.'s forgetting (arXiv 1801.10112, eq. 7) per task j < T-1: the best performance on task j at
    any task end before the last, minus its performance at the end,

        f_j = max_{l in [j, T-2]} p[l, j] - p[T-1, j]

    (for errors, the final error minus the smallest earlier one). Unlike :func:`forgetting` (Continual World's, from
    the task's own end), a task that improved while later tasks trained and then lost it counts as forgotten, and
    the value is never below 0 for a task whose final value is its best. Its mean is the reported figure."""
    matrix, better, tasks = _unpack(data, higher_is_better)
    n = len(matrix)
    _need(matrix, [(i, j) for j in range(n - 1) for i in range(j, n)], "Chaudhry forgetting", tasks)
    sign = _sign(better)
    best = np.array([np.max(sign * matrix[j:n - 1, j]) for j in range(n - 1)])
    return best - sign * matrix[-1, :-1]


def forward_transfer(data: Data, reference: TaskReference | Sequence[float],
                     higher_is_better: bool | None = None) -> np.ndarray:
    """The matrix form used when only task-end values exist: FT_i = p[i, i] - ref_i, with ref_i the end
    performance of a single-task run of task i from scratch (for errors, ref_i - p[i, i]); positive means the
    earlier tasks helped. Its mean is the reported forward transfer."""
    matrix, better, tasks = _unpack(data, higher_is_better)
    ref = _reference_values(reference.final if isinstance(reference, TaskReference) else reference, len(matrix),
                            "reference final performance")
    _need(matrix, [(i, i) for i in range(len(matrix))], "forward transfer", tasks)
    return _sign(better) * (np.diag(matrix) - ref)


def _reference_values(values: Sequence[float], n: int, what: str) -> np.ndarray:
    ref = np.asarray(values, dtype=np.float64)
    if ref.shape != (n,):
        raise ValueError(f"{what} has {ref.size} values, expected {n} (one per task)")
    if not np.isfinite(ref).all():
        raise ValueError(f"{what} holds NaN or an infinity: {ref.tolist()}")
    return ref


def normalized_auc(steps: Sequence[float], values: Sequence[float]) -> float:
    """The mean of a performance curve over its own step range: trapz(values, steps) / (steps[-1] - steps[0]);
    a single point (or a zero range) gives its value. Evaluate at a task's first step to cover all of it."""
    x = np.asarray(steps, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"a curve needs as many steps as values (at least one), got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a curve's steps and values must be finite")
    if np.any(np.diff(x) < 0):
        raise ValueError("a curve's steps must not decrease")
    if x[-1] == x[0]:
        return float(y.mean())
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def task_curve(record: ContinualEvaluation, task: int) -> tuple[np.ndarray, np.ndarray]:
    """Task ``task``'s own performance while it trains: the ``(steps, values)`` of its history rows (periodic and
    task-end) where it was measured."""
    rows = [r for r in record.history if r.task_index == task and np.isfinite(r.values[task])]
    return (np.array([r.step for r in rows], dtype=np.float64), np.array([r.values[task] for r in rows]))


def forward_transfer_auc(record: ContinualEvaluation, reference: TaskReference | Sequence[float]) -> np.ndarray:
    """Continual World's forward transfer: FT_i = (AUC_i - AUC_i^ref) / (1 - AUC_i^ref).

    AUC_i is the :func:`normalized_auc` of task i's performance while it trains in the continual run (its history
    rows), AUC_i^ref that of a single-task run from scratch (``reference.auc``, or the AUCs themselves). Both curves
    must be normalised to [0, 1] with higher better (e.g. success rates): for returns or errors normalise first.
    Positive means the earlier tasks made task i learn faster. Raises ValueError for a lower-is-better record, a
    task with no history row, a value outside [0, 1], or AUC_i^ref = 1 (the formula is undefined).
    """
    if not record.higher_is_better:
        raise ValueError("forward_transfer_auc needs [0, 1] performance with higher better; normalise "
                         f"{record.metric_name} to a success-like score first")
    ref = reference.auc if isinstance(reference, TaskReference) else reference
    if ref is None:
        raise ValueError("the reference has no AUCs: build it with TaskReference.from_curves")
    ref = _reference_values(ref, record.n_tasks, "reference AUC")
    aucs = np.empty(record.n_tasks)
    for i in range(record.n_tasks):
        steps, values = task_curve(record, i)
        if steps.size == 0:
            raise ValueError(f"task {i} ({record.tasks[i]!r}) has no history row measuring it while it trains")
        aucs[i] = normalized_auc(steps, values)
    if np.any((aucs < 0) | (aucs > 1)) or np.any((ref < 0) | (ref > 1)):
        raise ValueError(f"AUCs must lie in [0, 1] (normalised performance), got {aucs.tolist()} and reference "
                         f"{ref.tolist()}")
    if np.any(ref >= 1):
        raise ValueError(f"forward transfer is undefined where the reference AUC is 1 (tasks "
                         f"{np.flatnonzero(ref >= 1).tolist()})")
    return (aucs - ref) / (1 - ref)


# ---------------------------------------------------------------------------------------------------------------
# stability gap metrics (De Lange et al.)
# ---------------------------------------------------------------------------------------------------------------

def _rows_after(data: Data, higher_is_better: bool | None) -> tuple[np.ndarray, bool, list[str], list]:
    """Matrix, direction, labels and ``(task_index, final, values)`` of every evaluation: the history rows of a
    record plus the task-end rows of the matrix (a raw matrix has only those)."""
    matrix, better, tasks = _unpack(data, higher_is_better)
    rows = [(i, True, matrix[i]) for i in range(len(matrix))]
    if isinstance(data, ContinualEvaluation):
        rows += [(r.task_index, r.final, r.values) for r in data.history]
    return matrix, better, tasks, rows


def _check_k(k: int | None, n: int) -> int:
    k = n if k is None else k
    if not 1 <= k <= n:
        raise ValueError(f"k (tasks learned so far) must be in [1, {n}], got {k}")
    return k


def worst_after(data: Data, k: int | None = None, higher_is_better: bool | None = None,
                periodic_only: bool = False, what: str = "min-ACC") -> np.ndarray:
    """Per old task j < k-1: min over every evaluation (periodic or task-end) made while training a later task
    i, j < i <= k-1, of the performance on task j (for errors, the maximum error). With ``periodic_only``, only the
    periodic rows count (NaN where a task has none)."""
    matrix, better, tasks, rows = _rows_after(data, higher_is_better)
    k = _check_k(k, len(matrix))
    _need(matrix, [(i, j) for i in range(k) for j in range(i)], what, tasks)
    out = np.full(k - 1, np.nan)
    for j in range(k - 1):
        seen = [v[j] for i, final, v in rows if j < i <= k - 1 and not (periodic_only and final) and np.isfinite(v[j])]
        if seen:
            out[j] = _worst(np.asarray(seen), better)
    return out


def min_acc(data: Data, k: int | None = None, higher_is_better: bool | None = None) -> float:
    """min-ACC after learning k tasks (default all):

        min-ACC_k = 1/(k-1) Σ_{j<k-1} min_{n_j < t <= t_k} p_j(t),

    the worst performance on each old task j at any evaluation after its own training ended (n_j, its task-end
    step) up to the end of task k-1 (t_k), periodic ones included, averaged over old tasks (0-based j). For errors
    the worst is the largest error. NaN for k = 1 (no old task)."""
    worst = worst_after(data, k, higher_is_better)
    return float(np.mean(worst)) if worst.size else math.nan


def wc_acc(data: Data, k: int | None = None, higher_is_better: bool | None = None) -> float:
    """Worst-case accuracy after learning k tasks (default all):

        WC-ACC_k = (1/k) a_{k,k} + (1 - 1/k) min-ACC_k,

    with a_{k,k} = p[k-1, k-1] the performance on the k-th task at the end of its training and min-ACC_k as in
    :func:`min_acc` (1-based k as in the paper). For k = 1 it is a_{1,1}."""
    matrix, _, tasks = _unpack(data, higher_is_better)
    k = _check_k(k, len(matrix))
    _need(matrix, [(k - 1, k - 1)], "WC-ACC", tasks)
    current = float(matrix[k - 1, k - 1])
    return current if k == 1 else current / k + (1 - 1 / k) * min_acc(data, k, higher_is_better)


def stability_gap(data: Data, higher_is_better: bool | None = None) -> np.ndarray:
    """Per old task j < T-1: the largest drop below its task-end value at any evaluation once later tasks start,

        gap_j = max(0, p[j, j] - min_{t > n_j} p_j(t)),

    the min over every later evaluation, periodic and task-end (for errors, max(0, max error - p[j, j])). Its mean
    is the reported stability gap. It includes forgetting that stays: ``gap_j - forgetting_j`` is the part that was
    recovered by the end of the run. Only periodic rows measured early in each new task reveal the transient dip;
    with task-end rows alone it is the worst later task-end drop."""
    matrix, better, tasks = _unpack(data, higher_is_better)
    _need(matrix, [(j, j) for j in range(len(matrix) - 1)], "the stability gap", tasks)
    worst = worst_after(data, None, higher_is_better, what="the stability gap")
    return np.maximum(0.0, _sign(better) * (np.diag(matrix)[:-1] - worst))


# ---------------------------------------------------------------------------------------------------------------
# LIBERO metrics (Liu et al., section 5)
# ---------------------------------------------------------------------------------------------------------------

def hold_best(values: Sequence[float], higher_is_better: bool = True) -> np.ndarray:
    """LIBERO's stopping rule: from the first evaluation that reaches the best value on, every later value is that
    best (the learner is taken to stop once it peaks)."""
    y = np.array(values, dtype=np.float64)
    if y.size:
        first = int(np.argmax(y) if higher_is_better else np.argmin(y))
        y[first:] = y[first]
    return y


def _libero_curves(data: Data, curves: Sequence[Sequence[float]] | None, n: int) -> list[np.ndarray | None]:
    if curves is not None:
        if len(curves) != n:
            raise ValueError(f"got {len(curves)} in-task curves, expected {n} (one per task)")
        return [np.asarray(c, dtype=np.float64) if len(c) else None for c in curves]
    if isinstance(data, ContinualEvaluation):
        values = [task_curve(data, k)[1] for k in range(n)]
        return [v if v.size else None for v in values]
    return [None] * n


def libero_fwt_per_task(data: Data, curves: Sequence[Sequence[float]] | None = None,
                        higher_is_better: bool | None = None) -> np.ndarray:
    """FWT_k = (1/E) Σ_e c_{k,k,e}: the mean of task k's success over the E evaluations made while it trains,
    after :func:`hold_best`. ``curves[k]`` gives those evaluations (default: a record's in-task history rows);
    where a task has none, FWT_k = c_{k,k}, the task-end value."""
    matrix, better, tasks = _unpack(data, higher_is_better)
    n = len(matrix)
    _need(matrix, [(k, k) for k in range(n)], "LIBERO FWT", tasks)
    out = np.diag(matrix).copy()
    for k, curve in enumerate(_libero_curves(data, curves, n)):
        if curve is not None:
            if not np.isfinite(curve).all():
                raise ValueError(f"the in-task curve of task {k} holds NaN or an infinity")
            out[k] = float(np.mean(hold_best(curve, better)))
    return out


def libero_fwt(data: Data, curves: Sequence[Sequence[float]] | None = None,
               higher_is_better: bool | None = None) -> float:
    """LIBERO's forward transfer FWT = (1/K) Σ_k FWT_k (:func:`libero_fwt_per_task`): how fast and how well each
    new task is learned."""
    return float(np.mean(libero_fwt_per_task(data, curves, higher_is_better)))


def libero_nbt(data: Data, higher_is_better: bool | None = None) -> float:
    """LIBERO's negative backward transfer, averaged over the K-1 tasks that have later tasks:

        NBT_k = 1/(K-k) Σ_{τ=k+1}^{K} (c_{k,k} - c_{τ,k}),   NBT = 1/(K-1) Σ_{k<K} NBT_k   (1-based k),

    with c_{τ,k} = p[τ-1, k-1]. Positive means forgotten (for errors the difference is flipped). NaN for K = 1."""
    matrix, better, tasks = _unpack(data, higher_is_better)
    n = len(matrix)
    _need(matrix, _lower_triangle(n), "LIBERO NBT", tasks)
    per_task = [_sign(better) * np.mean(matrix[k, k] - matrix[k + 1:, k]) for k in range(n - 1)]
    return float(np.mean(per_task)) if per_task else math.nan


def libero_auc(data: Data, curves: Sequence[Sequence[float]] | None = None,
               higher_is_better: bool | None = None) -> float:
    """LIBERO's area under the success curve:

        AUC_k = 1/(K-k+1) (FWT_k + Σ_{τ=k+1}^{K} c_{τ,k}),   AUC = (1/K) Σ_k AUC_k   (1-based k),

    with FWT_k from :func:`libero_fwt_per_task`: each task's learning and its retention over the later tasks."""
    matrix, _, tasks = _unpack(data, higher_is_better)
    _need(matrix, _lower_triangle(len(matrix)), "LIBERO AUC", tasks)
    fwt = libero_fwt_per_task(data, curves, higher_is_better)
    return float(np.mean([(fwt[k] + matrix[k + 1:, k].sum()) / (len(matrix) - k) for k in range(len(matrix))]))


# ---------------------------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------------------------

def summary(record: ContinualEvaluation, reference: TaskReference | Sequence[float] | None = None
            ) -> dict[str, float]:
    """Every applicable metric of a finished run (keys in :data:`SUMMARY_KEYS` order):

    - ``average_performance``; ``libero_fwt``, ``libero_nbt`` and ``libero_auc`` (the last two need T >= 2);
    - with T >= 2: ``forgetting`` (Continual World's, mean), ``forgetting_chaudhry`` (best earlier minus final,
      mean), ``min_acc`` and ``wc_acc``, and ``stability_gap`` (mean) when the history
      has periodic rows measured during a later task;
    - with a reference: ``forward_transfer`` (mean), and ``forward_transfer_auc`` (mean) when the reference has
      AUCs and the record is higher-is-better.

    For a run in progress use ``summary(record.prefix(record.n_finished))``. Raises ValueError if a task has not
    finished or a needed cell is NaN.
    """
    if record.n_finished < record.n_tasks:
        raise ValueError(f"only {record.n_finished} of {record.n_tasks} tasks have their task-end row; for a run in "
                         "progress use summary(record.prefix(record.n_finished))")
    out = {"average_performance": average_performance(record)}
    if record.n_tasks >= 2:
        out["forgetting"] = float(np.mean(forgetting(record)))
        out["forgetting_chaudhry"] = float(np.mean(forgetting_chaudhry(record)))
    if reference is not None:
        out["forward_transfer"] = float(np.mean(forward_transfer(record, reference)))
        if isinstance(reference, TaskReference) and reference.auc is not None and record.higher_is_better:
            out["forward_transfer_auc"] = float(np.mean(forward_transfer_auc(record, reference)))
    if record.n_tasks >= 2:
        out["min_acc"] = min_acc(record)
        out["wc_acc"] = wc_acc(record)
        if np.isfinite(worst_after(record, periodic_only=True)).any():
            out["stability_gap"] = float(np.mean(stability_gap(record)))
    out["libero_fwt"] = libero_fwt(record)
    if record.n_tasks >= 2:
        out["libero_nbt"] = libero_nbt(record)
        out["libero_auc"] = libero_auc(record)
    return {k: out[k] for k in SUMMARY_KEYS if k in out}


# ---------------------------------------------------------------------------------------------------------------
# TensorBoard
# ---------------------------------------------------------------------------------------------------------------

class ScalarWriter(Protocol):
    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> Any: ...


def _scalar_writer(writer: Any) -> ScalarWriter:
    """A SummaryWriter, or anything with ``add_scalar``, or cadence's RunLogger (which holds one as ``.writer``)."""
    if hasattr(writer, "add_scalar"):
        return writer
    inner = getattr(writer, "writer", None)
    if hasattr(inner, "add_scalar"):
        return inner
    raise TypeError(f"expected a SummaryWriter, a RunLogger or an object with add_scalar, got {type(writer).__name__}")


def log_continual_row(writer: Any, step: int, record_or_labels: ContinualEvaluation | Sequence[str],
                      values: Sequence[float], prefix: str = "continual", metric_name: str | None = None) -> list[str]:
    """Write one scalar per task, ``<prefix>/<metric_name>/<task label>`` at ``step``, so old tasks are seen to
    decay live; NaN (not evaluated) is skipped. ``metric_name`` defaults to the record's, or "performance" for
    bare labels. Returns the tags written."""
    if isinstance(record_or_labels, ContinualEvaluation):
        labels, name = record_or_labels.tasks, metric_name or record_or_labels.metric_name
    else:
        labels, name = [str(t) for t in record_or_labels], metric_name or "performance"
    row = _as_row(values, len(labels), "the logged row")
    out = _scalar_writer(writer)
    tags = []
    for label, value in zip(labels, row):
        if np.isfinite(value):
            tags.append(f"{prefix}/{name}/{label}")
            out.add_scalar(tags[-1], float(value), int(step))
    return tags


def log_continual_summary(writer: Any, step: int, metrics: Mapping[str, float] | ContinualEvaluation,
                          values: Mapping[str, float] | None = None, prefix: str = "continual") -> list[str]:
    """Write one scalar per metric at ``step``, skipping NaN; returns the tags.

    ``log_continual_summary(writer, step, {"forgetting": 0.2})`` writes ``<prefix>/forgetting``. Given a record,
    ``log_continual_summary(writer, step, record, values)`` writes ``<prefix>/<metric>/<record's metric_name>``
    (``values`` defaults to :func:`summary` of the record), so the summaries of two records of one run (returns and
    model errors) sit side by side instead of overwriting each other.
    """
    if isinstance(metrics, ContinualEvaluation):
        suffix, items = f"/{metrics.metric_name}", summary(metrics) if values is None else values
    elif values is not None:
        raise TypeError("pass the metrics alone, or a record and its metrics")
    else:
        suffix, items = "", metrics
    out = _scalar_writer(writer)
    tags = []
    for key, value in items.items():
        if value is not None and math.isfinite(value):
            tags.append(f"{prefix}/{key}{suffix}")
            out.add_scalar(tags[-1], float(value), int(step))
    return tags
