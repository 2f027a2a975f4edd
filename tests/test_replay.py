import numpy as np
import pytest
import torch

from cadence.replay import ReplayBuffer


def fill_episodes(buf, lengths, truncate_last=False):
    """Episodes of the given lengths; obs[0] holds the episode id, obs[1] the step within it."""
    for ep, length in enumerate(lengths):
        for t in range(length):
            last = t == length - 1
            buf.add(obs=[ep, t], action=[0.0], reward=float(t), next_obs=[ep, t + 1],
                    terminated=last and not truncate_last, truncated=last and truncate_last, episode_start=t == 0)


def test_add_and_sample_shapes():
    buf = ReplayBuffer(100, (4,), (2,))
    buf.add(np.zeros((10, 4)), np.ones((10, 2)), np.arange(10), np.zeros((10, 4)), np.zeros(10, dtype=bool))
    assert len(buf) == 10
    batch = buf.sample(32)
    assert batch["obs"].shape == (32, 4) and batch["action"].shape == (32, 2)
    assert batch["reward"].shape == (32,) and batch["terminated"].dtype == torch.bool
    assert set(batch["reward"].tolist()) <= set(range(10))


def test_circular_overwrite_keeps_newest():
    buf = ReplayBuffer(5, (1,), (1,))
    for i in range(12):
        buf.add([i], [0.0], float(i), [i + 1], False)
    assert len(buf) == 5 and buf.pos == 2
    assert sorted(buf.storage["reward"].tolist()) == [7, 8, 9, 10, 11]
    # one batch larger than the buffer leaves what the same rows added one by one leave
    batch = ReplayBuffer(5, (1,), (1,))
    batch.add([[0.0]], [0.0], 0.0, [[1.0]], False)
    batch.add(np.arange(1, 12.0)[:, None], np.zeros((11, 1)), np.arange(1, 12.0), np.arange(2, 13.0)[:, None], False)
    assert batch.pos == buf.pos and batch.storage["reward"].tolist() == buf.storage["reward"].tolist()
    assert batch.storage["obs"].tolist() == buf.storage["obs"].tolist()


@pytest.mark.parametrize("truncate", [False, True])
def test_sequences_never_cross_episode_end(truncate):
    buf = ReplayBuffer(1000, (2,), (1,))
    lengths = [3, 1, 7, 2, 9, 4]
    fill_episodes(buf, lengths, truncate_last=truncate)
    torch.manual_seed(0)
    batch = buf.sample_sequences(500, 5)
    obs, mask = batch["obs"], batch["mask"]
    assert obs.shape == (500, 5, 2) and mask.shape == (500, 5)
    for i in range(500):
        ep, t0 = int(obs[i, 0, 0]), int(obs[i, 0, 1])
        valid = int(mask[i].sum())
        assert valid == min(5, lengths[ep] - t0)  # cut exactly at the episode end
        assert mask[i, :valid].all() and not mask[i, valid:].any()  # a prefix mask
        assert (obs[i, :, 0] == ep).all()  # every position, masked or not, is from the same episode
        np.testing.assert_array_equal(obs[i, :valid, 1].numpy(), np.arange(t0, t0 + valid))


def test_sequences_do_not_cross_interleaved_worlds():
    """A batched loop stores each decision's records world by world: chunks of 3 from world 0, then world 1."""
    buf = ReplayBuffer(1000, (2,), (1,))
    for decision in range(10):
        for world in (0, 1):
            t = np.arange(3 * decision, 3 * decision + 3, dtype=np.float32)
            obs = np.stack([np.full(3, world, np.float32), t], axis=1)
            buf.add(obs, np.zeros((3, 1)), t, obs + [0, 1], np.zeros(3, bool), episode_start=(t == 0))
    batch = buf.sample_sequences(300, 5, torch.Generator().manual_seed(0))
    for obs, mask in zip(batch["obs"], batch["mask"]):
        valid = int(mask.sum())
        assert (obs[:, 0] == obs[0, 0]).all()  # one world per window
        assert valid == 3 - int(obs[0, 1]) % 3  # cut at the end of the world's chunk
        np.testing.assert_array_equal(obs[:valid, 1].numpy(), obs[0, 1].item() + np.arange(valid))


def test_sequences_do_not_wrap_into_old_data():
    buf = ReplayBuffer(10, (2,), (1,))
    fill_episodes(buf, [13])  # one long episode overwrites its own start; newest step is t=12 at pos 2
    torch.manual_seed(0)
    batch = buf.sample_sequences(300, 4)
    steps, mask = batch["obs"][..., 1], batch["mask"].bool()
    assert (steps[mask] >= 3).all() and (steps[mask] <= 12).all()
    diffs = steps[:, 1:] - steps[:, :-1]
    assert (diffs[mask[:, 1:]] == 1).all()  # valid positions are consecutive in time


def test_save_load_round_trip(tmp_path):
    buf = ReplayBuffer(50, (3,), (2,))
    buf.add(np.random.randn(20, 3), np.random.randn(20, 2), np.random.randn(20), np.random.randn(20, 3),
            np.random.rand(20) > 0.5, task_id=np.arange(20))
    path = tmp_path / "buf.pt"
    buf.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["buf.pt"]  # no temp file left behind
    loaded = ReplayBuffer.load(path)
    assert (loaded.pos, loaded.size) == (buf.pos, buf.size)
    for k in ReplayBuffer.FIELDS:
        assert torch.equal(loaded.storage[k], buf.storage[k]), k


def test_load_into_wrong_shape_fails():
    buf = ReplayBuffer(10, (3,), (2,))
    other = ReplayBuffer(10, (4,), (2,))
    with pytest.raises(ValueError, match="obs/act"):
        other.load_state_dict(buf.state_dict())


def test_bad_input():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, (3,), (2,))
    buf = ReplayBuffer(10, (3,), (2,))
    with pytest.raises(ValueError, match="empty"):
        buf.sample(4)
    with pytest.raises(ValueError, match="obs must have shape"):
        buf.add(np.zeros(5), np.zeros(2), 0.0, np.zeros(5), False)
    buf.add(np.zeros(3), np.zeros(2), 0.0, np.zeros(3), False)
    with pytest.raises(ValueError, match="length"):
        buf.sample_sequences(4, 0)


def test_atomic_writes_are_readable_like_plain_files(tmp_path):
    from cadence.io import atomic_write_text

    path = atomic_write_text(tmp_path / "a.txt", "x")
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    path.chmod(0o640)
    atomic_write_text(path, "y")
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_text() == "y"  # a replaced file keeps its mode
