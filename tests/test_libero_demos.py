"""The scripted-demonstration file's checks (no LIBERO needed: the files are made here)."""

import numpy as np
import pytest

from cadence.libero_demos import load_demos
from cadence.replay.datasets import OfflineDataset


def demo_dataset(suite: str, tasks: list[int], kind: str = "scripted") -> OfflineDataset:
    n = 4 * len(tasks)
    data = OfflineDataset(np.zeros((n, 3), np.float32), np.zeros((n, 7), np.float32), np.zeros(n, np.float32),
                          np.zeros(n, bool), np.zeros(n, bool), next_observations=np.zeros((n, 3), np.float32),
                          task_ids=np.repeat(tasks, 4))
    data.metadata = {"suite": suite, "tasks": tasks, "inits": [0, 1], "kind": kind}
    return data


def test_a_demo_file_round_trips_with_its_metadata(tmp_path):
    path = demo_dataset("object", [0, 2]).save_hdf5(tmp_path / "d.hdf5")
    data = load_demos(path, "libero_object", [0, 2], canonical=False)  # 3-d stand-in states: no quaternions
    assert data.metadata["tasks"] == [0, 2] and data.metadata["inits"] == [0, 1]
    assert np.unique(data.task_ids).tolist() == [0, 2]


def test_a_file_of_another_suite_or_task_is_refused(tmp_path):
    path = demo_dataset("spatial", [0, 1]).save_hdf5(tmp_path / "d.hdf5")
    with pytest.raises(ValueError, match="suite 'spatial', not 'object'; make them with: python scripts/libero_demos"):
        load_demos(path, "object")
    with pytest.raises(ValueError, match=r"no demonstrations of spatial task\(s\) \[4\]; it holds tasks \[0, 1\]"):
        load_demos(path, "spatial", [0, 4])
    other = demo_dataset("spatial", [0], kind="medium").save_hdf5(tmp_path / "e.hdf5")
    with pytest.raises(ValueError, match="not a cadence LIBERO demonstration file"):
        load_demos(other, "spatial")
    with pytest.raises(ValueError, match="unknown LIBERO suite 'kitchen'"):
        load_demos(path, "kitchen")
