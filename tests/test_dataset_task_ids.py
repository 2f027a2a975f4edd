"""Task ids survive every round trip: ReplayBuffer -> OfflineDataset, HDF5, Minari, and concatenation."""

from pathlib import Path

import h5py
import minari
import numpy as np
import pytest

from cadence.replay import DatasetError, OfflineDataset, ReplayBuffer
from cadence.replay.collect import buffer_to_dataset
from cadence.replay.minari_format import TASK_INFO_KEY

FIXTURES = Path(__file__).parent / "data"


def rollout(lengths, tasks, obs_dim=3, act_dim=2, seed=0, cut_last=True):
    """Episodes of the given lengths and tasks, with exact next observations (so Minari can hold them).

    Every episode terminates except the last, a timeout when ``cut_last``. ``tasks`` is one id per episode,
    or per row (an array of ``sum(lengths)``) for episodes that mix tasks.
    """
    rng = np.random.default_rng(seed)
    obs, nxt, terminals, timeouts = [], [], [], []
    for i, n in enumerate(lengths):
        seq = rng.standard_normal((n + 1, obs_dim)).astype(np.float32)  # n observations and the final one
        obs.append(seq[:-1])
        nxt.append(seq[1:])
        end = np.zeros(n, bool)
        end[-1] = True
        last = i == len(lengths) - 1
        terminals.append(end & (not (last and cut_last)))
        timeouts.append(end & (last and cut_last))
    n = sum(lengths)
    task_ids = np.asarray(tasks) if len(tasks) == n else np.repeat(tasks, lengths)
    return OfflineDataset(np.concatenate(obs), rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
                          rng.standard_normal(n).astype(np.float32), np.concatenate(terminals),
                          np.concatenate(timeouts), next_observations=np.concatenate(nxt), task_ids=task_ids)


def assert_same_rows(back, data):
    assert back.arrays().keys() == data.arrays().keys()
    for key, value in data.arrays().items():
        np.testing.assert_array_equal(back.arrays()[key], value, err_msg=key)


def switch_starts_an_episode(data, row):
    assert data.task_ids[row - 1] != data.task_ids[row] and data.episode_starts()[row]


# --- ReplayBuffer -> OfflineDataset ---------------------------------------------------------------------
def test_buffer_to_dataset_keeps_task_ids_per_row():
    data = rollout((3, 2, 4), (0, 0, 1))  # task 0 for two episodes, then task 1 from row 5
    buf = data.to_buffer()
    assert buf.storage["task_id"].tolist() == [0] * 5 + [1] * 4
    back = buffer_to_dataset(buf)
    assert back.task_ids.dtype == np.int64
    assert_same_rows(back, data)
    switch_starts_an_episode(back, 5)


def test_buffer_to_dataset_unwraps_task_ids_of_a_circular_buffer():
    buf = ReplayBuffer(4, 1, 1)
    for t in range(6):  # rows 0..5; rows 2..5 survive, stored at positions 2, 3, 0, 1; task 2 from row 4
        buf.add([t], [0.0], float(t), [t + 1], terminated=(t == 3), task_id=0 if t < 4 else 2,
                episode_start=(t in (0, 4)))
    data = buffer_to_dataset(buf)
    assert data.rewards.tolist() == [2, 3, 4, 5] and data.task_ids.tolist() == [0, 0, 2, 2]


def test_single_task_buffer_gives_no_task_ids_unless_asked():
    buf = rollout((3, 4), (0, 0)).to_buffer()
    assert buffer_to_dataset(buf).task_ids is None  # as before: a ReplayBuffer reads None as task 0
    assert buffer_to_dataset(buf, keep_task_ids=True).task_ids.tolist() == [0] * 7
    assert buffer_to_dataset(rollout((3, 4), (0, 1)).to_buffer(), keep_task_ids=False).task_ids is None


# --- HDF5 -------------------------------------------------------------------------------------------------
def test_hdf5_round_trip_keeps_task_ids(tmp_path):
    data = rollout((3, 2, 4), (0, 0, 1))
    data.save_hdf5(tmp_path / "d.hdf5")
    assert [p.name for p in tmp_path.iterdir()] == ["d.hdf5"]  # written atomically, no temp left
    with h5py.File(tmp_path / "d.hdf5") as h5:
        assert np.issubdtype(h5["task_ids"].dtype, np.integer)
    back = OfflineDataset.load_hdf5(tmp_path / "d.hdf5")
    assert_same_rows(back, data)
    assert back.task_ids.dtype == np.int64
    switch_starts_an_episode(back, 5)
    # D4RL's layout without next observations: with_known_next drops rows but keeps each row's task
    d4rl = OfflineDataset(**{k: v for k, v in data.arrays().items() if k != "next_observations"})
    known = d4rl.with_known_next()
    assert known.task_ids.tolist() == [0] * 5 + [1] * 3  # the final timeout row, with no known successor, dropped


def test_hdf5_without_task_ids_loads_with_none(tmp_path):
    data = rollout((3, 4), (0, 0))
    data.task_ids = None
    data.save_hdf5(tmp_path / "d.hdf5")
    with h5py.File(tmp_path / "d.hdf5") as h5:
        assert "task_ids" not in h5
    assert OfflineDataset.load_hdf5(tmp_path / "d.hdf5").task_ids is None


# --- Minari -----------------------------------------------------------------------------------------------
def test_minari_round_trip_keeps_task_ids(tmp_path):
    data = rollout((3, 2, 4), (0, 0, 1), cut_last=False)  # the last episode is a collector cut
    data.timeouts[-1] = False
    data.terminals[-1] = False
    folder = data.save_minari("toy-tasks-v0", root=tmp_path)
    # stored with Minari's own API, one id per observation (steps + 1), as Minari's infos are
    episodes = list(minari.MinariDataset(folder / "data").iterate_episodes())
    assert [ep.infos[TASK_INFO_KEY].tolist() for ep in episodes] == [[0] * 4, [0] * 3, [1] * 5]
    back = OfflineDataset.load_minari(folder)
    assert back.task_ids.dtype == np.int64
    expected = data.arrays()
    expected["timeouts"] = expected["timeouts"].copy()
    expected["timeouts"][-1] = True  # Minari's cut becomes a timeout row (module docstring)
    for key, value in expected.items():
        np.testing.assert_array_equal(back.arrays()[key], value, err_msg=key)
    switch_starts_an_episode(back, 5)


def test_minari_episode_that_mixes_tasks_round_trips(tmp_path):
    tasks = np.array([0, 0, 0, 1, 1, 2, 2])  # episode 2 (rows 3..6) switches from task 1 to task 2 at row 5
    data = rollout((3, 4), tasks)
    back = OfflineDataset.load_minari(data.save_minari("toy-mixed-v0", root=tmp_path))
    assert_same_rows(back, data)


def test_minari_without_task_ids_loads_with_none(tmp_path, monkeypatch):
    data = rollout((3, 4), (0, 0))
    data.task_ids = None
    folder = data.save_minari("toy-plain-v0", root=tmp_path)
    assert all(TASK_INFO_KEY not in (ep.infos or {}) for ep in minari.MinariDataset(folder / "data").iterate_episodes())
    assert OfflineDataset.load_minari(folder).task_ids is None
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(FIXTURES / "minari"))  # written by Minari's DataCollector
    assert OfflineDataset.load_minari("pendulum-random-v0").task_ids is None


def write_raw_minari(root, dataset_id, infos, monkeypatch):
    """A Minari dataset of two 3-step episodes written with Minari's own API, with the given infos per episode."""
    import gymnasium as gym
    from minari.data_collector.episode_buffer import EpisodeBuffer

    rng = np.random.default_rng(0)
    buffers = [EpisodeBuffer(id=i, observations=rng.standard_normal((4, 2)).astype(np.float32),
                             actions=rng.uniform(-1, 1, (3, 1)).astype(np.float32), rewards=np.zeros(3),
                             terminations=np.array([False, False, True]), truncations=np.zeros(3, bool), infos=info)
               for i, info in enumerate(infos)]
    with monkeypatch.context() as m:
        m.setenv("MINARI_DATASETS_PATH", str(root))
        minari.create_dataset_from_buffers(dataset_id, buffers, algorithm_name="test", author="cadence tests",
                                           data_format="hdf5", observation_space=gym.spaces.Box(-np.inf, np.inf, (2,)),
                                           action_space=gym.spaces.Box(-1, 1, (1,)))
    return Path(root) / dataset_id


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minari_task_ids_in_some_episodes_only_or_of_wrong_length_are_refused(tmp_path, monkeypatch):
    folder = write_raw_minari(tmp_path, "raw-partial-v0", [{TASK_INFO_KEY: np.zeros(4, np.int64)}, {}], monkeypatch)
    with pytest.raises(DatasetError, match="episode 1 has no 'task_id' info but episode 0 has") as err:
        OfflineDataset.load_minari(folder)
    assert err.value.key == "task_ids"
    folder = write_raw_minari(tmp_path, "raw-short-v0", [{TASK_INFO_KEY: np.zeros(2, np.int64)}] * 2, monkeypatch)
    with pytest.raises(DatasetError, match="episode 0: info 'task_id' has shape \\(2,\\), expected 4 entries"):
        OfflineDataset.load_minari(folder)
    # T entries (one per step, no final observation's) are read too
    folder = write_raw_minari(tmp_path, "raw-steps-v0", [{TASK_INFO_KEY: np.full(3, i)} for i in (4, 5)], monkeypatch)
    assert OfflineDataset.load_minari(folder).task_ids.tolist() == [4, 4, 4, 5, 5, 5]
    folder = write_raw_minari(tmp_path, "raw-float-v0", [{TASK_INFO_KEY: np.zeros(4)}] * 2, monkeypatch)
    with pytest.raises(DatasetError, match="task_ids.*must be integers, got dtype float64") as err:
        OfflineDataset.load_minari(folder)
    assert str(folder) in str(err.value)


# --- bad task ids -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_ids, problem", [
    (np.zeros(6, np.int64), "has 6 rows but rewards has 7"),
    (np.zeros(7, np.float32), "must be integers, got dtype float32"),
    (np.zeros(7, bool), "must be integers, got dtype bool"),
    (np.array([0, 0, 0, -1, 1, -2, 1]), "must be >= 0, got -1 \\(first at row 3\\)"),
    (np.zeros((7, 1), np.int64), "must be 1-D \\(one task per row\\), got shape \\(7, 1\\)"),
    (np.full(7, 2**31, np.int64), "must be at most 2147483647"),
])
def test_bad_task_ids_are_refused(tmp_path, task_ids, problem):
    arrays = rollout((3, 4), (0, 1)).arrays()
    with pytest.raises(DatasetError, match=problem) as err:
        OfflineDataset(**{**arrays, "task_ids": task_ids}, source="toy")
    assert err.value.key == "task_ids" and str(err.value).startswith("toy")
    # the same from a file names the file
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as h5:
        for key, value in {**arrays, "task_ids": task_ids}.items():
            h5.create_dataset(key, data=value)
    with pytest.raises(DatasetError, match=problem) as err:
        OfflineDataset.load_hdf5(path)
    assert err.value.key == "task_ids" and str(path) in str(err.value)


def test_integer_task_ids_of_any_width_are_held_as_int64():
    data = rollout((3, 4), (0, 1))
    narrow = OfflineDataset(**{**data.arrays(), "task_ids": data.task_ids.astype(np.uint8)})
    assert narrow.task_ids.dtype == np.int64 and narrow.task_ids.tolist() == data.task_ids.tolist()


# --- concatenate ------------------------------------------------------------------------------------------
def test_concatenate_joins_a_task_sequence_in_order():
    a, b = rollout((3, 2), (0, 0), seed=1), rollout((4,), (1,), seed=2)
    a.source, b.source = "a.hdf5", "b.hdf5"
    a.task_ids = None
    b.timeouts[-1] = False  # b ends mid-episode: the join still ends it
    c = rollout((2,), (5,), seed=3)
    c.timeouts[-1] = False
    both = OfflineDataset.concatenate([a, b, c], task_ids=[0, None, 5], metadata={"sequence": "a b c"})
    assert both.task_ids.tolist() == [0] * 5 + [1] * 4 + [5] * 2
    switch_starts_an_episode(both, 5)
    switch_starts_an_episode(both, 9)
    assert both.timeouts[8] and both.timeouts[10]  # each input's unfinished last row ends an episode
    np.testing.assert_array_equal(both.next_observations[5:9], b.next_observations)
    assert both.metadata == {"sequence": "a b c"} and "a.hdf5" in both.source and "b.hdf5" in both.source
    # every row keeps its task into a ReplayBuffer and back
    assert buffer_to_dataset(both.to_buffer()).task_ids.tolist() == both.task_ids.tolist()


def test_concatenate_refuses_unknown_or_contradicting_task_ids():
    a, b = rollout((3,), (0,)), rollout((4,), (1,))
    a.task_ids, a.source = None, "a.hdf5"
    with pytest.raises(DatasetError, match="a.hdf5.*data set 0 has no task ids; pass task_ids"):
        OfflineDataset.concatenate([a, b])
    with pytest.raises(DatasetError, match="a.hdf5.*data set 0 has no task ids"):
        OfflineDataset.concatenate([a, b], task_ids=[None, None])
    with pytest.raises(DatasetError, match="task id 2 given for data set 1, which has tasks \\[1\\]"):
        OfflineDataset.concatenate([a, b], task_ids=[0, 2])
    assert OfflineDataset.concatenate([a, b], task_ids=[0, 1]).task_ids.tolist() == [0] * 3 + [1] * 4
    with pytest.raises(DatasetError, match="got 1 task ids for 2 data sets"):
        OfflineDataset.concatenate([a, b], task_ids=[0])
    with pytest.raises(DatasetError, match="task id -1 given for data set 0 is not an integer"):
        OfflineDataset.concatenate([a, b], task_ids=[-1, None])
    with pytest.raises(DatasetError, match="no data sets"):
        OfflineDataset.concatenate([])


def test_concatenate_refuses_other_shapes_naming_both_shapes_and_sources():
    a = rollout((3,), (0,), obs_dim=3, act_dim=2)
    a.source = "hopper.hdf5"
    wide = rollout((3,), (1,), obs_dim=5, act_dim=2)
    wide.source = "walker.hdf5"
    with pytest.raises(DatasetError, match=r"walker.hdf5, key 'observations': observation shape \(5,\) differs "
                                           r"from \(3,\) in hopper.hdf5") as err:
        OfflineDataset.concatenate([a, wide])
    assert err.value.key == "observations"
    other_act = rollout((3,), (1,), obs_dim=3, act_dim=1)
    other_act.source = "pendulum.hdf5"
    with pytest.raises(DatasetError, match=r"pendulum.hdf5, key 'actions': action shape \(1,\) differs "
                                           r"from \(2,\) in hopper.hdf5"):
        OfflineDataset.concatenate([a, other_act])
    d4rl = rollout((3,), (1,))
    d4rl.next_observations, d4rl.source = None, "d4rl.hdf5"
    with pytest.raises(DatasetError, match="d4rl.hdf5.*not stored, but hopper.hdf5 stores them"):
        OfflineDataset.concatenate([a, d4rl])
