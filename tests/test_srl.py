import numpy as np
import pytest
import torch
from gymnasium import spaces

from cadence.agents import SRL, SequenceActor, SRLConfig
from cadence.config import ConfigError

OBS = spaces.Box(-np.inf, np.inf, (4,), np.float32)
J, ACT_DIM = 4, 2
SEQ_ACT = spaces.Box(-1.0, 1.0, (J * ACT_DIM,), np.float32)
SMALL = SRLConfig(sequence_length=J, hidden_sizes=(32, 32), encoder_sizes=(32,), gru_size=16, batch_size=32,
                  actor_batch_size=16, model_members=2, model_hidden_sizes=(32,), learning_starts=0)


@pytest.mark.parametrize("length", [1, 3, 4, 17])
def test_gru_unrolls_any_length(length):
    actor = SequenceActor(4, 2, (32,), 16, np.array([-2.0, 0.0]), np.array([2.0, 1.0]))
    actions, logp = actor(torch.randn(5, 4), length)
    assert actions.shape == (5, length, 2) and logp.shape == (5, length)
    assert (actions[..., 0].abs() <= 2).all() and (actions[..., 1] >= 0).all() and (actions[..., 1] <= 1).all()
    # the first actions do not depend on how long the unroll is
    torch.manual_seed(0)
    short, _ = actor(torch.ones(1, 4), 1, deterministic=True)
    long, _ = actor(torch.ones(1, 4), length, deterministic=True)
    torch.testing.assert_close(short[:, 0], long[:, 0])


def test_act_shapes():
    agent = SRL(OBS, SEQ_ACT, SMALL)
    obs = np.zeros(4, dtype=np.float32)
    assert agent.act(obs).shape == (J * ACT_DIM,)
    assert agent.act_sequence(obs, 11).shape == (11, ACT_DIM)


def test_temporal_recall_sends_gradient_to_every_action_position():
    torch.manual_seed(0)
    agent = SRL(OBS, SEQ_ACT, SMALL)
    agent.model.set_normalizer(torch.randn(64, 4), torch.rand(64, 2))
    obs = torch.randn(8, 4)
    actions, logp = agent.actor(obs, J)
    actions.retain_grad()
    agent.recall_loss(obs, actions, logp).backward()
    per_position = actions.grad.abs().sum(dim=(0, 2))
    assert per_position.shape == (J,) and (per_position > 0).all()
    assert all(p.grad is None for p in agent.critic.parameters())  # critics untouched by the actor loss
    assert all(p.grad is None for p in agent.model.parameters())  # recall does not train the model
    # the recalled states come from the model, one step per action
    states = agent.recall_states(obs, actions.detach())
    next1, _ = agent.model.elite_mean(obs, actions[:, 0].detach())
    torch.testing.assert_close(states[:, 0], obs)
    torch.testing.assert_close(states[:, 1], next1)


def test_update_runs_and_learns_model_of_a_linear_system():
    torch.manual_seed(0)
    agent = SRL(OBS, SEQ_ACT, SMALL)
    g = torch.Generator().manual_seed(0)
    A = torch.eye(4) * 0.9
    B = torch.ones(4, 2) * 0.1
    first = None
    for _ in range(300):
        obs = torch.randn(32, 4, generator=g)
        act = torch.rand(32, 2, generator=g) * 2 - 1
        batch = {"obs": obs, "action": act, "next_obs": obs @ A.T + act @ B.T, "reward": obs.sum(-1),
                 "terminated": torch.zeros(32, dtype=torch.bool)}
        metrics = agent.update(batch)
        first = first or metrics["model/mse"]
    assert metrics["model/mse"] < 0.1 * first  # a 10x drop in one-step error
    assert all(np.isfinite(v) for v in metrics.values())


def test_acting_needs_no_model():
    agent = SRL(OBS, SEQ_ACT, SMALL)
    deployed = SRL(OBS, SEQ_ACT, SMALL)
    deployed.load_state_dict(agent.deployment_state_dict())
    deployed.model = None  # nothing of the model is used to act
    deployed.critic = None
    obs = np.random.randn(4).astype(np.float32)
    np.testing.assert_array_equal(deployed.act_sequence(obs, 6), agent.act_sequence(obs, 6))
    assert set(agent.deployment_state_dict()) == {"actor"}


def test_bad_input():
    with pytest.raises(ConfigError, match="sequence_length"):
        SRLConfig(sequence_length=0)
    with pytest.raises(ValueError, match="sequence action space"):
        SRL(OBS, spaces.Box(-1, 1, (3,), np.float32), SMALL)
    with pytest.raises(ValueError, match="sequence length must be >= 1"):
        SRL(OBS, SEQ_ACT, SMALL).act_sequence(np.zeros(4, dtype=np.float32), 0)


def test_bf16_mixed_update_is_float32_and_close_to_fp32():
    from cadence.nn import mixed_precision

    batch = {"obs": torch.randn(32, 4), "action": torch.rand(32, 2) * 2 - 1, "reward": torch.randn(32),
             "next_obs": torch.randn(32, 4), "terminated": torch.zeros(32, dtype=torch.bool)}
    results = {}
    for precision in ("fp32", "bf16-mixed"):
        torch.manual_seed(0)
        agent = SRL(OBS, SEQ_ACT, SMALL)
        with mixed_precision(precision, "cpu"):
            model_loss, _ = agent.model_loss(batch)
            actor_loss, logp = agent.actor_loss(batch)
        assert model_loss.dtype == actor_loss.dtype == logp.dtype == torch.float32
        results[precision] = (model_loss.item(), actor_loss.item())
        with mixed_precision(precision, "cpu"):
            metrics = agent.update(batch)
        assert all(np.isfinite(v) for v in metrics.values())
        assert all(p.dtype == torch.float32 for p in agent.model.parameters())
    assert results["fp32"] != results["bf16-mixed"]  # autocast was active
    np.testing.assert_allclose(results["bf16-mixed"], results["fp32"], rtol=0.05)
