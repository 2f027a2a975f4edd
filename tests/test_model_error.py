"""Per-column normalised world-model errors and the no-change baseline, on numbers small enough to check by hand."""

import math

import pytest
import torch

from cadence.evaluation.model_error import SCALE_FLOOR, no_change_errors, normalized_errors, transition_scale


def data() -> dict[str, torch.Tensor]:
    """Three transitions, two state columns: s' - s = [[1, 0], [0, 2], [2, 0]], r = [0, 3, 0]."""
    obs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    return {"obs": obs, "next_obs": obs + torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 0.0]]),
            "reward": torch.tensor([0.0, 3.0, 0.0]), "action": torch.zeros(3, 1)}


def test_the_scale_is_each_columns_std():
    # (sample) std of [1, 0, 2] is 1, of [0, 2, 0] sqrt(4/3), of the reward [0, 3, 0] sqrt(3)
    torch.testing.assert_close(transition_scale(data()), torch.tensor([1.0, math.sqrt(4 / 3), math.sqrt(3)]))


def test_a_column_that_never_moves_is_floored():
    d = data()
    d["obs"] = torch.cat([d["obs"], torch.full((3, 1), 5.0)], dim=1)
    d["next_obs"] = torch.cat([d["next_obs"], torch.full((3, 1), 5.0)], dim=1)
    assert transition_scale(d)[2] == pytest.approx(SCALE_FLOOR)


def test_normalized_errors_by_hand():
    d = data()
    scale = transition_scale(d)
    pred_next = d["next_obs"] + torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    pred_reward = d["reward"] + torch.tensor([0.0, -3.0, 0.0])
    errors = normalized_errors(pred_next, pred_reward, d, scale)
    # state: (1/1 + 1/(4/3)) over 6 cells; reward: 9/3 over 3 rows; raw: (1 + 1 + 9) over 9 cells
    assert errors == pytest.approx({"state": 1.75 / 6, "reward": 1.0, "raw_mse": 11 / 9})


def test_no_change_errors_by_hand():
    d = data()
    errors = no_change_errors(d, transition_scale(d))
    # predicting s' = s misses s' - s: (1 + 4) / 1 + 4 / (4/3) over 6 cells; r = 0 misses 3: 9/3 over 3 rows;
    # raw: (1 + 4 + 4 + 9) over 9 cells
    assert errors == pytest.approx({"state": 8 / 6, "reward": 1.0, "raw_mse": 2.0})
    assert normalized_errors(d["obs"], None, d, transition_scale(d)) == errors  # no reward model predicts 0


def test_bad_shapes_are_refused():
    d = data()
    scale = transition_scale(d)
    with pytest.raises(ValueError, match="predicted next observations have shape"):
        normalized_errors(d["obs"][:, :1], None, d, scale)
    with pytest.raises(ValueError, match="the scale has 2 columns, expected 3"):
        normalized_errors(d["next_obs"], None, d, scale[:2])
    with pytest.raises(ValueError, match="at least 2 transitions"):
        transition_scale({k: v[:1] for k, v in d.items()})
