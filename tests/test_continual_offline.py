"""The continual offline loop: a sequence of data sets learned in order, evaluated on every task, resumable."""

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from cadence.agents.oer import ContinualOffline, ContinualOfflineConfig
from cadence.checkpoint import load_checkpoint
from cadence.config import ConfigError
from cadence.loops import HookError
from cadence.loops.continual_offline import ContinualOfflineTrainConfig, train_continual_offline

OBS, ACT = 17, 6  # HalfCheetah's, for cheetah-vel-3
TINY = {"hidden_sizes": (16, 16), "batch_size": 32, "memory": 90, "mbes_starts": 8, "mbes_horizon": 3,
        "mbes_model_rows": 200, "mbes_model_epochs": 1, "mbes_max_states": 30}


def sequence_data(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for task in range(3):
        obs = torch.randn(n, OBS, generator=g) * 0.1
        out.append({"obs": obs, "action": torch.rand(n, ACT, generator=g) * 2 - 1,
                    "reward": torch.full((n,), float(task)), "next_obs": obs + 0.01,
                    "terminated": torch.zeros(n, dtype=torch.bool), "episode_start": torch.arange(n) % 100 == 0})
    return out


def make(strategy="oer"):
    torch.manual_seed(0)
    config = ContinualOfflineConfig(**TINY)
    learner = ContinualOffline(spaces.Box(-np.inf, np.inf, (OBS,)), spaces.Box(-1.0, 1.0, (ACT,)), 3, strategy, config)
    train = ContinualOfflineTrainConfig(sequence="cheetah-vel-3", steps_per_task=20, eval_every=10, eval_episodes=1,
                                        episode_steps=15, checkpoint_every=5, log_every=5, torch_threads=1,
                                        progress=False)
    return learner, train


def test_every_task_is_learned_in_order_and_scored_on_every_task(tmp_path):
    learner, config = make("oer")
    state = train_continual_offline(learner, sequence_data(), config, tmp_path, reference=[(-10.0, 0.0)] * 3)
    assert state.step == 60 and config.total_steps == 60
    record = json.loads((tmp_path / "continual_return.json").read_text())
    matrix = np.array(record["record"]["matrix"], dtype=float)
    assert matrix.shape == (3, 3) and np.isfinite(matrix).all()  # after each task, every task (learned or not)
    scores = np.array(json.loads((tmp_path / "continual_normalized_score.json").read_text())["record"]["matrix"])
    np.testing.assert_allclose(scores, 100 * (matrix + 10) / 10)
    assert {"average_performance", "forgetting"} <= set(record["metrics"])
    assert (tmp_path / "continual_return.png").is_file()
    assert learner.memory.task_counts() == {0: 30, 1: 30, 2: 30}


def test_a_killed_run_resumes_to_the_same_records(tmp_path):
    data = sequence_data()
    learner, config = make("dbc")
    train_continual_offline(learner, data, config, tmp_path / "full")

    def crash(state):
        if state.step == 33:
            raise RuntimeError("crash")

    learner, config = make("dbc")
    with pytest.raises(HookError, match="crash"):
        train_continual_offline(learner, data, config, tmp_path / "cut", callbacks=[crash])
    assert load_checkpoint(tmp_path / "cut")["counters"]["step"] == 30
    learner, config = make("dbc")
    train_continual_offline(learner, data, config, tmp_path / "cut", resume=True)
    full, cut = (json.loads((tmp_path / d / "continual_return.json").read_text()) for d in ("full", "cut"))
    assert full["record"]["matrix"] == cut["record"]["matrix"]


def test_bad_data_and_settings_fail_before_training(tmp_path):
    learner, config = make("er")
    data = sequence_data()
    wrong = [*data[:2], {**data[2], "obs": data[2]["obs"][:, :5]}]
    with pytest.raises(ValueError, match="task velocity=2.5: obs has shape \\(5,\\), the env's is \\(17,\\)"):
        train_continual_offline(learner, wrong, config, tmp_path / "a")
    with pytest.raises(ValueError, match="3 tasks .* but 2 data sets"):
        train_continual_offline(learner, data[:2], config, tmp_path / "b")
    nan = [*data[:2], {**data[2], "reward": data[2]["reward"] * float("nan")}]
    with pytest.raises(ValueError, match="reward holds NaN"):
        train_continual_offline(learner, nan, config, tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")
    with pytest.raises(ValueError, match="unknown task sequence 'cheetah-vel-4'"):
        ContinualOfflineTrainConfig(sequence="cheetah-vel-4")
    with pytest.raises(ConfigError):
        ContinualOfflineTrainConfig(dataset_kind="best")
    learner, config = make("er")
    resumed_elsewhere = sequence_data(seed=1)
    train_continual_offline(learner, sequence_data(), config, tmp_path / "run")
    learner, config = make("er")
    with pytest.raises(ValueError, match="trained on other data sets"):
        train_continual_offline(learner, resumed_elsewhere, config, tmp_path / "run", resume=True)


# --- through the CLI, on collected data sets ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_task_data(tmp_path_factory):
    """``cheetah-vel-2`` (medium, 200 transitions per task) collected into a fresh data folder."""
    from cadence.collection import CollectConfig, collect
    from cadence.envs import tasks

    root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(tasks.SEQUENCES, "cheetah-vel-2", ("CheetahVel-v0", [[0.5], [1.5]]))
        mp.setenv("CADENCE_DATA_DIR", str(root))
        collect(CollectConfig(sequence="cheetah-vel-2", size=200, policy_steps=300, eval_every=100, threads=1,
                              progress=False, reference_episodes=1),
                ("agent.learning_starts=100", "agent.batch_size=16", "agent.hidden_sizes=[16, 16]",
                 "train.eval_episodes=1"))
        yield root


def test_cadence_train_oer_learns_the_collected_sequence(two_task_data, tmp_path, monkeypatch, capsys):
    from cadence.cli import main
    from cadence.envs import tasks

    monkeypatch.setitem(tasks.SEQUENCES, "cheetah-vel-2", ("CheetahVel-v0", [[0.5], [1.5]]))
    monkeypatch.setenv("CADENCE_DATA_DIR", str(two_task_data))
    small = ["--set", "agent.hidden_sizes=[16, 16]", "--set", "agent.batch_size=32", "--set", "agent.mbes_starts=8",
             "--set", "agent.mbes_horizon=3", "--set", "agent.mbes_model_epochs=1", "--set", "train.eval_episodes=1",
             "--set", "train.episode_steps=20", "--set", "train.torch_threads=1", "--no-progress"]
    assert main(["train", "oer", "--sequence", "cheetah-vel-2", "--memory", "100", "--steps-per-task", "20",
                 "--run-dir", str(tmp_path / "oer"), *small]) == 0
    out = capsys.readouterr().out
    assert "task 2/2 (velocity=1.5) done" in out and "done: 40 gradient steps" in out
    metrics = json.loads((tmp_path / "oer" / "metrics.json").read_text())
    assert metrics["sequence"] == "cheetah-vel-2" and "average_performance" in metrics["continual"]["return"]
    # bad input: a memory larger than the data, an unknown sequence, missing data sets
    assert main(["train", "er", "--sequence", "cheetah-vel-2", "--memory", "500", "--run-dir",
                 str(tmp_path / "big"), *small]) != 0
    assert "agent.memory=500 is larger than the sequence's data (400 transitions" in capsys.readouterr().err
    assert main(["train", "er", "--sequence", "cheetah-vel-9", "--run-dir", str(tmp_path / "x"), *small]) != 0
    assert "unknown task sequence 'cheetah-vel-9'" in capsys.readouterr().err
    assert main(["train", "er", "--sequence", "cheetah-vel-5", "--run-dir", str(tmp_path / "y"), *small]) != 0
    err = capsys.readouterr().err
    assert "missing cheetah-vel-5-0-medium-v5.hdf5" in err and "cadence collect --sequence cheetah-vel-5" in err
    assert not any((tmp_path / d).exists() for d in ("big", "x", "y"))
    assert main(["train", "sac", "--memory", "10", "--run-dir", str(tmp_path / "z")]) != 0
    assert "--memory is for the continual offline algos" in capsys.readouterr().err
