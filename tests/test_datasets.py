import ast
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cadence.replay import DatasetError, OfflineDataset, load_dataset


def episodes(lengths=(3, 4), obs_dim=3, act_dim=2, seed=0):
    """Episodes of the given lengths; the last one ends in a timeout, the others terminate."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    ends = np.cumsum(lengths) - 1
    terminals[ends[:-1]] = True
    timeouts[ends[-1]] = True
    return dict(observations=rng.standard_normal((n, obs_dim)).astype(np.float32),
                actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
                rewards=rng.standard_normal(n).astype(np.float32), terminals=terminals, timeouts=timeouts)


def write_h5(path, arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def test_hdf5_round_trip_is_identical(tmp_path):
    data = OfflineDataset(**episodes(), next_observations=np.ones((7, 3), np.float32), task_ids=np.arange(7) % 2,
                          metadata={"policy": "sac", "seed": 3, "mean_return": 12.5})
    data.save_hdf5(tmp_path / "d.hdf5")
    back = OfflineDataset.load_hdf5(tmp_path / "d.hdf5")
    for k, v in data.arrays().items():
        np.testing.assert_array_equal(back.arrays()[k], v)
    assert back.metadata == {"policy": "sac", "seed": 3, "mean_return": 12.5}
    assert [p.name for p in tmp_path.iterdir()] == ["d.hdf5"]  # written atomically, no temp left


def test_hand_written_d4rl_file_loads(tmp_path):
    arrays = episodes()
    arrays["terminals"] = arrays["terminals"].astype(np.float32).astype(bool)
    write_h5(tmp_path / "hopper-medium-v2.hdf5", arrays)
    data = OfflineDataset.load_hdf5(tmp_path / "hopper-medium-v2.hdf5", obs_shape=(3,), act_shape=(2,))
    assert len(data) == 7
    # D4RL has no next_observations: the next row is used within an episode
    nxt = data.next_obs()
    np.testing.assert_array_equal(nxt[0], arrays["observations"][1])
    np.testing.assert_array_equal(nxt[2], arrays["observations"][2])  # terminal row: no successor
    np.testing.assert_allclose(data.episode_returns(), [arrays["rewards"][:3].sum(), arrays["rewards"][3:].sum()],
                               rtol=1e-6)


def test_to_buffer_and_task_slices():
    arrays = episodes()
    data = OfflineDataset(**arrays, next_observations=arrays["observations"] + 1.0,
                          task_ids=np.array([0, 0, 0, 1, 1, 1, 1]))
    buf = data.to_buffer()
    assert len(buf) == 7
    assert buf.storage["episode_start"].tolist() == [True, False, False, True, False, False, False]
    assert buf.storage["terminated"][2] and buf.storage["truncated"][6]
    torch.testing.assert_close(buf.storage["obs"], torch.as_tensor(data.observations))
    torch.testing.assert_close(buf.storage["next_obs"], torch.as_tensor(data.next_observations))
    task1 = data.task(1)
    assert len(task1) == 4 and (task1.task_ids == 1).all()
    with pytest.raises(DatasetError, match="no rows of task 5"):
        data.task(5)


def test_rows_without_a_known_successor_are_dropped_like_d4rl_qlearning_dataset():
    # episodes of 3 (terminal), 1 (timeout), 4 (timeout), then 2 rows cut off by the file's end
    arrays = episodes(lengths=(3, 1, 4, 2))
    arrays["timeouts"][9], arrays["terminals"][9] = False, False
    for row in (3, 7):
        arrays["timeouts"][row], arrays["terminals"][row] = True, False
    obs = arrays["observations"]
    data = OfflineDataset(**arrays).with_known_next()
    kept = [0, 1, 2, 4, 5, 6, 8]  # the timeout rows 3 and 7 and the last row 9 need a successor nobody stored
    np.testing.assert_array_equal(data.observations, obs[kept])
    np.testing.assert_array_equal(data.next_observations, obs[[1, 2, 2, 5, 6, 7, 9]])  # terminal row 2: s' = s
    assert data.terminals.tolist() == [False, False, True, False, False, False, False]
    assert data.timeouts.tolist() == [False, False, False, False, False, True, True]  # rows 6 and 8 end episodes
    buf = OfflineDataset(**arrays).to_buffer()
    assert len(buf) == 7 and buf.storage["episode_start"].tolist() == [True, False, False, True, False, False, True]
    stored = OfflineDataset(**arrays, next_observations=obs + 1.0)
    assert stored.with_known_next() is stored


@pytest.mark.parametrize("corrupt, key, problem", [
    (lambda a: a.pop("rewards"), "rewards", "required key missing"),
    (lambda a: a.update(actions=a["actions"][:-1]), "actions", "has 6 rows but rewards has 7"),
    (lambda a: a["rewards"].__setitem__(4, np.nan), "rewards", "NaN or inf \\(first at row 4\\)"),
    (lambda a: a.update(observations=a["observations"].astype(np.int64)), "observations", "floating point"),
    (lambda a: a.update(terminals=a["terminals"].astype(np.float32)), "terminals", "must be bool"),
])
def test_each_corruption_names_file_key_and_problem(tmp_path, corrupt, key, problem):
    arrays = episodes()
    corrupt(arrays)
    path = tmp_path / "bad.hdf5"
    write_h5(path, arrays)
    with pytest.raises(DatasetError, match=problem) as err:
        OfflineDataset.load_hdf5(path)
    assert err.value.key == key and str(path) in str(err.value)


def test_truncated_file(tmp_path):
    path = tmp_path / "full.hdf5"
    OfflineDataset(**episodes(lengths=(400, 600))).save_hdf5(path)
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="truncated") as err:
        OfflineDataset.load_hdf5(cut)
    assert str(cut) in str(err.value)


def test_observation_size_must_match_env(tmp_path):
    path = tmp_path / "d.hdf5"
    OfflineDataset(**episodes(obs_dim=3)).save_hdf5(path)
    with pytest.raises(DatasetError, match=r"observation shape \(3,\) does not match the env's \(11,\)") as err:
        OfflineDataset.load_hdf5(path, obs_shape=(11,), act_shape=(2,))
    assert err.value.key == "observations"
    with pytest.raises(DatasetError, match="file not found"):
        OfflineDataset.load_hdf5(tmp_path / "missing.hdf5")


FIXTURES = Path(__file__).parent / "data"


def test_minari_round_trip_is_identical(tmp_path):
    arrays = episodes()
    nxt = np.roll(arrays["observations"], -1, axis=0)
    nxt[[2, 6]] = [[9, 9, 9], [8, 8, 8]]  # final observations, which D4RL's layout cannot infer
    data = OfflineDataset(**arrays, next_observations=nxt, metadata={"policy": "sac", "seed": 3})
    folder = data.save_minari("toy-random-v0", root=tmp_path)
    assert folder == tmp_path.resolve() / "toy-random-v0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy-random-v0"]  # staging folder removed
    back = OfflineDataset.load_minari(folder)
    assert back.arrays().keys() == data.arrays().keys()
    for k, v in data.arrays().items():
        np.testing.assert_array_equal(back.arrays()[k], v)
    assert back.metadata["policy"] == "sac" and back.metadata["seed"] == 3
    with pytest.raises(FileExistsError, match="already exists"):
        data.save_minari("toy-random-v0", root=tmp_path)
    # Minari holds one observation sequence per episode: a contradicting next_observations is refused
    bad = OfflineDataset(**arrays, next_observations=np.ones((7, 3), np.float32))
    with pytest.raises(DatasetError, match="Minari stores one observation sequence"):
        bad.save_minari("toy-bad-v0", root=tmp_path)


def test_dataset_written_by_minari_data_collector_loads(monkeypatch):
    # written once by tests/data/make_minari_fixture.py with Minari's own DataCollector (3 x 20 steps)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(FIXTURES / "minari"))
    data = load_dataset("minari:pendulum-random-v0", obs_shape=(3,), act_shape=(1,))
    assert len(data) == 60 and data.timeouts.sum() == 3 and not data.terminals.any()
    assert data.episode_starts().nonzero()[0].tolist() == [0, 20, 40]
    # Minari keeps the final observation, so next_observations continue each episode exactly
    np.testing.assert_array_equal(data.next_observations[:19], data.observations[1:20])
    np.testing.assert_allclose(np.linalg.norm(data.observations[:, :2], axis=1), 1.0, rtol=1e-5)  # (cos, sin)
    assert data.metadata["policy"] == "uniform random"
    with pytest.raises(DatasetError, match="observation shape \\(3,\\) does not match the env's \\(11,\\)"):
        load_dataset("minari:pendulum-random-v0", obs_shape=(11,))


def test_load_dataset_resolves_names_and_says_where_files_were_expected(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("CADENCE_DATA_DIR", str(tmp_path / "cadence"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    with pytest.raises(DatasetError, match="d4rl.*hopper-medium-v2.hdf5.*never downloads"):
        load_dataset("d4rl:hopper-medium-v2")
    with pytest.raises(DatasetError, match="cadence collect"):
        load_dataset("hopper-medium")
    with pytest.raises(DatasetError, match="no Minari dataset here"):
        load_dataset("minari:nothing-v0")
    (tmp_path / "d4rl").mkdir()
    write_h5(tmp_path / "d4rl" / "hopper-medium-v2.hdf5", episodes())
    assert len(load_dataset("d4rl:hopper-medium-v2")) == 7
    OfflineDataset(**episodes()).save_hdf5(tmp_path / "cadence" / "hopper-medium-v5.hdf5")
    assert len(load_dataset("hopper-medium")) == len(load_dataset("hopper-medium-v5")) == 7



def test_minari_format_does_not_import_datasets():
    # one-way dependency: datasets uses minari_format, never the reverse (not even for type checking)
    import cadence.replay.minari_format as minari_format

    tree = ast.parse(Path(minari_format.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "cadence.replay.datasets" not in imported
    for first in ("cadence.replay.minari_format", "cadence.replay.datasets"):
        code = f"import {first}; from cadence.replay.minari_format import read_minari, write_minari"
        subprocess.run([sys.executable, "-c", code], check=True)  # either module imports first on its own
