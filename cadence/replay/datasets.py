"""Offline data sets: D4RL-format HDF5 and Minari, validated reading, atomic writing, conversion to a ReplayBuffer.

Layout (D4RL): ``observations [N, obs_dim]``, ``actions [N, act_dim]``, ``rewards [N]``, ``terminals [N]``,
``timeouts [N]``, optionally ``next_observations [N, obs_dim]``, plus cadence's optional ``task_ids [N]``
(non-negative integers, held as int64; ``None`` for a single-task data set, which a ReplayBuffer reads as task 0).
Task ids survive HDF5 (a ``task_ids`` key), Minari (a per-step ``task_id`` info, see
:mod:`cadence.replay.minari_format`), :meth:`OfflineDataset.to_buffer` and
:func:`cadence.replay.collect.buffer_to_dataset`.
Provenance (policy, seed, steps, mean return, cadence version) is stored as HDF5 attributes.

:func:`load_dataset` resolves names: a file or folder path, ``d4rl:hopper-medium-v2`` (D4RL's own files in
``D4RL_DATASET_DIR`` or ``~/.d4rl/datasets``), ``minari:<dataset id>``, or a cadence-generated name such as
``hopper-medium`` (in :func:`data_dir`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cadence.io import atomic_write
from cadence.replay.buffer import ReplayBuffer
from cadence.replay.errors import DatasetError
from cadence.replay.minari_format import read_minari, write_minari

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations")
#: Largest task id: a ReplayBuffer stores task ids as int32.
MAX_TASK_ID = 2**31 - 1


@dataclass
class OfflineDataset:
    """Transitions of one or more tasks, as NumPy arrays in D4RL's layout."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    next_observations: np.ndarray | None = None
    task_ids: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.validate()
        if self.task_ids is not None and self.task_ids.dtype != np.int64:
            self.task_ids = self.task_ids.astype(np.int64)  # validated: integers in [0, MAX_TASK_ID]

    def __len__(self) -> int:
        return len(self.rewards)

    # --- validation -----------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k) for k in REQUIRED_KEYS}
        for k in ("next_observations", "task_ids"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    def validate(self, obs_shape: tuple[int, ...] | None = None, act_shape: tuple[int, ...] | None = None) -> None:
        """Raise :class:`DatasetError` on unequal lengths, wrong dtypes or ranks, non-finite values or spaces
        that do not match ``obs_shape``/``act_shape``."""
        arrays = self.arrays()
        n = len(arrays["rewards"])
        for key, value in arrays.items():
            if len(value) != n:
                raise DatasetError(self.source, key, f"has {len(value)} rows but rewards has {n}")
            if key in FLOAT_KEYS and not np.issubdtype(value.dtype, np.floating):
                raise DatasetError(self.source, key, f"must be floating point, got dtype {value.dtype}")
            is_flag = value.dtype == np.bool_ or np.issubdtype(value.dtype, np.integer)
            if key in ("terminals", "timeouts") and not is_flag:
                raise DatasetError(self.source, key, f"must be bool (or 0/1 integers), got dtype {value.dtype}")
            if key in FLOAT_KEYS and not np.isfinite(value).all():
                bad = int(np.argwhere(~np.isfinite(value.reshape(n, -1)))[0, 0])
                raise DatasetError(self.source, key, f"contains NaN or inf (first at row {bad})")
        if arrays["rewards"].ndim != 1:
            raise DatasetError(self.source, "rewards", f"must be 1-D, got shape {arrays['rewards'].shape}")
        if self.task_ids is not None:
            self._validate_task_ids()
        if self.next_observations is not None and self.next_observations.shape != self.observations.shape:
            raise DatasetError(self.source, "next_observations", f"shape {self.next_observations.shape} "
                               f"differs from observations {self.observations.shape}")
        if obs_shape is not None and self.observations.shape[1:] != tuple(obs_shape):
            raise DatasetError(self.source, "observations", f"observation shape {self.observations.shape[1:]} "
                               f"does not match the env's {tuple(obs_shape)}")
        if act_shape is not None and self.actions.shape[1:] != tuple(act_shape):
            raise DatasetError(self.source, "actions",
                               f"action shape {self.actions.shape[1:]} does not match the env's {tuple(act_shape)}")

    def _validate_task_ids(self) -> None:
        ids = self.task_ids
        if ids.ndim != 1:
            raise DatasetError(self.source, "task_ids", f"must be 1-D (one task per row), got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise DatasetError(self.source, "task_ids", f"must be integers, got dtype {ids.dtype}")
        if len(ids) and ids.min() < 0:
            row = int(np.argmax(ids < 0))
            raise DatasetError(self.source, "task_ids", f"must be >= 0, got {ids[row]} (first at row {row})")
        if len(ids) and ids.max() > MAX_TASK_ID:
            row = int(np.argmax(ids > MAX_TASK_ID))
            raise DatasetError(self.source, "task_ids", f"must be at most {MAX_TASK_ID} (a ReplayBuffer stores int32), "
                               f"got {ids[row]} (first at row {row})")

    # --- derived views -------------------------------------------------------------------------------
    def next_obs(self) -> np.ndarray:
        """``next_observations`` if stored, else the following row's observation (D4RL's convention).

        At episode ends without a stored next observation the row's own observation is used; those
        rows are terminal or timeouts, and a timeout row's bootstrap target is then approximate.
        """
        if self.next_observations is not None:
            return self.next_observations
        nxt = np.empty_like(self.observations)
        nxt[:-1] = self.observations[1:]
        nxt[-1] = self.observations[-1]
        ends = np.asarray(self.terminals, bool) | np.asarray(self.timeouts, bool)
        nxt[ends] = self.observations[ends]
        return nxt

    def with_known_next(self) -> OfflineDataset:
        """This data set with every row's next observation known; itself when ``next_observations`` is stored.

        D4RL files store no next observations. Inside an episode the next row's observation is the successor.
        A row that ends an episode by a timeout (or the file's last row) has no stored successor and its target
        must bootstrap, so it is dropped and the row before it becomes the episode's timeout, as D4RL's
        ``qlearning_dataset`` drops it. A terminal row keeps s' = s: a terminal target does not bootstrap.
        """
        if self.next_observations is not None:
            return self
        terminals, timeouts = np.asarray(self.terminals, bool), np.asarray(self.timeouts, bool).copy()
        ends = terminals | timeouts
        unknown = ends.copy()
        unknown[-1] = True
        nxt = np.empty_like(self.observations)
        nxt[:-1] = self.observations[1:]
        nxt[unknown] = self.observations[unknown]
        drop = unknown & ~terminals
        before = np.flatnonzero(drop) - 1
        timeouts[before[(before >= 0) & ~ends[before]]] = True  # the dropped row's predecessor in its episode
        arrays = {**self.arrays(), "timeouts": timeouts, "next_observations": nxt}
        return OfflineDataset(**{k: v[~drop] for k, v in arrays.items()}, metadata=dict(self.metadata),
                              source=self.source)

    def episode_starts(self) -> np.ndarray:
        ends = np.asarray(self.terminals, bool) | np.asarray(self.timeouts, bool)
        starts = np.zeros(len(self), dtype=bool)
        starts[0] = True
        starts[1:] = ends[:-1]
        return starts

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every complete episode."""
        ends = np.flatnonzero(np.asarray(self.terminals, bool) | np.asarray(self.timeouts, bool))
        sums = np.add.reduceat(self.rewards, np.r_[0, ends[:-1] + 1]) if len(ends) else np.array([])
        return sums[: len(ends)]

    def task(self, task_id: int) -> OfflineDataset:
        """The rows of one task (for data-set sequences in continual offline RL)."""
        if self.task_ids is None:
            raise DatasetError(self.source, "task_ids", "this data set has no task ids")
        rows = self.task_ids == task_id
        if not rows.any():
            raise DatasetError(self.source, "task_ids", f"no rows of task {task_id}; tasks: {np.unique(self.task_ids)}")
        return self.select(rows, f"task {task_id}")

    def select(self, rows: slice | np.ndarray, label: str = "rows") -> OfflineDataset:
        """A new data set of the given rows (a slice, indices or a boolean mask), with the same metadata."""
        return OfflineDataset(**{k: v[rows] for k, v in self.arrays().items()}, metadata=dict(self.metadata),
                              source=f"{self.source}[{label}]")

    @classmethod
    def concatenate(cls, datasets: Sequence[OfflineDataset], task_ids: Sequence[int | None] | None = None,
                    metadata: dict[str, Any] | None = None) -> OfflineDataset:
        """The data sets of one task sequence joined in order, every row keeping its task id.

        An input with ``task_ids`` keeps them; an input without takes ``task_ids[i]`` (one int per input, ``None``
        for inputs that have their own) for all its rows, and an id given for an input that has task ids must match
        all of them. Parts of one task (``medium-expert`` is medium then expert) join without any: when no input
        has task ids and none are given, neither has the result; otherwise an input with neither raises
        :class:`DatasetError`.
        Each input's last row ends an episode (a timeout unless terminal), so no episode runs into the next input.
        Observation and action shapes must agree, and ``next_observations`` must be stored by all inputs or none.
        """
        datasets = list(datasets)
        if not datasets:
            raise DatasetError("<concatenate>", None, "no data sets to concatenate")
        if task_ids is not None and len(task_ids) != len(datasets):
            raise DatasetError("<concatenate>", "task_ids", f"got {len(task_ids)} task ids for {len(datasets)} "
                               "data sets; give one per data set (None for those with their own)")
        first = datasets[0]
        for d in datasets[1:]:
            for key, shape, want in (("observations", d.observations.shape[1:], first.observations.shape[1:]),
                                     ("actions", d.actions.shape[1:], first.actions.shape[1:])):
                if shape != want:
                    raise DatasetError(d.source, key, f"{key[:-1]} shape {shape} differs from {want} in "
                                       f"{first.source}; only data sets of one observation and action space join")
        stored = [d.next_observations is not None for d in datasets]
        if any(stored) and not all(stored):
            lacking, having = datasets[stored.index(False)], datasets[stored.index(True)]
            raise DatasetError(lacking.source, "next_observations", f"not stored, but {having.source} stores them; "
                               "call with_known_next() on the inputs first")
        single_task = task_ids is None and all(d.task_ids is None for d in datasets)
        ids = []
        for i, d in enumerate(datasets):
            if single_task:
                break
            given = None if task_ids is None else task_ids[i]
            if given is not None and (isinstance(given, bool) or not isinstance(given, (int, np.integer))
                                      or not 0 <= given <= MAX_TASK_ID):
                raise DatasetError(d.source, "task_ids", f"task id {given!r} given for data set {i} is not an integer "
                                   f"in [0, {MAX_TASK_ID}]")
            if d.task_ids is None:
                if given is None:
                    raise DatasetError(d.source, "task_ids", f"data set {i} has no task ids; pass task_ids with an "
                                       "id for it (one entry per data set)")
                ids.append(np.full(len(d), given, np.int64))
            else:
                if given is not None and (d.task_ids != given).any():
                    raise DatasetError(d.source, "task_ids", f"task id {given} given for data set {i}, which has "
                                       f"tasks {np.unique(d.task_ids).tolist()}; pass None to keep its own")
                ids.append(d.task_ids)
        keys = (*REQUIRED_KEYS, "next_observations") if all(stored) else REQUIRED_KEYS
        arrays = {k: np.concatenate([getattr(d, k) for d in datasets]) for k in keys}
        arrays["terminals"] = arrays["terminals"].astype(bool)
        arrays["timeouts"] = arrays["timeouts"].astype(bool)
        ends = np.cumsum([len(d) for d in datasets]) - 1  # each input's last row ends an episode
        arrays["timeouts"][ends] |= ~arrays["terminals"][ends]
        return cls(**arrays, task_ids=None if single_task else np.concatenate(ids).astype(np.int64),
                   metadata=dict(metadata or {}),
                   source=f"concatenate({', '.join(d.source for d in datasets)})")

    def to_buffer(self, capacity: int | None = None, device: str = "cpu") -> ReplayBuffer:
        """A ReplayBuffer holding every transition whose next observation is known (see :meth:`with_known_next`);
        the capacity defaults to their number."""
        data = self.with_known_next()
        buf = ReplayBuffer(capacity or len(data), data.observations.shape[1:], data.actions.shape[1:], device)
        task = data.task_ids if data.task_ids is not None else 0
        buf.add(data.observations, data.actions, data.rewards, data.next_observations, np.asarray(data.terminals, bool),
                np.asarray(data.timeouts, bool), task_id=task, episode_start=data.episode_starts())
        return buf

    # --- files ---------------------------------------------------------------------------------------
    def save_hdf5(self, path: str | os.PathLike) -> Path:
        """Write atomically in D4RL's layout, with ``metadata`` as file attributes."""

        def write(f) -> None:
            with h5py.File(f, "w") as h5:
                for key, value in self.arrays().items():
                    h5.create_dataset(key, data=value, compression="gzip", compression_opts=1)
                for key, value in self.metadata.items():
                    h5.attrs[key] = value

        return atomic_write(path, write)

    def save_minari(self, dataset_id: str, env_id: str | None = None, root: str | os.PathLike | None = None,
                    overwrite: bool = False) -> Path:
        """Write as a local Minari dataset (atomically); see :mod:`cadence.replay.minari_format`."""
        return write_minari(self, dataset_id, env_id=env_id, root=root, overwrite=overwrite)

    @classmethod
    def load_minari(cls, dataset_id_or_path: str | os.PathLike, obs_shape: tuple[int, ...] | None = None,
                    act_shape: tuple[int, ...] | None = None) -> OfflineDataset:
        """Read and validate a local Minari dataset, by id (under ``MINARI_DATASETS_PATH``) or folder."""
        dataset = cls(**read_minari(dataset_id_or_path))
        dataset.validate(obs_shape, act_shape)
        return dataset

    @classmethod
    def load_hdf5(cls, path: str | os.PathLike, obs_shape: tuple[int, ...] | None = None,
                  act_shape: tuple[int, ...] | None = None) -> OfflineDataset:
        """Read and validate a D4RL-format file; raises :class:`DatasetError` naming the file, key and problem."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(path, None, "file not found")
        try:
            with h5py.File(path, "r") as h5:
                missing = [k for k in REQUIRED_KEYS if k not in h5]
                if missing:
                    raise DatasetError(path, missing[0], f"required key missing (file has: {', '.join(sorted(h5))})")
                arrays = {}
                for key in (*REQUIRED_KEYS, "next_observations", "task_ids"):
                    if key in h5:
                        try:
                            arrays[key] = h5[key][()]
                        except OSError as e:
                            raise DatasetError(path, key, f"cannot be read, the file may be truncated ({e})") from None
                metadata = {k: _plain(v) for k, v in h5.attrs.items()}
        except OSError as e:
            raise DatasetError(path, None, f"not a readable HDF5 file, it may be truncated or corrupt ({e})") from None
        dataset = cls(**arrays, metadata=metadata, source=str(path))
        dataset.validate(obs_shape, act_shape)
        return dataset


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a Python value: arrays (lists written as metadata) as lists, NumPy scalars as numbers."""
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return value.tolist()
    return value.item() if hasattr(value, "item") else value


def data_dir() -> Path:
    """Where ``cadence collect`` writes data sets: ``CADENCE_DATA_DIR``, else ``~/.cadence/datasets``."""
    return Path(os.environ.get("CADENCE_DATA_DIR", Path.home() / ".cadence" / "datasets"))


def d4rl_dir() -> Path:
    """D4RL's cache folder: ``D4RL_DATASET_DIR``, else ``~/.d4rl/datasets``."""
    return Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets"))


def dataset_file(name: str) -> Path:
    """The file of a cadence-generated data set: ``hopper-medium`` -> ``<data_dir>/hopper-medium-v5.hdf5``."""
    stem = name if name.endswith("-v5") else f"{name}-v5"
    return data_dir() / f"{stem}.hdf5"


def locate_dataset(name: str | os.PathLike) -> tuple[str, str | Path]:
    """Where :func:`load_dataset` reads ``name`` from, without reading it: ``("minari", dataset id or folder)`` or
    ``("hdf5", file)``. A missing file raises :class:`DatasetError` (a Minari id is checked when it is loaded)."""
    text = str(name)
    if text.startswith("d4rl:"):
        path = d4rl_dir() / f"{text.removeprefix('d4rl:')}.hdf5"
        if not path.is_file():
            raise DatasetError(path, None, f"D4RL file for {text!r} not found; cadence reads D4RL's own files from "
                               f"D4RL_DATASET_DIR or ~/.d4rl/datasets and never downloads them")
        return "hdf5", path
    if text.startswith("minari:"):
        return "minari", text.removeprefix("minari:")
    path = Path(text)
    if path.is_dir():
        return "minari", path
    if path.is_file():
        return "hdf5", path
    file = dataset_file(text)
    if file.is_file():
        return "hdf5", file
    raise DatasetError(file, None, f"no data set named {text!r} (not a path, and not generated yet); "
                       f"{available_hint()}")


def load_dataset(name: str | os.PathLike, obs_shape: tuple[int, ...] | None = None,
                 act_shape: tuple[int, ...] | None = None) -> OfflineDataset:
    """Load a data set by path or name (see the module docstring), validated against the given shapes."""
    kind, source = locate_dataset(name)
    if kind == "minari":
        return OfflineDataset.load_minari(source, obs_shape, act_shape)
    return OfflineDataset.load_hdf5(source, obs_shape, act_shape)


def available_datasets() -> list[str]:
    """The names :func:`load_dataset` accepts for the data sets on this machine: cadence's own in :func:`data_dir`
    (``hopper-medium``) and D4RL's files in :func:`d4rl_dir` (``d4rl:hopper-medium-v2``)."""
    own = sorted(p.name.removesuffix("-v5.hdf5") for p in data_dir().glob("*-v5.hdf5"))
    return own + sorted(f"d4rl:{p.stem}" for p in d4rl_dir().glob("*.hdf5"))


def available_hint() -> str:
    """The data sets there are, or how to make one."""
    names = available_datasets()
    if names:
        return f"available data sets: {', '.join(names)} (or a file path, d4rl:NAME or minari:ID)"
    return (f"there are no data sets in {data_dir()} or {d4rl_dir()} yet; make one with "
            "`cadence collect --env Hopper-v5 --kind medium`, or pass a file path, d4rl:NAME or minari:ID")
