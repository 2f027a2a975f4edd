"""Minari datasets <-> OfflineDataset, through the ``minari`` package and local storage only.

Minari stores whole episodes: ``observations`` has one more row than ``actions`` (the final observation).
cadence's layout is D4RL's flat rows with explicit ``next_observations``. An episode that Minari ends
with neither termination nor truncation (a collector cut) becomes a timeout row, so episode boundaries
survive the round trip and bootstrapping treats the cut as non-terminal.

Datasets are found under ``MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``); nothing is ever
downloaded. Writing is atomic: the dataset is built in a temporary folder beside its target, then renamed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cadence.replay.errors import DatasetError

#: Metadata key holding cadence's provenance (JSON) inside a Minari dataset.
PROVENANCE_KEY = "cadence_provenance"


class Rows(Protocol):
    """What :func:`write_minari` reads: an :class:`~cadence.replay.datasets.OfflineDataset` (which imports this
    module, so it is not imported here)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    metadata: dict[str, Any]
    source: str

    def __len__(self) -> int: ...

    def next_obs(self) -> np.ndarray: ...


def minari_root() -> Path:
    """Where local Minari datasets live (``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def _data_path(dataset_id_or_path: str | os.PathLike) -> Path:
    path = Path(dataset_id_or_path)
    if not path.is_dir():
        path = minari_root() / str(dataset_id_or_path)
    return path / "data" if (path / "data").is_dir() else path


def read_minari(dataset_id_or_path: str | os.PathLike) -> dict[str, Any]:
    """Arrays and metadata of a local Minari dataset, given its id or its folder.

    Returns keyword arguments for :class:`OfflineDataset`. Raises :class:`DatasetError` if the dataset
    is missing, unreadable, or has observation or action spaces that are not flat ``Box`` spaces.
    """
    import gymnasium as gym
    import minari  # imported here: optional at import time of cadence.replay

    data_path = _data_path(dataset_id_or_path)
    if not (data_path / "metadata.json").is_file():
        raise DatasetError(data_path, None, f"no Minari dataset here (looked for metadata.json; "
                           f"MINARI_DATASETS_PATH is {minari_root()}); cadence never downloads datasets")
    try:
        dataset = minari.MinariDataset(data_path)
        episodes = list(dataset.iterate_episodes())
    except Exception as e:  # minari raises assorted errors on corrupt files
        raise DatasetError(data_path, None, f"cannot be read as a Minari dataset ({type(e).__name__}: {e})") from None
    for name, space in (("observations", dataset.observation_space), ("actions", dataset.action_space)):
        if not isinstance(space, gym.spaces.Box):
            raise DatasetError(data_path, name, f"space {space} is not a flat Box; flatten it before loading")
    if not episodes:
        raise DatasetError(data_path, None, "holds no episodes")
    columns: dict[str, list[np.ndarray]] = {k: [] for k in
                                            ("observations", "next_observations", "actions", "rewards",
                                             "terminals", "timeouts")}
    for ep in episodes:
        obs = np.asarray(ep.observations)
        if len(obs) != len(ep.rewards) + 1:
            raise DatasetError(data_path, "observations", f"episode {ep.id} has {len(obs)} observations for "
                               f"{len(ep.rewards)} steps; Minari stores one more (the final observation)")
        terminals = np.asarray(ep.terminations, bool)
        timeouts = np.asarray(ep.truncations, bool).copy()
        timeouts[-1] |= not terminals[-1]  # a cut episode still ends here
        columns["observations"].append(obs[:-1])
        columns["next_observations"].append(obs[1:])
        columns["actions"].append(np.asarray(ep.actions))
        columns["rewards"].append(np.asarray(ep.rewards))
        columns["terminals"].append(terminals)
        columns["timeouts"].append(timeouts)
    arrays = {k: np.concatenate(v) for k, v in columns.items()}
    raw = json.loads((data_path / "metadata.json").read_text())
    metadata = json.loads(raw.get(PROVENANCE_KEY, "{}"))
    metadata.setdefault("minari_dataset_id", raw.get("dataset_id", ""))
    if raw.get("algorithm_name"):
        metadata.setdefault("policy", raw["algorithm_name"])
    return {**arrays, "metadata": metadata, "source": str(data_path)}


@contextlib.contextmanager
def _datasets_root(root: Path) -> Iterator[None]:
    # minari resolves dataset folders from this variable at call time; point it at a staging folder
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def write_minari(dataset: Rows, dataset_id: str, env_id: str | None = None,
                 root: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write ``dataset`` as the local Minari dataset ``dataset_id`` under ``root`` (default :func:`minari_root`).

    Episodes are split at terminal and timeout rows; a trailing unfinished episode is kept as a cut.
    ``dataset.metadata`` is stored as cadence provenance. Returns the dataset's folder.
    """
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    root = (Path(root) if root is not None else minari_root()).resolve()  # minari mishandles relative roots
    target = root / dataset_id
    if target.exists() and not overwrite:
        raise FileExistsError(f"Minari dataset {dataset_id!r} already exists at {target}; pass overwrite=True")
    ends = np.flatnonzero(np.asarray(dataset.terminals, bool) | np.asarray(dataset.timeouts, bool))
    if not len(ends) or ends[-1] != len(dataset) - 1:
        ends = np.r_[ends, len(dataset) - 1]
    next_obs = dataset.next_obs()
    within = np.ones(len(dataset), bool)
    within[ends] = False  # rows whose successor is in the same episode
    if not np.array_equal(next_obs[within], dataset.observations[1:][within[:-1]]):
        raise DatasetError(dataset.source, "next_observations", "differs from the next row's observation inside an "
                           "episode; Minari stores one observation sequence per episode and cannot hold this")
    buffers, start = [], 0
    for i, end in enumerate(ends):
        rows = slice(start, end + 1)
        buffers.append(EpisodeBuffer(
            id=i, observations=np.concatenate([dataset.observations[rows], next_obs[end:end + 1]]),
            actions=dataset.actions[rows], rewards=dataset.rewards[rows],
            terminations=np.asarray(dataset.terminals[rows], bool),
            truncations=np.asarray(dataset.timeouts[rows], bool),
            infos={}))
        start = end + 1
    obs_space = gym.spaces.Box(-np.inf, np.inf, dataset.observations.shape[1:], dataset.observations.dtype)
    act_low = float(np.min(dataset.actions, initial=-1.0))
    act_high = float(np.max(dataset.actions, initial=1.0))
    act_space = gym.spaces.Box(act_low, act_high, dataset.actions.shape[1:], dataset.actions.dtype)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".minari-", dir=root))
    try:
        with _datasets_root(staging), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="minari")  # advice on optional metadata
            spaces = {} if env_id else {"observation_space": obs_space, "action_space": act_space}
            written = minari.create_dataset_from_buffers(
                dataset_id, buffers, env=env_id, algorithm_name=str(dataset.metadata.get("policy", "unknown")),
                author="cadence", data_format="hdf5", **spaces)
            written.storage.update_metadata({PROVENANCE_KEY: json.dumps(dataset.metadata, default=str)})
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        namespace_file = (staging / dataset_id).parent / "namespace_metadata.json"
        if namespace_file.is_file() and not (target.parent / namespace_file.name).exists():
            shutil.copy(namespace_file, target.parent / namespace_file.name)  # a namespaced id: keep its namespace
        os.replace(staging / dataset_id, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
