import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from cadence.agents import SAC, SACConfig
from cadence.replay import ReplayBuffer

OBS = spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT = spaces.Box(np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32))
SMALL = SACConfig(hidden_sizes=(32, 32), batch_size=64, learning_starts=0)


def test_log_prob_is_that_of_the_normalised_action():
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SMALL)
    obs = torch.randn(16, 3)
    torch.manual_seed(1)
    action, logp = agent.actor(obs)
    mean, log_std = agent.actor.net(obs).chunk(2, dim=-1)
    dist = TransformedDistribution(Normal(mean, log_std.clamp(-5, 2).exp()), [TanhTransform()])
    normalised = (action - agent.actor.bias) / agent.actor.scale
    expected = dist.log_prob(normalised.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    torch.testing.assert_close(logp, expected, atol=2e-3, rtol=1e-3)
    low, high = torch.as_tensor(ACT.low), torch.as_tensor(ACT.high)
    assert ((action >= low) & (action <= high)).all()
    # the same network under [-1, 1] bounds gives the same log-probability: the entropy target does not
    # depend on the env's action units
    unit = SAC(OBS, spaces.Box(-1.0, 1.0, (2,), np.float32), SMALL)
    unit.actor.net.load_state_dict(agent.actor.net.state_dict())
    torch.manual_seed(1)
    unit_action, unit_logp = unit.actor(obs)
    torch.testing.assert_close(unit_logp, logp)
    torch.testing.assert_close(unit_action * agent.actor.scale + agent.actor.bias, action)


def test_critic_loss_on_terminal_batch_is_plain_regression():
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SMALL)
    batch = {"obs": torch.randn(8, 3), "action": torch.rand(8, 2), "reward": torch.randn(8),
             "next_obs": torch.randn(8, 3), "terminated": torch.ones(8, dtype=torch.bool)}
    loss, _ = agent.critic_loss(batch)
    q = agent.critic(batch["obs"], batch["action"])
    expected = 0.5 * sum(((q[k] - batch["reward"]) ** 2).mean() for k in range(2))
    torch.testing.assert_close(loss, expected)


def test_actor_loss_leaves_no_critic_gradients():
    agent = SAC(OBS, ACT, SMALL)
    batch = {"obs": torch.randn(8, 3)}
    loss, _ = agent.actor_loss(batch)
    loss.backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())


def test_learns_a_one_step_bandit():
    """Reward -(a0 - 1)^2 - (a1 - 0.25)^2, every step terminal: the best action is (1, 0.25)."""
    torch.manual_seed(0)
    np.random.seed(0)
    agent = SAC(OBS, ACT, SACConfig(hidden_sizes=(64, 64), batch_size=128, init_alpha=0.001, autotune_alpha=False,
                                   actor_lr=1e-3, critic_lr=3e-3))
    buf = ReplayBuffer(2000, (3,), (2,))
    actions = np.random.uniform(ACT.low, ACT.high, size=(2000, 2)).astype(np.float32)
    rewards = -(actions[:, 0] - 1.0) ** 2 - (actions[:, 1] - 0.25) ** 2
    buf.add(np.zeros((2000, 3)), actions, rewards, np.zeros((2000, 3)), np.ones(2000, dtype=bool))
    for _ in range(1200):
        agent.update(buf.sample(128))
    best = agent.act(np.zeros(3, dtype=np.float32), deterministic=True)
    np.testing.assert_allclose(best, [1.0, 0.25], atol=0.1)


def test_act_shapes_and_deployment_round_trip():
    agent = SAC(OBS, ACT, SMALL)
    obs = np.random.randn(3).astype(np.float32)
    assert agent.act(obs).shape == (2,)
    assert agent.act(np.stack([obs, obs])).shape == (2, 2)
    seq = agent.act_sequence(obs, 5)
    assert seq.shape == (5, 2) and (seq == seq[0]).all()
    other = SAC(OBS, ACT, SMALL)
    other.load_state_dict(agent.deployment_state_dict())
    np.testing.assert_array_equal(other.act(obs, True), agent.act(obs, True))


def test_full_state_round_trip_continues_identically():
    torch.manual_seed(0)
    a = SAC(OBS, ACT, SMALL)
    batch = {"obs": torch.randn(64, 3), "action": torch.rand(64, 2), "reward": torch.randn(64),
             "next_obs": torch.randn(64, 3), "terminated": torch.zeros(64, dtype=torch.bool)}
    a.update(batch)
    b = SAC(OBS, ACT, SMALL)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(1)
    ma = a.update(batch)
    torch.manual_seed(1)
    mb = b.update(batch)
    assert ma == mb
    for pa, pb in zip(a.critic.parameters(), b.critic.parameters()):
        assert torch.equal(pa, pb)


def test_bad_config_values():
    from cadence.config import ConfigError

    with pytest.raises(ConfigError, match="num_critics"):
        SACConfig(num_critics=1)
    with pytest.raises(ConfigError, match="hidden_sizes"):
        SACConfig(hidden_sizes=())


def test_bf16_mixed_update_keeps_fp32_state_and_close_losses():
    from cadence.nn import mixed_precision

    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SMALL)
    batch = {"obs": torch.randn(64, 3), "action": torch.rand(64, 2), "reward": torch.randn(64),
             "next_obs": torch.randn(64, 3), "terminated": torch.zeros(64, dtype=torch.bool)}
    torch.manual_seed(1)
    exact, _ = agent.critic_loss(batch)
    torch.manual_seed(1)
    with mixed_precision("bf16-mixed", "cpu"):
        mixed, _ = agent.critic_loss(batch)
        assert agent.critic(batch["obs"], batch["action"]).dtype == torch.float32  # outputs cast back
        metrics = agent.update(batch)
    assert mixed.dtype == torch.float32 and mixed.item() != exact.item()  # autocast was active
    torch.testing.assert_close(mixed, exact, rtol=0.05, atol=0.0)
    assert all(p.dtype == torch.float32 for p in [*agent.actor.parameters(), *agent.critic.parameters()])
    assert all(np.isfinite(v) for v in metrics.values())
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        mixed_precision("fp16", "cpu")
