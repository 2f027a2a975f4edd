import json

import numpy as np
import pytest

from cadence.cli import main
from cadence.collection import CollectConfig, collect
from cadence.config import ConfigError
from cadence.envs import make
from cadence.evaluation import scores
from cadence.replay import OfflineDataset, ReplayBuffer, load_dataset
from cadence.replay.collect import buffer_to_dataset, collect_transitions, uniform_policy


def test_collect_transitions_is_exact_and_reproducible():
    env = make("Hopper-v5")
    data = collect_transitions(env, uniform_policy(env.action_space, 0), 150, seed=3)
    again = collect_transitions(env, uniform_policy(env.action_space, 0), 150, seed=3)
    for k, v in data.arrays().items():
        np.testing.assert_array_equal(again.arrays()[k], v)
    assert len(data) == 150 and data.timeouts[-1]  # the cut last episode is a timeout, as in D4RL
    ends = np.flatnonzero(data.terminals | data.timeouts)
    assert data.terminals.sum() >= 2  # random Hopper falls within ~20-60 steps
    within = np.setdiff1d(np.arange(149), ends)
    np.testing.assert_array_equal(data.next_observations[within], data.observations[within + 1])
    first, _ = make("Hopper-v5").reset(seed=3)
    np.testing.assert_array_equal(data.observations[0], first.astype(np.float32))


def test_buffer_to_dataset_unwraps_the_circular_buffer():
    buf = ReplayBuffer(4, 1, 1)
    for t in range(6):  # rows 0..5; rows 2..5 survive, stored at positions 2, 3, 0, 1
        buf.add([t], [0.0], float(t), [t + 1], terminated=(t == 3), episode_start=(t in (0, 4)))
    data = buffer_to_dataset(buf)
    assert data.rewards.tolist() == [2, 3, 4, 5]
    assert data.terminals.tolist() == [False, True, False, False]
    assert data.timeouts.tolist() == [False, False, False, True]


def test_concatenate_keeps_part_boundaries():
    env = make("Hopper-v5")
    a = collect_transitions(env, uniform_policy(env.action_space, 0), 30, seed=0)
    b = collect_transitions(env, uniform_policy(env.action_space, 1), 20, seed=9)
    both = OfflineDataset.concatenate([a, b])
    assert both.task_ids is None  # parts of one task
    assert len(both) == 50 and (both.terminals | both.timeouts)[29]
    np.testing.assert_array_equal(both.observations[30:], b.observations)


def test_normalized_score_uses_the_right_table(tmp_path):
    table = tmp_path / "refs.json"
    scores.record_reference("Hopper-v5", "random", 20.0, {"episodes": 3}, path=table)
    with pytest.raises(ValueError, match="no cadence expert reference for Hopper-v5.*--kind expert"):
        scores.normalized_score("Hopper-v5", 100.0, path=table)
    scores.record_reference("Hopper-v5", "expert", 220.0, {"episodes": 3}, path=table)
    assert scores.normalized_score("hopper-medium", 120.0, path=table) == pytest.approx(50.0)
    assert json.loads(table.read_text())["Hopper-v5"]["expert"] == {"return": 220.0, "episodes": 3}
    # D4RL's own files use D4RL's published Gym-v2 references, never cadence's
    low, high = scores.D4RL_REFERENCE_SCORES["hopper"]
    assert scores.normalized_score("d4rl:hopper-medium-v2", high) == pytest.approx(100.0)
    assert scores.normalized_score("d4rl:hopper-medium-v2", low) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="finite"):
        scores.record_reference("Hopper-v5", "random", float("nan"), {}, path=table)


def test_collect_every_kind_from_one_small_sac_run(tmp_path, monkeypatch):
    monkeypatch.setattr(scores, "REFERENCE_TABLE", tmp_path / "refs.json")
    monkeypatch.setenv("CADENCE_DATA_DIR", str(tmp_path))
    cfg = dict(env="Hopper-v5", size=120, policy_steps=400, eval_every=200, reference_episodes=2, threads=1,
               progress=False, record_reference=True)
    small = ("agent.learning_starts=100", "agent.batch_size=16", "train.eval_episodes=1")
    path = collect(CollectConfig(kind="medium-expert", **cfg), small)
    assert path == tmp_path / "hopper-medium-expert-v5.hdf5"
    medium, expert = load_dataset("hopper-medium"), load_dataset("hopper-expert", obs_shape=(11,), act_shape=(3,))
    both = load_dataset("hopper-medium-expert")
    assert len(both) == 240 and both.metadata["kind"] == "medium-expert"
    assert both.metadata["episodes"] == len(medium.episode_returns()) + len(expert.episode_returns())
    returns = np.r_[medium.episode_returns(), expert.episode_returns()]
    assert both.metadata["mean_return"] == pytest.approx(returns.mean())  # of the whole file, not a part
    np.testing.assert_array_equal(both.observations[120:], expert.observations)
    evals = json.loads((tmp_path / "policies" / "sac_Hopper-v5_s1" / "metrics.json").read_text())["evals"]
    assert medium.metadata["policy_steps"] in [s for s, _ in evals]  # a snapshot of the same run
    assert expert.metadata["policy_steps"] == 400 and expert.metadata["cadence_version"]
    replay = OfflineDataset.load_hdf5(collect(CollectConfig(kind="medium-replay", **cfg), small))
    assert len(replay) == medium.metadata["policy_steps"]  # the buffer up to the medium snapshot
    collect(CollectConfig(kind="random", **cfg))
    table = json.loads((tmp_path / "refs.json").read_text())["Hopper-v5"]
    assert set(table) == {"random", "expert"} and table["random"]["episodes"] == 2
    assert table["expert"]["policy"].endswith("policy at step 400")


def test_collect_rejects_bad_settings(capsys):
    with pytest.raises(ConfigError, match="medium_fraction"):
        CollectConfig(medium_fraction=1.5)
    with pytest.raises(ConfigError, match="size"):
        CollectConfig(size=0)
    with pytest.raises(SystemExit):
        main(["collect", "--kind", "mediocre"])
    assert "invalid choice: 'mediocre'" in capsys.readouterr().err
