"""The DynamicsModel protocol: a model that is not a GaussianEnsemble drives every consumer, and the ensemble's bundle
round-trips through torch.save / torch.load(weights_only=True)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces

from cadence.agents import MOBILE, MOBILEConfig
from cadence.agents.mobile import bellman_inconsistency
from cadence.agents.planning import CEMConfig, CEMPlanner
from cadence.world_models import (
    DynamicsModel,
    DynamicsReward,
    DynamicsRewardConfig,
    EnsembleConfig,
    FilterConfig,
    GaussianEnsemble,
    TransitionFilter,
    model_bundle,
    model_from_bundle,
)
from cadence.world_models.rollout import RolloutConfig, model_rollout, mopo_penalty, random_elite_sample


class LinearToy:
    """Known dynamics, no learning: member k predicts s' = s + a + offsets[k] and r = -|s'|^2, with std ``std``.

    A plain class (not an nn.Module, not a GaussianEnsemble) that implements DynamicsModel.
    """

    predicts_reward = True

    def __init__(self, dim: int = 1, offsets=(0.0,), std: float = 0.0):
        self.obs_dim = self.act_dim = dim
        self.offsets = torch.tensor(offsets)
        self.elites = torch.arange(len(offsets))
        self.logvar = 2 * math.log(std) if std > 0 else -math.inf  # std 0: samples are the means exactly

    def __call__(self, obs, act):
        delta = act + self.offsets[:, None, None]  # [M, B, dim]
        reward = -((obs + delta) ** 2).sum(-1, keepdim=True)
        mean = torch.cat([delta, reward], dim=-1)
        return mean, torch.full_like(mean, self.logvar)

    def predict(self, obs, act):
        mean, logvar = self(obs, act)
        return torch.distributions.Normal(mean + F.pad(obs, (0, 1)), torch.exp(0.5 * logvar), validate_args=False)

    def elite_mean(self, obs, act):
        mean = self(obs, act)[0][self.elites].mean(0)
        return obs + mean[..., : self.obs_dim], mean[..., self.obs_dim]

    def loss(self, batch):
        mean, _ = self(batch["obs"], batch["action"])
        target = torch.cat([batch["next_obs"] - batch["obs"], batch["reward"].unsqueeze(-1)], dim=-1)
        mse = ((mean - target) ** 2).mean()
        return mse, {"model/mse": mse.item()}

    def state_dict(self):
        return {"offsets": self.offsets, "elites": self.elites}


def test_protocol_membership():
    assert isinstance(LinearToy(), DynamicsModel)
    assert isinstance(GaussianEnsemble(2, 1, EnsembleConfig(n_members=2, n_elites=1, hidden_sizes=(4,))),
                      DynamicsModel)

    # the toy's class less one member at a time is no DynamicsModel (with all of them it is)
    members = {k: v for k, v in vars(LinearToy).items() if not k.startswith("__") or k == "__call__"}
    for missing in ("", "predict", "elite_mean", "loss", "state_dict", "__call__"):
        partial = type("Partial", (), {**{k: v for k, v in members.items() if k != missing},
                                       "__init__": LinearToy.__init__})()
        assert isinstance(partial, DynamicsModel) == (missing == ""), missing
    no_elites = LinearToy()
    del no_elites.elites
    assert not isinstance(no_elites, DynamicsModel)
    assert not isinstance(object(), DynamicsModel)


def test_toy_loss_is_zero_on_its_own_dynamics():
    toy = LinearToy()
    obs, act = torch.tensor([[1.0], [-2.0]]), torch.tensor([[0.5], [0.5]])
    batch = {"obs": obs, "action": act, "next_obs": obs + act, "reward": -((obs + act) ** 2).sum(-1)}
    loss, metrics = toy.loss(batch)
    assert loss.item() == 0.0 and metrics == {"model/mse": 0.0}


def test_cem_plans_the_toy_to_the_origin():
    planner = CEMPlanner(LinearToy(), -np.ones(1, np.float32), np.ones(1, np.float32),
                         CEMConfig(horizon=3, samples=400, elites=40, iterations=6, gamma=1.0),
                         generator=torch.Generator().manual_seed(0))
    obs = torch.tensor([[2.5]])
    # by hand: a = (-1, -1, -0.5) visits 1.5, 0.5, 0 and earns -(2.25 + 0.25 + 0) = -2.5; doing nothing earns -18.75
    returns = planner.evaluate(obs, torch.tensor([[[-1.0], [-1.0], [-0.5]], [[0.0], [0.0], [0.0]]]))
    torch.testing.assert_close(returns, torch.tensor([-2.5, -18.75]))
    plan = planner.plan(np.array([2.5], np.float32))
    assert plan.shape == (3, 1)
    np.testing.assert_allclose(plan[:, 0], [-1.0, -1.0, -0.5], atol=0.1)
    assert planner.evaluate(obs, torch.as_tensor(plan)[None]).item() > -2.6
    # within reach, one step goes (nearly) all the way
    assert abs(0.6 + planner.plan(np.array([0.6], np.float32))[0, 0]) < 0.1


def test_model_rollout_through_the_toy_is_exact():
    toy = LinearToy()
    start = torch.tensor([[1.0], [-2.0]])
    out = model_rollout(start, lambda s: -0.5 * s, random_elite_sample(toy, torch.Generator().manual_seed(0)),
                        lambda s: s[:, 0] < -0.75, RolloutConfig(length=3), penalty=mopo_penalty(toy))
    # by hand: row 0 halves 1 -> 0.5 -> 0.25 -> 0.125; row 1 goes -2 -> -1 and terminates (< -0.75) at step 0
    torch.testing.assert_close(out["obs"], torch.tensor([[1.0], [-2.0], [0.5], [0.25]]), rtol=0, atol=0)
    torch.testing.assert_close(out["next_obs"], torch.tensor([[0.5], [-1.0], [0.25], [0.125]]), rtol=0, atol=0)
    torch.testing.assert_close(out["reward"], torch.tensor([-0.25, -1.0, -0.0625, -0.015625]), rtol=0, atol=0)
    assert out["terminated"].tolist() == [False, True, False, False] and out["step"].tolist() == [0, 0, 1, 2]
    assert (out["penalty"] == 0).all()  # std 0
    # MOPO's penalty: the largest elite std norm over (s', r): 0.5 * sqrt(2)
    pen = mopo_penalty(LinearToy(std=0.5))(start, torch.zeros(2, 1))
    torch.testing.assert_close(pen, torch.full((2,), 0.5 * math.sqrt(2)))


def test_filter_dynamics_reward_and_mobile_take_the_toy():
    class NearOrigin:  # scores a transition by how close s' is to 0
        def reward(self, obs, act, next_obs):
            return -(next_obs**2).sum(-1)

    toy = LinearToy(offsets=(0.0, 1.0))
    obs, act = torch.zeros(1, 1), torch.full((1, 1), -0.75)
    # candidates s' = -0.75 (member 0) and 0.25 (member 1): the filter keeps the nearer one and its reward
    step = TransitionFilter(toy, NearOrigin(), FilterConfig(threshold=-0.5)).filter(obs, act)
    assert step.next_obs.item() == 0.25 and step.reward.item() == -0.0625 and step.keep.item()
    assert step.index.item() == 2  # elite rank 1, first of its 2 samples

    dr = DynamicsReward(1, 1, DynamicsRewardConfig(hidden_sizes=(8,), history=10, every=5))
    neg = dr.negatives(LinearToy(), torch.tensor([[1.0], [2.0]]), torch.tensor([[0.5], [-1.0]]), torch.zeros(1),
                       torch.Generator().manual_seed(0))
    torch.testing.assert_close(neg, torch.tensor([[1.5], [1.0]]), rtol=0, atol=0)

    box = spaces.Box(-1, 1, (1,), np.float32)
    agent = MOBILE(box, box, MOBILEConfig(hidden_sizes=(8,)))
    agent.critic_target = lambda o, a: torch.stack([o[:, 0] + a[:, 0], o[:, 0] + 5])  # min: s'_0 (actions are 0)
    agent.actor = lambda o: (torch.zeros(o.shape[0], 1), torch.zeros(o.shape[0]))
    mobile_toy = LinearToy(offsets=(1.0, 100.0, 3.0))
    mobile_toy.elites = torch.tensor([0, 2])
    u = bellman_inconsistency(mobile_toy, agent, torch.zeros(4, 1), torch.zeros(4, 1), samples=3)
    torch.testing.assert_close(u, torch.full((4,), math.sqrt(2.0)))  # std([1, 3]) over the elites


def _plain(value):
    """Whether a bundle's non-tensor content is only ints, floats, bools, strings, lists and dicts."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, (int, float, bool, str, torch.Tensor))


def test_ensemble_bundle_round_trips_with_its_own_architecture(tmp_path):
    torch.manual_seed(0)
    config = EnsembleConfig(n_members=3, n_elites=2, hidden_sizes=(24, 12, 6), learn_reward=False, lr=3e-4)
    model = GaussianEnsemble(5, 2, config)
    obs, act = torch.randn(64, 5) * 3 + 1, torch.randn(64, 2)
    model.set_normalizer(obs, act)
    model.elites.copy_(torch.tensor([2, 0]))
    with torch.no_grad():
        model.max_logvar.add_(0.25)
    bundle = model_bundle(model)
    assert bundle["config"]["hidden_sizes"] == [24, 12, 6] and _plain(bundle)
    torch.save(bundle, tmp_path / "model.pt")

    loaded = model_from_bundle(torch.load(tmp_path / "model.pt", weights_only=True))
    assert loaded.config == config and (loaded.obs_dim, loaded.act_dim) == (5, 2)
    assert loaded.elites.tolist() == [2, 0] and not loaded.predicts_reward
    with torch.no_grad():
        for a, b in zip(model(obs, act), loaded(obs, act)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        for a, b in zip(model.elite_mean(obs, act), loaded.elite_mean(obs, act)):
            assert (a is None and b is None) or torch.equal(a, b)
        torch.testing.assert_close(model.predict(obs, act).stddev, loaded.predict(obs, act).stddev, rtol=0, atol=0)

    with pytest.raises(ValueError, match="kind"):
        model_from_bundle({**bundle, "kind": "Hypernetwork"})
    with pytest.raises(ValueError, match="format"):
        model_from_bundle({**bundle, "format": 99})
    with pytest.raises(ValueError, match="hidden_size"):
        model_from_bundle({**bundle, "config": {**bundle["config"], "hidden_size": [8]}})
