import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from cadence.agents import TD3BC, Agent, TD3BCConfig
from cadence.agents.base import AgentConfig
from cadence.config import ConfigError
from cadence.nn import optimizer_step
from cadence.replay import ReplayBuffer

OBS = spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT = spaces.Box(np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32))
SMALL = TD3BCConfig(hidden_sizes=(32, 32), batch_size=64)


def random_batch(n: int = 64, terminated: bool = False) -> dict[str, torch.Tensor]:
    low, high = torch.as_tensor(ACT.low), torch.as_tensor(ACT.high)
    return {"obs": 3.0 + 2.0 * torch.randn(n, 3), "action": low + (high - low) * torch.rand(n, 2),
            "reward": torch.randn(n), "next_obs": 3.0 + 2.0 * torch.randn(n, 3),
            "terminated": torch.full((n,), terminated, dtype=torch.bool)}


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(module: torch.nn.Module, saved: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, q) for p, q in zip(module.parameters(), saved))


def test_is_an_agent_with_a_loop_config():
    agent = TD3BC(OBS, ACT, SMALL)
    assert isinstance(agent, Agent) and isinstance(agent.config, AgentConfig)
    assert agent.algo == "td3bc" and not agent.supports_bf16_mixed and not agent.stores_primitive


def test_act_shapes_and_bounds():
    torch.manual_seed(0)
    agent = TD3BC(OBS, ACT, TD3BCConfig(hidden_sizes=(32, 32), exploration_noise=5.0))
    obs = np.random.randn(3).astype(np.float32)
    far = 1e3 * np.random.randn(16, 3).astype(np.float32)  # saturates the tanh
    assert agent.act(obs).shape == (2,) and agent.act(np.stack([obs, obs])).shape == (2, 2)
    for deterministic in (True, False):
        actions = agent.act(far, deterministic)
        assert actions.shape == (16, 2) and actions.dtype == np.float32
        assert (actions >= ACT.low).all() and (actions <= ACT.high).all()
    np.testing.assert_array_equal(agent.act(obs, True), agent.act(obs, True))  # deterministic ignores noise
    assert not np.array_equal(agent.act(obs, False), agent.act(obs, False))
    seq = agent.act_sequence(obs, 5)
    assert seq.shape == (5, 2) and (seq == agent.act(obs, True)).all()
    batched = agent.act_sequence(np.stack([obs, 2 * obs, -obs, obs]), 5)
    assert batched.shape == (4, 5, 2) and (batched == batched[:, :1]).all()


def test_lambda_and_losses_by_hand():
    """A critic with Q_1 = 4 and Q_2 = -3 everywhere and an actor that always outputs (1.0, 0.5)."""
    agent = TD3BC(OBS, ACT, TD3BCConfig(hidden_sizes=(8,), alpha=2.5))
    with torch.no_grad():
        for p in [*agent.critic.parameters(), *agent.actor.parameters()]:
            p.zero_()
        agent.critic.net.net[-1].bias.copy_(torch.tensor([4.0, -3.0]).reshape(2, 1, 1))
        # tanh(atanh(0.5)) * scale 2 + bias 0 = 1.0; tanh(0) * scale 0.5 + bias 0.5 = 0.5
        agent.actor.net[-1].bias.copy_(torch.tensor([math.atanh(0.5), 0.0]))
    obs = torch.randn(4, 3)
    action = torch.tensor([[1.0, 0.5], [0.0, 0.0], [2.0, 1.0], [-1.0, 0.25]])
    loss, lam = agent.policy_loss(obs)
    assert lam.item() == pytest.approx(2.5 / 4.0)  # from Q_1, not from min(Q_1, Q_2) = -3
    assert loss.item() == pytest.approx(-(2.5 / 4.0) * 4.0)
    assert not lam.requires_grad
    squared = [0.0, 0.0, 1.0, 0.25, 1.0, 0.25, 4.0, 0.0625]  # (pi - a)^2 per element
    assert agent.bc_loss(obs, action).item() == pytest.approx(sum(squared) / 8)


def test_lambda_uses_q1_of_a_random_critic_and_leaves_no_critic_gradients():
    torch.manual_seed(0)
    agent = TD3BC(OBS, ACT, SMALL)
    obs = torch.randn(16, 3)
    loss, lam = agent.policy_loss(obs)
    q1 = agent.critic(obs, agent.actor(obs))[0]
    torch.testing.assert_close(lam, 2.5 / q1.abs().mean())
    torch.testing.assert_close(loss, -lam * q1.mean())
    loss.backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())


def test_update_composes_the_pieces_on_normalised_observations():
    torch.manual_seed(0)
    a = TD3BC(OBS, ACT, SMALL)
    a.set_normalizer([3.0, 3.0, 3.0], [2.0, 2.0, 2.0])
    b = TD3BC(OBS, ACT, SMALL)
    b.load_state_dict(a.state_dict())
    batch = random_batch()
    torch.manual_seed(1)
    metrics = a.update(batch)
    assert set(metrics) == {"critic_loss", "q_mean", "actor_loss", "bc_loss", "lambda"}
    assert all(isinstance(v, float) for v in metrics.values())

    normalised = {**batch, "obs": (batch["obs"] - 3.0) / 2.0, "next_obs": (batch["next_obs"] - 3.0) / 2.0}
    torch.manual_seed(1)
    critic_loss, _ = b.critic_loss(normalised)
    optimizer_step(b.critic_optimizer, critic_loss)
    policy_loss, lam = b.policy_loss(normalised["obs"])
    bc_loss = b.bc_loss(normalised["obs"], normalised["action"])
    assert metrics["critic_loss"] == pytest.approx(critic_loss.item())
    assert metrics["lambda"] == pytest.approx(lam.item())
    assert metrics["bc_loss"] == pytest.approx(bc_loss.item())
    assert metrics["actor_loss"] == pytest.approx((policy_loss + bc_loss).item())


def test_critic_target_is_td3s():
    torch.manual_seed(0)
    agent = TD3BC(OBS, ACT, TD3BCConfig(hidden_sizes=(32, 32), noise_clip=0.0, gamma=0.9))
    batch = random_batch(8)
    loss, _ = agent.critic_loss(batch)  # noise clipped to 0: a' = pi'(s')
    next_q = agent.critic_target(batch["next_obs"], agent.actor_target(batch["next_obs"])).min(dim=0).values
    q = agent.critic(batch["obs"], batch["action"])
    target = batch["reward"] + 0.9 * next_q
    torch.testing.assert_close(loss, sum(((q[k] - target) ** 2).mean() for k in range(2)))
    terminal = random_batch(8, terminated=True)
    loss, _ = agent.critic_loss(terminal)
    q = agent.critic(terminal["obs"], terminal["action"])
    torch.testing.assert_close(loss, sum(((q[k] - terminal["reward"]) ** 2).mean() for k in range(2)))


def test_actor_and_targets_move_only_every_policy_delay_updates():
    torch.manual_seed(0)
    agent = TD3BC(OBS, ACT, TD3BCConfig(hidden_sizes=(32, 32), policy_delay=3))
    last_actor_metrics = None
    for step in range(7):
        before = {name: params(getattr(agent, name)) for name in ("actor", "actor_target", "critic", "critic_target")}
        metrics = agent.update(random_batch())
        delayed = step % 3 == 0
        assert not same(agent.critic, before["critic"])  # the critic learns every update
        for name in ("actor", "actor_target", "critic_target"):
            assert same(getattr(agent, name), before[name]) != delayed, (step, name)
        actor_metrics = (metrics["actor_loss"], metrics["bc_loss"], metrics["lambda"])
        if not delayed:  # the last actor step's metrics, again
            assert actor_metrics == last_actor_metrics
        last_actor_metrics = actor_metrics
    assert agent.updates == 7


def test_normaliser_is_applied_and_floored():
    torch.manual_seed(0)
    agent = TD3BC(OBS, ACT, SMALL)
    obs = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    before = agent.act(obs, True)
    agent.set_normalizer(np.array([0.5, 0.0, 0.0]), np.ones(3))
    assert not np.array_equal(agent.act(obs, True), before)
    agent.set_normalizer(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([2.0, 0.0, 1e-5]))
    torch.testing.assert_close(agent.obs_std, torch.tensor([2.0, 1e-3, 1e-3]))
    expected = agent.actor(torch.tensor([[0.25, -1000.0, -1500.0]])).detach().numpy()[0]
    np.testing.assert_allclose(agent.act(obs, True), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="3 values"):
        agent.set_normalizer(np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        agent.set_normalizer(np.zeros(3), np.array([1.0, np.nan, 1.0]))


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    a = TD3BC(OBS, ACT, SMALL)
    a.set_normalizer([3.0, 3.0, 3.0], [2.0, 1.0, 0.5])
    batch = random_batch()
    a.update(batch)
    b = TD3BC(OBS, ACT, SMALL)
    b.load_state_dict(a.state_dict())
    obs = np.random.randn(5, 3).astype(np.float32)
    np.testing.assert_array_equal(a.act(obs, True), b.act(obs, True))
    for _ in range(2):  # a step without, then one with an actor update
        torch.manual_seed(1)
        ma = a.update(batch)
        torch.manual_seed(1)
        mb = b.update(batch)
        assert ma == mb
    for name in ("actor", "actor_target", "critic", "critic_target"):
        for pa, pb in zip(getattr(a, name).parameters(), getattr(b, name).parameters()):
            assert torch.equal(pa, pb), name
    assert a.updates == b.updates == 3

    deployed = TD3BC(OBS, ACT, SMALL)
    deployed.load_state_dict(a.deployment_state_dict())  # the normaliser travels with the actor
    assert set(a.deployment_state_dict()) == {"actor", "obs_mean", "obs_std"}
    np.testing.assert_array_equal(deployed.act(obs, True), a.act(obs, True))


@pytest.mark.parametrize("field, value", [("policy_delay", 0), ("alpha", -1.0), ("hidden_sizes", ()), ("tau", 0.0),
                                          ("gamma", 1.5), ("noise_clip", float("nan")), ("batch_size", 0),
                                          ("actor_lr", 0.0), ("policy_noise", -0.1), ("learning_starts", -1)])
def test_bad_config_values(field, value):
    with pytest.raises(ConfigError, match=field):
        TD3BCConfig(**{field: value})


def offline_1d(alpha: float, offset: float = 0.0, steps: int = 400) -> np.ndarray:
    """Train on obs ~ U[-1, 1], behaviour a = 0.5 obs + offset + N(0, 0.2^2), reward 1 - (a - 0.5 obs)^2, every
    step terminal (Q = r); return pi(s) - 0.5 obs on a grid. The reward's offset of 1 keeps Q away from 0, where
    lambda = alpha / mean|Q| would explode."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    box = spaces.Box(-1.0, 1.0, (1,), np.float32)
    agent = TD3BC(box, box, TD3BCConfig(hidden_sizes=(64, 64), batch_size=256, actor_lr=1e-3, critic_lr=1e-3,
                                        alpha=alpha))
    n = 5000
    obs = rng.uniform(-1.0, 1.0, (n, 1)).astype(np.float32)
    actions = np.clip(0.5 * obs + offset + rng.normal(0.0, 0.2, (n, 1)), -1.0, 1.0).astype(np.float32)
    rewards = 1.0 - (actions[:, 0] - 0.5 * obs[:, 0]) ** 2
    data = ReplayBuffer(n, (1,), (1,))
    data.add(obs, actions, rewards, obs, np.ones(n, dtype=bool))
    agent.set_normalizer(obs.mean(0), obs.std(0))
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        metrics = agent.update(data.sample(256, generator))
    assert all(np.isfinite(v) for v in metrics.values())
    grid = np.linspace(-1.0, 1.0, 41, dtype=np.float32)[:, None]
    return agent.act(grid, deterministic=True) - 0.5 * grid


def test_learns_a_one_dimensional_offline_problem():
    error = np.abs(offline_1d(alpha=2.5)).mean()  # about 0.25 before training
    assert error < 0.1, error


def test_q_term_pulls_the_policy_from_biased_behaviour_towards_the_best_action():
    """Behaviour is 0.3 off the best action: pure BC (alpha = 0) copies the bias; TD3+BC's Q term (2.5 times as
    strong as BC when |Q| ~ 1) pulls most of it back (its fixed point is 0.3 / 3.5 ~ 0.09 off)."""
    bc_bias = offline_1d(alpha=0.0, offset=0.3).mean()
    td3bc_bias = offline_1d(alpha=2.5, offset=0.3).mean()
    assert bc_bias > 0.25, bc_bias
    assert abs(td3bc_bias) < 0.15, td3bc_bias
