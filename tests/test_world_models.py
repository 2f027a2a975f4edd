import math

import pytest
import torch

from cadence.config import ConfigError
from cadence.world_models import EnsembleConfig, EnsembleTrainer, GaussianEnsemble

SMALL = EnsembleConfig(n_members=4, n_elites=2, hidden_sizes=(64, 64), batch_size=128, max_epochs=60, lr=3e-3)


def linear_system(n, seed=0):
    """s' = A s + B a, r = s . c: a tiny known linear system."""
    g = torch.Generator().manual_seed(seed)
    A = torch.tensor([[0.9, 0.1], [-0.2, 0.8]])
    B = torch.tensor([[0.5], [1.0]])
    obs = torch.randn(n, 2, generator=g)
    act = torch.rand(n, 1, generator=g) * 2 - 1
    return {"obs": obs, "action": act, "next_obs": obs @ A.T + act @ B.T, "reward": obs @ torch.tensor([1.0, -1.0])}


def test_shapes_and_predict():
    model = GaussianEnsemble(3, 2, SMALL)
    obs, act = torch.randn(10, 3), torch.randn(10, 2)
    mean, logvar = model(obs, act)
    assert mean.shape == logvar.shape == (4, 10, 4)  # 3 state deltas + reward
    assert (logvar <= model.max_logvar + 1e-6).all() and (logvar >= model.min_logvar - 1e-6).all()
    dist = model.predict(obs, act)
    assert dist.mean.shape == (4, 10, 4)
    torch.testing.assert_close(dist.mean[..., :3], mean[..., :3] + obs)
    next_obs, reward = model.elite_mean(obs, act)
    assert next_obs.shape == (10, 3) and reward.shape == (10,)
    # members see different inputs when given a member axis
    per_member, _ = model(torch.randn(4, 10, 3), torch.randn(4, 10, 2))
    assert per_member.shape == (4, 10, 4)


def test_nll_matches_a_known_gaussian():
    model = GaussianEnsemble(1, 1, EnsembleConfig(n_members=1, n_elites=1, hidden_sizes=(8,), learn_reward=False))
    with torch.no_grad():
        for p in model.net.parameters():
            p.zero_()
        model.net.net[-1].bias[0, 0, 1] = math.log(0.25)  # raw log-variance of the only output
    y = torch.tensor([[1.0], [-1.0], [0.5], [0.0]])
    batch = {"obs": torch.zeros(4, 1), "action": torch.zeros(4, 1), "next_obs": y, "reward": torch.zeros(4)}
    _, logvar = model(batch["obs"], batch["action"])
    lv = logvar[0, 0, 0]
    loss, _ = model.loss(batch)
    y = batch["next_obs"].squeeze(-1)
    expected_nll = 0.5 * ((y**2) * torch.exp(-lv) + lv).mean()
    bound = 0.01 * (model.max_logvar.sum() - model.min_logvar.sum())
    torch.testing.assert_close(loss, expected_nll + bound)
    # the NLL equals -log N(y; 0, var) up to the dropped constant 0.5 log(2 pi)
    ref = -torch.distributions.Normal(0.0, torch.exp(0.5 * lv)).log_prob(y).mean() - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(expected_nll, ref)


def test_learns_a_linear_system_and_picks_elites():
    torch.manual_seed(0)
    data = linear_system(3000)
    model = GaussianEnsemble(2, 1, SMALL)
    metrics = EnsembleTrainer(model, torch.Generator().manual_seed(0)).fit(data)
    test = linear_system(500, seed=1)
    next_obs, reward = model.elite_mean(test["obs"], test["action"])
    assert ((next_obs - test["next_obs"]) ** 2).mean() < 2e-3
    assert ((reward - test["reward"]) ** 2).mean() < 5e-3
    errors = model.member_errors(test)
    assert set(model.elites.tolist()) <= set(torch.argsort(errors)[:3].tolist())  # elites are among the best
    assert metrics["model/epochs"] >= 1 and metrics["model/holdout_mse"] < 5e-3


def test_each_member_gets_back_its_own_best_weights(monkeypatch):
    torch.manual_seed(0)
    model = GaussianEnsemble(2, 1, EnsembleConfig(n_members=2, n_elites=1, hidden_sizes=(8,), patience=2,
                                                  max_epochs=10, batch_size=16))
    data = linear_system(64)
    # holdout errors at the start and after each epoch: member 0 improves in epoch 1 only, member 1 in epoch 2
    errors = iter([[10.0, 10.0], [5.0, 10.0], [6.0, 5.0], [7.0, 6.0], [8.0, 7.0]])
    seen = []

    def member_errors(batch):
        seen.append({k: v.clone() for k, v in model.net.state_dict().items()})
        return torch.tensor(next(errors, [9.0, 9.0]))

    monkeypatch.setattr(model, "member_errors", member_errors)
    metrics = EnsembleTrainer(model, torch.Generator().manual_seed(0)).fit(data)
    assert metrics["model/epochs"] == 4  # two epochs without improvement after epoch 2
    for name, value in model.net.state_dict().items():
        torch.testing.assert_close(value[0], seen[1][name][0])  # member 0: its weights after epoch 1
        torch.testing.assert_close(value[1], seen[2][name][1])  # member 1: its weights after epoch 2
        assert not torch.equal(seen[1][name][0], seen[4][name][0])  # training did move member 0 afterwards


def test_bad_input():
    with pytest.raises(ConfigError, match="n_elites"):
        EnsembleConfig(n_members=3, n_elites=5)
    data = linear_system(100)
    data["reward"][3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf in 'reward'"):
        EnsembleTrainer(GaussianEnsemble(2, 1, SMALL)).fit(data)


@pytest.mark.parametrize("normalizer", ["keep", "refit"])
def test_refitting_keeps_or_recomputes_the_input_normalizer(normalizer):
    model = GaussianEnsemble(2, 1, EnsembleConfig(n_members=2, n_elites=1, hidden_sizes=(8,), max_epochs=1))
    trainer = EnsembleTrainer(model, torch.Generator().manual_seed(0))
    first, later = linear_system(200, seed=1), linear_system(200, seed=2)
    later["obs"] = later["obs"] * 3 + 5  # a later task visits other states
    trainer.fit(first, normalizer=normalizer)  # the first fit always sets it
    stats = model.in_mean.clone(), model.in_std.clone()
    assert (stats[0] != 0).all() and (stats[1] != 1).all()
    trainer.fit(later, normalizer=normalizer)
    kept = torch.equal(model.in_mean, stats[0]) and torch.equal(model.in_std, stats[1])
    assert kept == (normalizer == "keep")


def test_unknown_normalizer_choice_raises():
    with pytest.raises(ValueError, match="normalizer must be"):
        EnsembleTrainer(GaussianEnsemble(2, 1, SMALL)).fit(linear_system(10), normalizer="freeze")


def test_input_scale_leaves_columns_constant_on_the_first_data_unscaled():
    from cadence.nn import input_scale

    x = torch.stack([torch.arange(4.0), torch.full((4,), 2.0), 2.0 + 1e-4 * torch.arange(4.0)], dim=1)
    mean, std = input_scale(x)
    torch.testing.assert_close(mean, x.mean(0))
    # the varying column keeps its std; the constant and nearly constant ones (an object task 0 never moves) get 1,
    # so a later value of 3.0 in them normalises to about 1, not 1e4
    torch.testing.assert_close(std, torch.tensor([x[:, 0].std().item(), 1.0, 1.0]))
