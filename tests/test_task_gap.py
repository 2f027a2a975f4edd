"""Task gaps: how differently a sequence's tasks move the same (s, a), and the warning when forgetting cannot show."""

import json

import numpy as np
import pytest

from cadence.cli import main as cli_main
from cadence.envs.task_gap import MIN_GAP_RATIO, gap_warning, task_gap
from cadence.world_models.single_task import single_task_error


def test_reversed_motors_conflict_and_reward_only_tasks_share_their_dynamics():
    motor = task_gap("halfcheetah-motor-3", n=100, seed=1)
    assert motor.labels == ["normal", "reversed", "reversed-back"]
    assert motor.state_gap.shape == (3, 3) and np.all(np.diag(motor.state_gap) == 0)
    # every motor reversed moves the same (s, a) about twice as far from normal as half of them reversed
    assert motor.min_state_gap > 0.3 and motor.state_gap[0, 1] > 1.5 * motor.state_gap[0, 2]
    assert {k: len(v) for k, v in motor.data[0].items()} == {"obs": 100, "action": 100, "next_obs": 100,
                                                             "reward": 100}
    velocity = task_gap("cheetah-vel-3", n=50, seed=1)
    assert velocity.min_state_gap < 1e-20  # same physics: identical next states
    assert velocity.min_reward_gap > 1.0  # the target velocity changes the reward
    hopper = task_gap("hopper-physics-3", n=100, seed=1)
    assert hopper.min_state_gap < 0.05 * motor.min_state_gap
    saved = json.loads(json.dumps(motor.to_dict()))
    assert saved["min_state_gap"] == pytest.approx(motor.min_state_gap) and "data" not in saved


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown task sequence 'halfcheetah-motor-9'.*halfcheetah-motor-3"):
        task_gap("halfcheetah-motor-9")
    with pytest.raises(ValueError, match="n >= 2"):
        task_gap("halfcheetah-motor-3", n=1)


def test_the_warning_names_the_ratio_and_the_reward():
    assert gap_warning("s", 1.0, 0.0, 1.0 / MIN_GAP_RATIO) is None
    text = gap_warning("cheetah-vel-3", 0.0, 3.5, 0.05)
    assert "cannot show forgetting" in text and "0.0x" in text and "reward gap 3.5" in text
    assert "reward" not in gap_warning("hopper-physics-3", 0.008, 0.001, 0.02).split("(below")[1]


def test_a_single_task_model_beats_the_no_change_predictor():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(600, 3)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(600, 1)).astype(np.float32)
    next_obs = obs + 0.5 * action + 0.1 * obs[:, ::-1]
    data = {"obs": obs, "action": action, "next_obs": next_obs, "reward": np.zeros(600, np.float32)}
    scale = (next_obs - obs).std(0)
    error = single_task_error(data, scale, steps=400, seed=0, hidden_sizes=(32, 32))
    no_change = float(np.mean(((next_obs - obs) / scale) ** 2))
    assert error < 0.1 * no_change
    with pytest.raises(ValueError, match="steps must be >= 1"):
        single_task_error(data, scale, steps=0)


def test_cli_prints_the_gap_writes_json_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "gap.json"
    assert cli_main(["task-gap", "halfcheetah-motor-3", "--n", "60", "--fit-steps", "20", "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "reversed-back" in text.out and "single-task model" in text.out
    saved = json.loads(out.read_text())
    assert saved["labels"] == ["normal", "reversed", "reversed-back"] and saved["single_task_error"] > 0
    assert cli_main(["task-gap", "nope"]) == 2
    assert "unknown task sequence 'nope'" in capsys.readouterr().err
    assert cli_main(["task-gap", "halfcheetah-motor-3", "--n", "1"]) == 2
    assert "--n must be >= 2" in capsys.readouterr().err
