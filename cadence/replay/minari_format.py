"""Minari datasets <-> OfflineDataset, through the ``minari`` package and local storage only.

Minari stores whole episodes: ``observations`` has one more row than ``actions`` (the final observation).
cadence's layout is D4RL's flat rows with explicit ``next_observations``. An episode that Minari ends
with neither termination nor truncation (a collector cut) becomes a timeout row, so episode boundaries
survive the round trip and bootstrapping treats the cut as non-terminal.

Task ids: Minari has no task field, so cadence stores them as a per-step info, ``infos["task_id"]``, which
Minari writes and reads back as an array. Like Minari's own infos it has one entry per observation
(the first is the reset's, entry ``t`` belongs to the observation of step ``t``), so an episode of ``T``
steps stores ``T + 1`` ids, the last repeating step ``T - 1``'s; ``T`` entries are also read. An episode
may mix tasks. Datasets whose episodes carry no ``task_id`` info load with ``task_ids`` None.

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
#: Per-step info key holding each step's task id inside a Minari episode.
TASK_INFO_KEY = "task_id"


class Rows(Protocol):
    """What :func:`write_minari` reads: an :class:`~cadence.replay.datasets.OfflineDataset` (which imports this
    module, so it is not imported here)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    task_ids: np.ndarray | None
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
    task_ids = [_episode_task_ids(data_path, ep) for ep in episodes]
    with_ids = [ids is not None for ids in task_ids]
    if any(with_ids) and not all(with_ids):
        raise DatasetError(data_path, "task_ids", f"episode {episodes[with_ids.index(False)].id} has no "
                           f"{TASK_INFO_KEY!r} info but episode {episodes[with_ids.index(True)].id} has; "
                           "every episode or none must carry task ids")
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
    arrays: dict[str, Any] = {k: np.concatenate(v) for k, v in columns.items()}
    arrays["task_ids"] = np.concatenate(task_ids) if all(with_ids) else None
    raw = json.loads((data_path / "metadata.json").read_text())
    metadata = json.loads(raw.get(PROVENANCE_KEY, "{}"))
    metadata.setdefault("minari_dataset_id", raw.get("dataset_id", ""))
    if raw.get("algorithm_name"):
        metadata.setdefault("policy", raw["algorithm_name"])
    return {**arrays, "metadata": metadata, "source": str(data_path)}


def _episode_task_ids(data_path: Path, ep: Any) -> np.ndarray | None:
    """The task id of every step of ``ep``, from its ``task_id`` info; None if it has none."""
    infos = ep.infos or {}
    if TASK_INFO_KEY not in infos:
        return None
    ids, steps = np.asarray(infos[TASK_INFO_KEY]), len(ep.rewards)
    if ids.ndim != 1 or len(ids) not in (steps, steps + 1):
        raise DatasetError(data_path, "task_ids", f"episode {ep.id}: info {TASK_INFO_KEY!r} has shape {ids.shape}, "
                           f"expected {steps + 1} entries (one per observation) for its {steps} steps")
    return ids[:steps]


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
    ``dataset.metadata`` is stored as cadence provenance, ``dataset.task_ids`` (if any) as every episode's
    ``task_id`` info (see the module docstring). Returns the dataset's folder.
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
    task_ids = None if dataset.task_ids is None else np.asarray(dataset.task_ids, np.int64)
    buffers, start = [], 0
    for i, end in enumerate(ends):
        rows = slice(start, end + 1)
        # one id per observation, as Minari's infos: the final observation's repeats the last step's
        infos = {} if task_ids is None else {TASK_INFO_KEY: np.r_[task_ids[rows], task_ids[end]]}
        buffers.append(EpisodeBuffer(
            id=i, observations=np.concatenate([dataset.observations[rows], next_obs[end:end + 1]]),
            actions=dataset.actions[rows], rewards=dataset.rewards[rows],
            terminations=np.asarray(dataset.terminals[rows], bool),
            truncations=np.asarray(dataset.timeouts[rows], bool),
            infos=infos))
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
