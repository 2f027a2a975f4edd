import io
import math

import pytest
import torch
from torch.func import functional_call

from cadence.config import ConfigError
from cadence.world_models import EnsembleConfig, EnsembleTrainer, GaussianEnsemble
from cadence.world_models.dynamics_reward import Discriminator, DynamicsReward, DynamicsRewardConfig
from cadence.world_models.filters import FilterConfig, TransitionFilter, sample_candidates, select
from cadence.world_models.rollout import ModelDiverged, RolloutConfig, model_rollout

A = torch.tensor([[0.9, 0.1], [-0.2, 0.8]])
B = torch.tensor([[0.5], [1.0]])
MODEL = EnsembleConfig(n_members=4, n_elites=2, hidden_sizes=(32, 32), batch_size=256, max_epochs=15, lr=3e-3)
REWARD = DynamicsRewardConfig(hidden_sizes=(64, 64), lr=1e-3, steps=600, history=100, every=10, checkpoint_interval=1)


def linear_system(n, seed=0):
    """s' = A s + B a, r = s . (1, -1): a tiny known linear system."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 2, generator=g)
    act = torch.rand(n, 1, generator=g) * 2 - 1
    return {"obs": obs, "action": act, "next_obs": obs @ A.T + act @ B.T, "reward": obs @ torch.tensor([1.0, -1.0])}


@pytest.fixture(scope="module")
def fitted():
    """A small ensemble and a dynamics reward fitted on the linear system (shared: fitting is the slow part)."""
    torch.manual_seed(0)
    data = linear_system(2000)
    model = GaussianEnsemble(2, 1, MODEL)
    EnsembleTrainer(model, torch.Generator().manual_seed(0)).fit(data)
    reward = DynamicsReward(2, 1, REWARD)
    metrics = reward.fit(data, model, generator=torch.Generator().manual_seed(1))
    return data, model, reward, metrics


def constant_reward(probabilities, obs_dim=2, act_dim=1):
    """A DynamicsReward whose stored discriminators output the constant D_k = probabilities[k]."""
    reward = DynamicsReward(obs_dim, act_dim, DynamicsRewardConfig(hidden_sizes=(4,), history=len(probabilities),
                                                                   every=1))
    logits = torch.logit(torch.tensor(probabilities, dtype=torch.float64)).float()
    for stack in reward.snapshots:
        stack.zero_()
    reward.snapshots[-1].copy_(logits.unsqueeze(-1))  # the output bias; zero output weights make D_k constant
    reward.snapshot_ids.copy_(torch.arange(1, len(probabilities) + 1))
    return reward


def test_discriminator_separates_fake_transitions(fitted):
    data, model, reward, metrics = fitted
    test = linear_system(1000, seed=5)
    obs, act = test["obs"], test["action"]
    fake = obs + 0.3 * torch.randn(obs.shape, generator=torch.Generator().manual_seed(2))  # s' = s + noise
    p_true, p_fake = reward.probability(obs, act, test["next_obs"]), reward.probability(obs, act, fake)
    assert (p_true > 0.5).float().mean() > 0.95 and (p_fake < 0.5).float().mean() > 0.95
    r_true, r_fake = reward.reward(obs, act, test["next_obs"]), reward.reward(obs, act, fake)
    assert r_true.mean() > 1.0 > 0.2 > r_fake.mean()
    assert (r_true >= 0.6).float().mean() > 0.95  # true transitions pass MOREC's rollout threshold
    assert metrics["model/dr_acc_data"] > 0.9 and metrics["model/dr_acc_negatives"] > 0.6
    assert metrics["model/dr_reward_data"] > metrics["model/dr_reward_model"]
    assert metrics["model/dr_steps"] == REWARD.steps and reward.n_stored == REWARD.n_discriminators == 10


def test_reward_formula_against_known_discriminator_outputs():
    p = [0.2, 0.5, 0.9, 0.99]
    reward = constant_reward(p)
    obs, act, next_obs = torch.randn(3, 2), torch.randn(3, 1), torch.randn(3, 2)
    torch.testing.assert_close(reward.probability(obs, act, next_obs), torch.full((3,), sum(p) / 4))
    expected = -math.log(1 - sum(p) / 4)
    torch.testing.assert_close(reward.reward(obs, act, next_obs), torch.full((3,), expected))
    # every D_k rounds to 1 in float32: the naive 1 - mean D is 0, the log-space form stays exact and finite
    sure = constant_reward([1 - 1e-9, 1 - 1e-10])
    assert torch.sigmoid(sure.snapshots[-1]).eq(1.0).all()
    expected = -math.log((1e-9 + 1e-10) / 2)
    torch.testing.assert_close(sure.reward(obs, act, next_obs), torch.full((3,), expected), rtol=1e-4, atol=0)
    # the reward reads the stored checkpoints, not the live discriminator
    with torch.no_grad():
        reward.discriminator.net[-1].bias.fill_(5.0)
    torch.testing.assert_close(reward.reward(obs, act, next_obs), torch.full((3,), -math.log(1 - sum(p) / 4)))


@pytest.mark.parametrize("interval, ids, steps_of", [(1, [14, 16, 18, 20], lambda c: c), (2, [4, 6, 8, 10],
                                                                                        lambda c: 2 * c)])
def test_history_ring_keeps_every_kth_of_the_last_n(fitted, interval, ids, steps_of):
    data, model, _, _ = fitted
    config = DynamicsRewardConfig(hidden_sizes=(8,), history=8, every=2, checkpoint_interval=interval, log_interval=1)
    reward = DynamicsReward(2, 1, config)
    seen = {}
    reward.fit(data, model, steps=20, generator=torch.Generator().manual_seed(0),
               callback=lambda step, m: seen.__setitem__(step, [p.detach().clone() for p in
                                                                reward.discriminator.parameters()]))
    assert sorted(seen) == list(range(1, 21))
    assert sorted(reward.snapshot_ids.tolist()) == ids and reward.n_stored == 4  # of the last 8, every 2nd
    for slot, c in enumerate(reward.snapshot_ids.tolist()):
        for stack, param in zip(reward.snapshots, seen[steps_of(c)]):
            torch.testing.assert_close(stack[slot], param)
    # the batched reward equals the formula over those checkpoints run one by one
    test = linear_system(64, seed=3)
    names = [n for n, _ in reward.discriminator.named_parameters()]
    per_checkpoint = torch.stack([
        functional_call(reward.discriminator, dict(zip(names, seen[steps_of(c)])),
                        (test["obs"], test["action"], test["next_obs"]))
        for c in reward.snapshot_ids.tolist()])
    torch.testing.assert_close(reward.reward(test["obs"], test["action"], test["next_obs"]),
                               -torch.log(1 - per_checkpoint.mean(0)), rtol=1e-5, atol=1e-5)
    # the ring rolls on: 4 more steps (interval 1) push out the oldest two
    if interval == 1:
        reward.fit(data, model, steps=4, generator=torch.Generator().manual_seed(1))
        assert sorted(reward.snapshot_ids.tolist()) == [18, 20, 22, 24]


class KnownReward:
    """A dynamics reward with a known ranking: the closer s'_0 is to 0.3, the higher (at most 1)."""

    def reward(self, obs, act, next_obs):
        return 1.0 - (next_obs[:, 0] - 0.3).abs()


def test_filter_takes_the_argmax_and_respects_the_threshold():
    torch.manual_seed(0)
    model = GaussianEnsemble(2, 1, EnsembleConfig(n_members=5, n_elites=3, hidden_sizes=(16,)))
    model.elites.copy_(torch.tensor([4, 0, 2]))
    obs, act = torch.randn(500, 2), torch.randn(500, 1)
    config = FilterConfig(samples_per_elite=2, threshold=0.8)
    step = TransitionFilter(model, KnownReward(), config, torch.Generator().manual_seed(7)).filter(obs, act)
    # the same generator seed redraws the very candidates the filter scored
    candidates, rewards = sample_candidates(model, obs, act, 2, torch.Generator().manual_seed(7))
    assert candidates.shape == (6, 500, 2) and rewards.shape == (6, 500)
    scores = 1.0 - (candidates[..., 0] - 0.3).abs()
    rows = torch.arange(500)
    torch.testing.assert_close(step.index, scores.argmax(0))
    torch.testing.assert_close(step.next_obs, candidates[scores.argmax(0), rows])
    torch.testing.assert_close(step.reward, rewards[scores.argmax(0), rows])
    torch.testing.assert_close(step.dynamics_reward, scores.max(0).values)
    assert (step.dynamics_reward >= scores).all()
    torch.testing.assert_close(step.keep, step.dynamics_reward >= 0.8)
    assert 0 < step.keep.sum() < 500  # both sides of the threshold occur
    # the rollout interface: same choice, and rows below the threshold end there
    next_obs, reward, keep = TransitionFilter(model, KnownReward(), config, torch.Generator().manual_seed(7))(obs, act)
    assert torch.equal(next_obs, step.next_obs) and torch.equal(reward, step.reward) and torch.equal(keep, step.keep)


def test_calibrated_threshold_is_the_quantile_of_chosen_rewards_on_the_given_pairs():
    torch.manual_seed(0)
    model = GaussianEnsemble(2, 1, EnsembleConfig(n_members=5, n_elites=3, hidden_sizes=(16,)))
    obs, act = torch.randn(1000, 2), torch.randn(1000, 1)
    base = TransitionFilter(model, KnownReward(), FilterConfig(threshold=0.6), torch.Generator().manual_seed(3))
    calibrated = base.calibrated(obs, act, 0.1)
    # the same draw, scored again: 10% of the pairs' chosen rewards lie below the new threshold
    chosen = TransitionFilter(model, KnownReward(), FilterConfig(), torch.Generator().manual_seed(3)).filter(obs, act)
    torch.testing.assert_close(torch.tensor(calibrated.config.threshold), chosen.dynamics_reward.quantile(0.1))
    assert abs((chosen.dynamics_reward < calibrated.config.threshold).float().mean().item() - 0.1) < 0.002
    assert calibrated.config.samples_per_elite == base.config.samples_per_elite  # only the threshold changes
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="quantile"):
            base.calibrated(obs, act, bad)


def test_candidates_follow_each_elites_gaussian(monkeypatch):
    model = GaussianEnsemble(2, 1, EnsembleConfig(n_members=4, n_elites=2, hidden_sizes=(8,)))
    model.elites.copy_(torch.tensor([3, 1]))
    # member k predicts delta (k, -k), reward 10 k and std 0.5
    mean = torch.tensor([[k, -k, 10 * k] for k in range(4)], dtype=torch.float32)[:, None].expand(4, 20000, 3)
    monkeypatch.setattr(model, "forward", lambda obs, act: (mean, torch.full_like(mean, 2 * math.log(0.5))))
    obs, act = torch.ones(20000, 2), torch.zeros(20000, 1)
    candidates, rewards = sample_candidates(model, obs, act, 3, torch.Generator().manual_seed(0))
    assert candidates.shape == (6, 20000, 2)
    predicted = model.predict(obs, act)
    for c in range(6):  # elite-major: candidates 0-2 from member 3, 3-5 from member 1
        member = [3, 1][c // 3]
        torch.testing.assert_close(candidates[c].mean(0), predicted.mean[member, 0, :2], atol=0.02, rtol=0)
        torch.testing.assert_close(rewards[c].mean(), predicted.mean[member, 0, 2], atol=0.02, rtol=0)
        torch.testing.assert_close(candidates[c].std(0), torch.full((2,), 0.5), atol=0.02, rtol=0)


def test_softmax_mode_sharpens_to_argmax_and_spreads_when_hot():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(10, 4000, generator=g)  # [candidates, rows]
    cold = select(scores, "softmax", temperature=1e-6, generator=g)
    torch.testing.assert_close(cold, select(scores, "argmax"))
    hot = select(scores, "softmax", temperature=1e6, generator=g)
    freq = torch.bincount(hot, minlength=10).float() / 4000
    assert (freq - 0.1).abs().max() < 0.03  # close to uniform over the 10 candidates
    warm = select(scores, "softmax", temperature=0.1, generator=g)
    assert 0.5 < (warm == scores.argmax(0)).float().mean() < 1.0  # MOREC's 0.1: mostly, not always, the argmax


def test_filter_softmax_mode_and_termination_in_rollouts(fitted):
    data, model, reward, _ = fitted
    obs, act = data["obs"][:256], data["action"][:256]
    step = TransitionFilter(model, reward, FilterConfig(mode="softmax", temperature=1e-6),
                            torch.Generator().manual_seed(3)).filter(obs, act)
    again = TransitionFilter(model, reward, FilterConfig(mode="argmax"), torch.Generator().manual_seed(3)).filter(obs,
                                                                                                                 act)
    assert torch.equal(step.index, again.index)
    assert step.keep.float().mean() > 0.75  # on the data's own (s, a) most chosen steps are kept
    # a reward below the threshold everywhere ends every rollout after its first step (stored as terminal), above
    # it none
    policy = lambda o: torch.zeros(o.shape[0], 1)  # noqa: E731
    never = lambda s: torch.zeros(s.shape[0], dtype=torch.bool)  # noqa: E731

    class Constant:
        def __init__(self, value):
            self.value = value

        def reward(self, obs, act, next_obs):
            return torch.full((obs.shape[0],), self.value)

    low = model_rollout(obs[:8], policy, TransitionFilter(model, Constant(0.5)), never, RolloutConfig(length=4))
    high = model_rollout(obs[:8], policy, TransitionFilter(model, Constant(0.7)), never, RolloutConfig(length=4))
    assert len(low["obs"]) == 8 and low["terminated"].all() and (low["step"] == 0).all()
    assert len(high["obs"]) == 32 and not high["terminated"].any()


def test_state_dict_round_trip_gives_identical_rewards(fitted):
    data, model, reward, _ = fitted
    buffer = io.BytesIO()
    torch.save(reward.state_dict(), buffer)
    buffer.seek(0)
    restored = DynamicsReward(2, 1, REWARD)
    restored.load_state_dict(torch.load(buffer))
    test = linear_system(300, seed=9)
    args = (test["obs"], test["action"], test["next_obs"] + 0.1)
    assert torch.equal(restored.reward(*args), reward.reward(*args))
    # training continues identically from the restored state (optimiser and counters included)
    for r in (reward, restored):
        r.fit(data, model, steps=30, generator=torch.Generator().manual_seed(4))
    assert restored.n_checkpoints == reward.n_checkpoints == REWARD.steps + 30
    assert torch.equal(restored.reward(*args), reward.reward(*args))
    with pytest.raises(ValueError, match="do not match this config"):
        DynamicsReward(2, 1, DynamicsRewardConfig(hidden_sizes=(32,))).load_state_dict(reward.state_dict())


def test_bad_input(fitted):
    data, model, reward, _ = fitted
    for bad in (dict(history=25, every=10), dict(lr=0.0), dict(label_smoothing=0.5), dict(hidden_sizes=()),
                dict(negative_noise=(-1.0,))):
        with pytest.raises(ConfigError):
            DynamicsRewardConfig(**bad)
    for bad in (dict(mode="max"), dict(temperature=0.0), dict(samples_per_elite=0)):
        with pytest.raises(ConfigError):
            FilterConfig(**bad)
    obs, act, next_obs = torch.randn(4, 2), torch.randn(4, 1), torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"obs must have shape \[batch, 2\]"):
        reward.reward(torch.randn(4, 3), act, next_obs)
    with pytest.raises(ValueError, match="action has 3 rows but obs has 4"):
        reward.reward(obs, act[:3], next_obs)
    nan_next = next_obs.clone()
    nan_next[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"next_obs contains NaN or inf \(first in row 2\)"):
        reward.reward(obs, act, nan_next)
    with pytest.raises(RuntimeError, match="call fit first"):
        DynamicsReward(2, 1, REWARD).reward(obs, act, next_obs)
    with pytest.raises(ValueError, match="lacks key"):
        DynamicsReward(2, 1, REWARD).fit({"obs": data["obs"], "action": data["action"]}, model)
    nan_data = dict(data, obs=data["obs"].clone())
    nan_data["obs"][7, 0] = float("nan")
    with pytest.raises(ValueError, match="obs contains NaN"):
        DynamicsReward(2, 1, REWARD).fit(nan_data, model)
    with pytest.raises(ValueError, match="obs_dim=2, act_dim=1 but the dynamics reward for obs_dim=3"):
        DynamicsReward(3, 1, REWARD).fit(data, model)
    with pytest.raises(ValueError, match="no stored checkpoint"):
        DynamicsReward(2, 1, REWARD).fit(data, model, steps=REWARD.every - 1)
    with pytest.raises(ValueError, match="the model takes obs_dim=2"):
        TransitionFilter(model, reward).filter(torch.randn(4, 3), act)
    broken = GaussianEnsemble(2, 1, MODEL)
    with torch.no_grad():
        broken.net.net[-1].bias.fill_(float("nan"))
    with pytest.raises(ModelDiverged, match="NaN or inf"):
        TransitionFilter(broken, reward).filter(obs, act)


def test_discriminator_sees_normalised_state_action_and_change():
    disc = Discriminator(2, 1, (8,))
    obs, act = torch.randn(100, 2) * 5 + 3, torch.rand(100, 1)
    next_obs = obs + torch.randn(100, 2) * 0.01
    disc.set_normalizer(obs, act, next_obs)
    x = disc.features(obs, act, next_obs)
    torch.testing.assert_close(x.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(x[:, 3:] * disc.in_std[3:] + disc.in_mean[3:], next_obs - obs)  # the last part is s'-s
    p = disc(obs, act, next_obs)
    assert p.shape == (100,) and ((p > 0) & (p < 1)).all()
