import math

import pytest
import torch

from cadence.world_models.ensemble import EnsembleConfig, GaussianEnsemble
from cadence.world_models.rollout import (
    ModelDiverged,
    RolloutConfig,
    model_rollout,
    mopo_penalty,
    random_elite_sample,
)


def small_model():
    torch.manual_seed(0)
    return GaussianEnsemble(3, 1, EnsembleConfig(n_members=4, n_elites=2, hidden_sizes=(16,)))


def test_mopo_penalty_is_the_largest_elite_std_norm(monkeypatch):
    model = small_model()
    # member k predicts log-variance 2*log(k+1) everywhere: std k+1 on each of the 4 outputs (3 deltas + reward)
    logvar = torch.stack([torch.full((2, 4), 2 * math.log(k + 1)) for k in range(4)])
    monkeypatch.setattr(model, "forward", lambda obs, act: (torch.zeros_like(logvar), logvar))
    model.elites.copy_(torch.tensor([0, 2]))  # elites have std 1 and 3: norms 2 and 6 over 4 outputs
    penalty = mopo_penalty(model)(torch.zeros(2, 3), torch.zeros(2, 1))
    torch.testing.assert_close(penalty, torch.tensor([6.0, 6.0]))


def test_rollout_stops_rows_at_termination_and_penalises_rewards():
    # a known "model": s' = s + 1, reward 2; terminate once the first coordinate reaches 3
    choose = lambda obs, act: (obs + 1, torch.full((obs.shape[0],), 2.0), torch.ones(obs.shape[0], dtype=torch.bool))
    start = torch.tensor([[0.0, 0, 0], [1.5, 0, 0], [5.0, 0, 0]])
    out = model_rollout(start, lambda o: torch.zeros(o.shape[0], 1), choose, lambda s: s[:, 0] >= 3,
                        RolloutConfig(length=4, penalty_coef=0.5), penalty=lambda o, a: torch.ones(o.shape[0]))
    # row 0: 0->1->2->3 (ends at step 2); row 1: 1.5->2.5->3.5 (ends at step 1); row 2: 5->6 (ends at step 0)
    assert sorted(out["step"].tolist()) == [0, 0, 0, 1, 1, 2]
    assert out["terminated"].sum() == 3 and out["obs"].shape == (6, 3)
    torch.testing.assert_close(out["reward"], torch.full((6,), 1.5))  # 2 - 0.5 * 1
    torch.testing.assert_close(out["next_obs"], out["obs"] + 1)


def test_rollout_stores_a_row_the_choice_does_not_keep_as_terminal():
    calls = []

    def choose(obs, act):
        calls.append(obs.shape[0])
        return obs, torch.zeros(obs.shape[0]), obs[:, 0] > 0  # rows with a non-positive first coordinate end
    start = torch.tensor([[1.0], [-1.0], [2.0]])
    out = model_rollout(start, lambda o: torch.zeros(o.shape[0], 1), choose,
                        lambda s: torch.zeros(s.shape[0], dtype=torch.bool),
                        RolloutConfig(length=3))
    # the unkept row's step is stored once, as terminal (MOREC's early termination), and the row stops there
    assert calls == [3, 2, 2] and len(out["obs"]) == 7
    assert out["terminated"].tolist() == [False, True, False, False, False, False, False]
    torch.testing.assert_close(out["obs"][1], torch.tensor([-1.0]))


def test_rollout_clips_next_states():
    choose = lambda obs, act: (obs * 100, torch.zeros(obs.shape[0]), torch.ones(obs.shape[0], dtype=torch.bool))
    out = model_rollout(torch.tensor([[1.0, -1.0]]), lambda o: torch.zeros(o.shape[0], 1), choose,
                        lambda s: torch.zeros(s.shape[0], dtype=torch.bool), RolloutConfig(length=2, clip=25.0))
    torch.testing.assert_close(out["next_obs"], torch.tensor([[25.0, -25.0], [25.0, -25.0]]))
    with pytest.raises(ValueError, match="clip"):
        RolloutConfig(clip=0.0)


def test_random_elite_sample_uses_elites_only_and_rollout_names_the_nan_step():
    model = small_model()
    model.elites.copy_(torch.tensor([1, 3]))
    with torch.no_grad():
        model.net.net[-1].bias[0].fill_(float("nan"))  # member 0 is broken but never an elite
    next_obs, reward, keep = random_elite_sample(model, torch.Generator().manual_seed(0))(torch.zeros(64, 3),
                                                                                          torch.zeros(64, 1))
    assert torch.isfinite(next_obs).all() and torch.isfinite(reward).all() and keep.all()
    model.elites.copy_(torch.tensor([0, 0]))
    with pytest.raises(ModelDiverged, match="rollout step 0 of 5"):
        model_rollout(torch.zeros(4, 3), lambda o: torch.zeros(o.shape[0], 1), random_elite_sample(model),
                      lambda s: torch.zeros(s.shape[0], dtype=torch.bool))
    with pytest.raises(ValueError, match="rollout length"):
        RolloutConfig(length=0)
