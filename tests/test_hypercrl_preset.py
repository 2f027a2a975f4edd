"""HyperCRL's reference preset (agent.preset=reference): every option it switches, each on its own."""

import io
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces

from cadence.agents.continual import PRESETS, ContinualModelBased, ContinualModelBasedConfig
from cadence.cli import main as cli_main
from cadence.config import ConfigError
from cadence.envs.obs_rewards import half_cheetah, obs_reward
from cadence.nn import adam, input_scale
from cadence.recipes import ContinualModelBasedTrainConfig, continual_model_steps
from cadence.runs import resolve_config
from cadence.world_models.hyper import (
    HyperConfig,
    HyperDynamics,
    HyperOptimizers,
    adam_lookahead,
    functional_mlp,
)

OBS, ACT = 17, 6  # HalfCheetah-v5's sizes: the observation reward reads next_obs[8]
SPACES = (spaces.Box(-np.inf, np.inf, (OBS,), np.float32), spaces.Box(-1.0, 1.0, (ACT,), np.float32))
SMALL = {"hidden_sizes": (16, 16), "hnet_hidden_sizes": (8,), "batch_size": 32}


def learner(preset="reference", **options):
    config = ContinualModelBasedConfig(preset=preset, **{**SMALL, **options})
    return ContinualModelBased(*SPACES, "hypercrl", config, seed=0)


def data(n=200, scale=1.0, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = shift + scale * torch.randn(n, OBS, generator=g)
    return {"obs": obs, "action": torch.rand(n, ACT, generator=g) * 2 - 1, "reward": torch.randn(n, generator=g),
            "next_obs": obs + 0.1 * torch.randn(n, OBS, generator=g)}


def two_tasks(model_learner, steps=5):
    """Task 0 fitted, task 1 started (the regulariser is active from here)."""
    model_learner.start_task(0)
    model_learner.fit(data(seed=0), steps)
    model_learner.start_task(1)
    return model_learner


# --- the preset's options ----------------------------------------------------------------------------------------
def test_reference_preset_resolves_every_option_and_explicit_values_win():
    ref = ContinualModelBasedConfig(preset="reference")
    assert ref.options == PRESETS["reference"]
    assert ref.options == {
        "hidden_sizes": (200, 200, 200, 200), "batch_size": 100, "activation": "relu", "init": "xavier",
        "two_optimizers": True, "train_logvar_bounds": False, "loss_reduction": "sum", "normalize_per_task": True,
        "look_ahead": True, "output_bias_l1": 1.0, "plan_with_true_reward": True, "model_updates_per_step": 2.0,
        "plan_gamma": 1.0, "plan_init_std": 1.0}
    assert ref.hnet_hidden == (256, 256) and (ref.cem.gamma, ref.cem.init_std) == (1.0, 1.0)
    default = ContinualModelBasedConfig()
    assert default.options["hidden_sizes"] == (200, 200, 200) and default.options["batch_size"] == 256
    assert default.hnet_hidden is None and (default.cem.gamma, default.cem.init_std) == (0.99, 0.5)
    one_off = ContinualModelBasedConfig(preset="reference", activation="silu", hidden_sizes=(200, 200, 200))
    assert one_off.option("activation") == "silu" and one_off.option("init") == "xavier"
    assert one_off.hnet_hidden == (100, 100)  # HyperCRL's table by target widths
    # switching two_optimizers off alone also turns the preset's look-ahead (a step of that update) off
    assert ContinualModelBasedConfig(preset="reference", two_optimizers=False).option("look_ahead") is False
    with pytest.raises(ConfigError, match="look_ahead"):
        ContinualModelBasedConfig(look_ahead=True)


def test_reference_model_gets_every_model_option():
    model = learner().model
    assert (model.config.activation, model.config.init, model.config.loss_reduction) == ("relu", "xavier", "sum")
    assert model.config.normalize_per_task and model.config.look_ahead and model.config.output_bias_l1 == 1.0
    assert not model.max_logvar.requires_grad and not model.min_logvar.requires_grad
    assert learner("default").model.config == HyperConfig(**SMALL, lr=1e-4)  # today's model


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"agent\.preset='nope'.*default, reference"):
        resolve_config("hypercrl", overrides=["agent.preset=nope"])


def test_model_steps_follow_the_preset_unless_set():
    ref = resolve_config("hypercrl", overrides=["agent.preset=reference"])
    assert ref["train"].model_steps is None and continual_model_steps(ref["train"], ref["agent"]) == 2000
    assert ref["agent"].option("batch_size") == 100
    own = resolve_config("hypercrl", overrides=["agent.preset=reference", "train.model_steps=7"])
    assert continual_model_steps(own["train"], own["agent"]) == 7
    default = resolve_config("hypercrl")
    assert continual_model_steps(default["train"], default["agent"]) == 200
    with pytest.raises(ConfigError, match="model_steps"):
        ContinualModelBasedTrainConfig(model_steps=0)


def test_cadence_config_shows_the_preset(capsys):
    cli_main(["config", "hypercrl"])
    out = capsys.readouterr().out
    assert 'preset = "default"' in out and "# two_optimizers = (unset)" in out and "# model_steps = (unset)" in out


# --- model options -------------------------------------------------------------------------------------------------
def test_relu_target_net_and_xavier_zero_bias_hypernetwork():
    torch.manual_seed(0)
    model = HyperDynamics(3, 2, HyperConfig(hidden_sizes=(16, 16), hnet_hidden_sizes=(32,), activation="relu",
                                            init="xavier"))
    linears = [m for m in model.hnet.modules() if isinstance(m, torch.nn.Linear)]
    for layer in linears:
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound and layer.weight.std() > 0.8 * bound / math.sqrt(3)
    model.add_task()
    model.start_task(0)
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    mean, _ = model(obs, act, 0)
    weights = model.task_weights(0)
    relu = functional_mlp(torch.cat([obs, act], -1), weights, F.relu).chunk(2, -1)[0]
    silu = functional_mlp(torch.cat([obs, act], -1), weights, F.silu).chunk(2, -1)[0]
    assert torch.allclose(mean[0], relu) and not torch.allclose(mean[0], silu)


def test_summed_loss_matches_hand_computed_values():
    torch.manual_seed(1)
    config = HyperConfig(hidden_sizes=(8,), hnet_hidden_sizes=(8,), beta=0.3, loss_reduction="sum",
                         output_bias_l1=1.0, train_logvar_bounds=False)
    model = HyperDynamics(3, 2, config)
    for task in range(2):
        model.add_task()
        model.start_task(task)
    with torch.no_grad():
        for p in model.hnet.parameters():
            p.add_(0.01 * torch.randn_like(p))  # the regulariser is non-zero
    batch = {"obs": torch.randn(4, 3), "action": torch.randn(4, 2), "reward": torch.randn(4),
             "next_obs": torch.randn(4, 3)}
    loss, metrics = model.loss(batch)
    mean, logvar = model(batch["obs"], batch["action"], 1)
    target = torch.cat([batch["next_obs"] - batch["obs"], batch["reward"][:, None]], -1)
    per = (mean[0] - target) ** 2 * torch.exp(-logvar[0]) + logvar[0]
    nll = per.sum() / 4  # over batch and columns, divided by the 4 columns (3 state deltas + reward)
    penalty = 0.01 * (model.max_logvar.sum() - model.min_logvar.sum())
    bias = model.task_weights(1)[-1].abs().sum()
    reg = 0.3 * ((model.generate(torch.tensor([0])) - model.reg_targets[:1]) ** 2).sum()
    assert reg > 0
    assert torch.allclose(loss, nll + penalty + bias + 4 * reg, rtol=1e-5)
    assert math.isclose(metrics["model/hnet_reg"], (4 * reg).item(), rel_tol=1e-5)
    assert math.isclose(metrics["model/nll"], 0.5 * per.mean().item(), rel_tol=1e-5)  # comparable to "mean"
    mean_model = HyperDynamics(3, 2, HyperConfig(hidden_sizes=(8,), hnet_hidden_sizes=(8,), beta=0.3))
    mean_model.load_state_dict(model.state_dict())
    mean_loss, _ = mean_model.loss(batch)
    assert torch.allclose(mean_loss, 0.5 * per.mean() + penalty + reg, rtol=1e-5)


def test_adam_lookahead_is_the_step_adam_takes():
    torch.manual_seed(2)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    opt = adam(params, 1e-2)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        before = [p.detach().clone() for p in params]
        delta = adam_lookahead(opt)
        opt.step()
        for p, b in zip(params, before):
            assert torch.allclose(p.detach() - b, delta[id(p)], atol=1e-7)


def test_look_ahead_regulariser_sees_the_next_step():
    model = learner().model
    for task in range(2):
        model.add_task()
        model.start_task(task)
    opts = HyperOptimizers(model, 1e-3)
    loss, _ = model.task_loss({"obs": torch.randn(8, OBS), "action": torch.randn(8, ACT), "reward": torch.randn(8),
                               "next_obs": torch.randn(8, OBS)})
    loss.backward()
    assert model.regularizer() == 0  # at the snapshot
    assert model.regularizer(delta=adam_lookahead(opts.theta)) > 0


def test_the_embedding_optimiser_gets_no_regulariser_gradient():
    """One update of task 1 with beta 0 and with beta 1e6: the current embedding moves the same (its own Adam, its
    own clip, task loss only), Theta does not (its look-ahead regulariser is on)."""
    base = two_tasks(learner())
    runs = {}
    for beta in (0.0, 1e6):
        other = learner(beta=beta)
        other.load_state_dict(base.state_dict())
        other.fit(data(seed=5), 1)
        runs[beta] = other.model
    emb = [m.task_embeddings[1].detach() for m in runs.values()]
    assert torch.equal(emb[0], emb[1])
    assert not torch.equal(emb[0], base.model.task_embeddings[1].detach())
    hnets = [torch.cat([p.detach().flatten() for p in m.hnet.parameters()]) for m in runs.values()]
    assert not torch.allclose(hnets[0], hnets[1])
    # the default single optimiser clips every gradient together: beta's huge gradient shrinks the embedding's step
    singles, base = {}, two_tasks(learner("default"))
    for beta in (0.0, 1e6):
        other = learner("default", beta=beta)
        other.load_state_dict(base.state_dict())
        other.fit(data(seed=5), 2)
        singles[beta] = other.model.task_embeddings[1].detach()
    assert not torch.allclose(singles[0.0], singles[1e6])


def test_per_task_normalisers_differ_and_keep_earlier_tasks():
    ref = learner()
    ref.start_task(0)
    first = data(scale=1.0)
    ref.fit(first, 2)
    ref.start_task(1)
    second = data(scale=10.0, shift=5.0, seed=1)
    ref.fit(second, 2)
    model = ref.model
    for task, d in enumerate((first, second)):
        mean, std = input_scale(torch.cat([d["obs"], d["action"]], -1))
        assert torch.allclose(model.task_in_mean[task], mean) and torch.allclose(model.task_in_std[task], std)
    assert not torch.allclose(model.task_in_mean[0], model.task_in_mean[1])
    obs, act = second["obs"][:5], second["action"][:5]
    x = (torch.cat([obs, act], -1) - model.task_in_mean[0]) / model.task_in_std[0]
    assert torch.allclose(model(obs, act, 0)[0][0], functional_mlp(x, model.task_weights(0), F.relu).chunk(2, -1)[0])
    rows = model(obs, act, torch.tensor([0, 1, 0, 1, 1]))[0][0]  # per-row ids use each row's normaliser
    assert torch.allclose(rows[0], model(obs[:1], act[:1], 0)[0][0, 0], atol=1e-6)
    assert torch.allclose(rows[1], model(obs[1:2], act[1:2], 1)[0][0, 0], atol=1e-6)
    assert ref.normalizer is None  # the shared normaliser stays unused


# --- planning -------------------------------------------------------------------------------------------------------
def test_planning_with_the_true_reward_scores_transitions_by_it():
    ref = two_tasks(learner())
    reward = obs_reward("HalfCheetahBody-v0")
    assert reward is not None
    ref.set_true_reward(reward)
    planner = ref.planner()
    obs, actions = torch.randn(1, OBS), torch.rand(16, 2, ACT) * 2 - 1
    returns = planner.evaluate(obs, actions, task=1)
    view = ref.dynamics(1)
    state, expected = obs.expand(16, -1), torch.zeros(16)
    with torch.no_grad():
        for t in range(2):  # undiscounted (plan_gamma 1.0), the model's next states, the true reward of each
            nxt, _ = view.elite_mean(state, actions[:, t])
            expected += reward(state, actions[:, t], nxt)
            state = nxt
    assert torch.allclose(returns, expected, atol=1e-5)
    assert torch.allclose(reward(obs, actions[:1, 0], obs), obs[:, 8] - 0.1 * actions[:1, 0].square().sum(-1))


def test_true_reward_is_known_only_where_the_observation_holds_it(caplog):
    assert obs_reward("HalfCheetah-v5") is not None
    assert obs_reward("CheetahVel-v0") is None  # the target velocity is a task parameter
    assert obs_reward("Hopper-v5") is None
    ref = two_tasks(learner())
    with caplog.at_level(logging.WARNING):
        planner = ref.planner()
        ref.planner()
    assert [r.message for r in caplog.records].count(
        "plan_with_true_reward: no reward of (s, a, s') is known for this env; planning with the learned reward") == 1
    obs, actions = torch.randn(1, OBS), torch.rand(4, 1, ACT)
    with torch.no_grad():
        _, learned = ref.dynamics(1).elite_mean(obs.expand(4, -1), actions[:, 0])
    assert torch.allclose(planner.evaluate(obs, actions, task=1), learned)


def test_half_cheetah_reward_reads_the_env_weights():
    import gymnasium as gym

    env = gym.make("HalfCheetah-v5", ctrl_cost_weight=0.5)
    act = torch.ones(1, ACT)
    assert torch.allclose(obs_reward("HalfCheetah-v5", env)(torch.zeros(1, OBS), act, torch.zeros(1, OBS)),
                          half_cheetah(1.0, 0.5)(torch.zeros(1, OBS), act, torch.zeros(1, OBS)))
    env.close()


# --- checkpoints ----------------------------------------------------------------------------------------------------
def test_reference_checkpoint_round_trip_continues_identically():
    ref = two_tasks(learner())
    ref.fit(data(seed=2), 3)
    buffer = io.BytesIO()
    torch.save(ref.state_dict(), buffer)
    buffer.seek(0)
    restored = learner()
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert isinstance(restored.optimizer, HyperOptimizers)
    assert set(ref.state_dict()["optimizer"]) == {"theta", "embedding"}
    for a, b in zip(ref.model.state_dict().values(), restored.model.state_dict().values()):
        assert torch.equal(a, b)
    for mine in (ref, restored):
        mine.fit(data(seed=3), 2)
    for a, b in zip(ref.model.state_dict().values(), restored.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="two_optimizers"):
        learner(two_optimizers=False).load_state_dict(ref.state_dict())


def test_half_cheetah_obs_reward_tracks_the_env_reward():
    """The trapezoid velocity (mean of the two observations' x-velocity) follows Gymnasium's finite-difference
    reward closely on random steps: its error is a fraction of the reward's own spread."""
    import gymnasium as gym

    env = gym.make("HalfCheetah-v5")
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(300):
        action = rng.uniform(-1, 1, ACT).astype(np.float32)
        next_obs, reward, *_ = env.step(action)
        rows.append((obs, action, next_obs, reward))
        obs = next_obs
    env.close()
    o, a, n, r = (torch.as_tensor(np.array(x), dtype=torch.float32) for x in zip(*rows))
    error = obs_reward("HalfCheetah-v5")(o, a, n) - r
    assert error.std() < 0.4 * r.std()
