import numpy as np
import pytest
import torch

from cadence.agents.planning import CEMConfig, CEMPlanner
from cadence.config import ConfigError, build, to_dict
from cadence.nn import adam
from cadence.world_models import DynamicsModel, HyperConfig, HyperDynamics, train_model_steps

TINY = HyperConfig(hidden_sizes=(16, 8), hnet_hidden_sizes=(8,), lr=1e-3, batch_size=64)
CHUNKED = HyperConfig(hidden_sizes=(16, 8), hnet_hidden_sizes=(8,), chunked=True, chunk_size=50,
                      chunk_embedding_size=4)


def model_with_tasks(config: HyperConfig, n_tasks: int, seed: int = 0) -> HyperDynamics:
    torch.manual_seed(seed)
    model = HyperDynamics(3, 2, config)
    for _ in range(n_tasks):
        model.add_task()
    return model


def linear_task(A: torch.Tensor, n: int, seed: int) -> dict[str, torch.Tensor]:
    """s' = A s + B a on random states and actions, no reward."""
    g = torch.Generator().manual_seed(seed)
    obs, act = torch.randn(n, 2, generator=g), torch.rand(n, 1, generator=g) * 2 - 1
    next_obs = obs @ A.T + act @ torch.tensor([[0.5], [1.0]]).T
    return {"obs": obs, "action": act, "next_obs": next_obs, "reward": torch.zeros(n)}


def test_config_defaults_follow_the_variant():
    plain, chunked = HyperConfig(), HyperConfig(chunked=True)
    assert (plain.reg_beta, chunked.reg_beta) == (0.05, 0.005)
    assert (plain.hnet_hidden, chunked.hnet_hidden) == ((100, 100), (25, 30))
    assert (plain.plastic, chunked.plastic) == (False, True)
    assert HyperConfig(beta=0.5, chunked=True).reg_beta == 0.5
    assert build(HyperConfig, to_dict(chunked)) == chunked  # None fields survive the TOML round trip
    for bad in ({"beta": -1.0}, {"hidden_sizes": ()}, {"hnet_hidden_sizes": (0,)}, {"chunk_size": 0},
                {"grad_clip": 0.0}, {"lr": 0.0}):
        with pytest.raises(ConfigError):
            HyperConfig(**bad)


@pytest.mark.parametrize("config", [TINY, CHUNKED], ids=["plain", "chunked"])
def test_generated_weights_have_the_target_shapes(config):
    model = model_with_tasks(config, 2)
    expected = [(16, 5), (16,), (8, 16), (8,), (8, 8), (8,)]  # in 3+2, out 2 * (3 states + reward)
    assert model.target_shapes == expected
    assert model.n_weights == sum(int(np.prod(s)) for s in expected)
    assert [tuple(w.shape) for w in model.task_weights(1)] == expected
    assert model.generate(torch.tensor([0, 1])).shape == (2, model.n_weights)
    mean, logvar = model(torch.randn(7, 3), torch.randn(7, 2), 1)
    assert mean.shape == logvar.shape == (1, 7, 4)
    assert (logvar <= model.max_logvar + 1e-6).all() and (logvar >= model.min_logvar - 1e-6).all()
    if config.chunked:
        assert model.chunk_embeddings.shape == (-(-model.n_weights // 50), 4)


@pytest.mark.parametrize("config", [TINY, CHUNKED], ids=["plain", "chunked"])
def test_per_row_task_ids_match_per_task_calls(config):
    model = model_with_tasks(config, 3)
    obs, act = torch.randn(9, 3), torch.randn(9, 2)
    tasks = torch.tensor([2, 0, 1, 1, 0, 2, 2, 0, 1])
    for grad in (True, False):  # no-grad calls read the cached weight table
        with torch.set_grad_enabled(grad):
            mean, logvar = model(obs, act, tasks)
            for t in range(3):
                rows = tasks == t
                m_t, lv_t = model(obs[rows], act[rows], t)
                torch.testing.assert_close(mean[:, rows], m_t)
                torch.testing.assert_close(logvar[:, rows], lv_t)
    assert not torch.equal(model(obs, act, 0)[0], model(obs, act, 1)[0])  # tasks differ
    torch.testing.assert_close(model(obs, act, torch.full((9,), 2))[0], model(obs, act, 2)[0])  # one id
    with pytest.raises(IndexError):
        model(obs, act, 3)
    with pytest.raises(IndexError):
        model(obs, act, torch.full((9,), 5))


def test_regularizer_is_zero_at_the_snapshot_and_grows_after_a_step():
    model = model_with_tasks(TINY, 3)
    assert model.regularizer().item() == 0.0  # task 0: nothing to protect
    model.start_task(2)
    assert model.reg_targets.shape == (2, model.n_weights)
    assert model.regularizer().item() == 0.0
    assert not model.task_embeddings[0].requires_grad and model.task_embeddings[2].requires_grad  # plain: frozen
    batch = {"obs": torch.randn(64, 3), "action": torch.randn(64, 2), "next_obs": torch.randn(64, 3),
             "reward": torch.randn(64)}
    loss, metrics = model.loss(batch)
    assert metrics["model/hnet_reg"] == 0.0 and set(metrics) == {"model/nll", "model/mse", "model/hnet_reg"}
    optimizer = adam(model.parameters_for_optimizer(), 1e-2)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    reg = model.regularizer()
    assert reg.item() > 0.0
    # beta scales it: the same parameters and targets under twice the beta
    twice = HyperDynamics(3, 2, HyperConfig(**{**TINY.__dict__, "beta": 2 * TINY.reg_beta}))
    twice.load_state_dict(model.state_dict())
    torch.testing.assert_close(twice.regularizer(), 2 * reg)
    # it is the mean over earlier tasks of the summed squares of the generated weights' change
    change = ((model.generate(torch.arange(2)) - model.reg_targets) ** 2).sum(1).mean()
    torch.testing.assert_close(reg, TINY.reg_beta * change)


def test_regularizer_keeps_the_first_task():
    """Two linear tasks learned in turn: the regulariser keeps task 0's predictions, beta = 0 forgets them."""
    A0, A1 = torch.tensor([[0.9, 0.1], [-0.2, 0.8]]), torch.tensor([[0.5, -0.6], [0.7, 0.4]])
    data = [linear_task(A0, 1000, 0), linear_task(A1, 1000, 1)]

    def task0_error_after_two_tasks(beta: float) -> tuple[float, float]:
        torch.manual_seed(0)
        config = HyperConfig(hidden_sizes=(32, 32), hnet_hidden_sizes=(16, 16), beta=beta, lr=1e-3,
                             learn_reward=False, batch_size=64)
        model = HyperDynamics(2, 1, config)
        model.set_normalizer(data[0]["obs"], data[0]["action"])
        generator = torch.Generator().manual_seed(0)
        for d in data:
            model.start_task(model.add_task())
            params = model.parameters_for_optimizer()
            train_model_steps(model.loss, params, d, 250, 64, adam(params, config.lr), config.grad_clip, generator)
        with torch.no_grad():
            errors = [((model(d["obs"], d["action"], t)[0][0] - (d["next_obs"] - d["obs"])) ** 2).mean().item()
                      for t, d in enumerate(data)]
        return errors[0], errors[1]

    kept, learned = task0_error_after_two_tasks(0.05)
    forgot, _ = task0_error_after_two_tasks(0.0)
    assert learned < 0.01  # the second task is learned under the regulariser
    assert kept < 0.25 * forgot, (kept, forgot)


def test_task_view_is_a_dynamics_model_and_drives_cem():
    model = model_with_tasks(TINY, 2)
    view = model.for_task(1)
    assert isinstance(view, DynamicsModel) and view.predicts_reward
    assert view.elites.tolist() == [0] and (view.obs_dim, view.act_dim) == (3, 2)
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    next_obs, reward = view.elite_mean(obs, act)
    mean, _ = model(obs, act, 1)
    torch.testing.assert_close(next_obs, obs + mean[0, :, :3])
    torch.testing.assert_close(reward, mean[0, :, 3])
    assert view.predict(obs, act).mean.shape == (1, 5, 4)
    loss, metrics = view.loss({"obs": obs, "action": act, "next_obs": obs, "reward": torch.zeros(5)})
    assert loss.requires_grad and "model/nll" in metrics
    assert view.state_dict().keys() == model.state_dict().keys()

    planner = CEMPlanner(view, -np.ones(2, np.float32), np.ones(2, np.float32),
                         CEMConfig(horizon=3, samples=20, elites=4, iterations=2), generator=torch.Generator())
    assert planner.act_sequence(np.zeros(3, np.float32), 2).shape == (2, 2)

    # the view sees later training (no stale weights, also through the no-grad cache)
    with torch.no_grad():
        before = view.elite_mean(obs, act)[0]
        model.hnet[-1].bias.add_(1.0)
        assert not torch.equal(before, view.elite_mean(obs, act)[0])

    rows = model.for_task(torch.tensor([0, 1, 1, 0, 1]))
    torch.testing.assert_close(rows(obs, act)[0][:, 1], view(obs, act)[0][:, 1])


@pytest.mark.parametrize("config", [TINY, CHUNKED], ids=["plain", "chunked"])
def test_state_dict_round_trip_with_three_tasks(config):
    model = model_with_tasks(config, 3, seed=0)
    model.set_normalizer(torch.randn(20, 3), torch.randn(20, 2))
    model.start_task(2)
    with torch.no_grad():
        model.hnet[0].weight.add_(0.1)  # so the regulariser is not zero
    fresh = model_with_tasks(config, 0, seed=1)
    fresh.load_state_dict(model.state_dict())
    assert fresh.n_tasks == 3 and fresh.current_task == 2
    assert fresh.task_embeddings[1].requires_grad == config.plastic  # frozen again after loading (plain)
    torch.testing.assert_close(fresh.regularizer(), model.regularizer())
    assert model.regularizer().item() > 0
    obs, act = torch.randn(6, 3), torch.randn(6, 2)
    for task in (0, 1, 2, torch.tensor([2, 1, 0, 0, 1, 2])):
        for a, b in zip(fresh(obs, act, task), model(obs, act, task)):
            assert torch.equal(a, b)
    # nested in another module, the state still loads into a fresh one
    outer, fresh_outer = torch.nn.ModuleDict({"m": model}), torch.nn.ModuleDict({"m": model_with_tasks(config, 1)})
    fresh_outer.load_state_dict(outer.state_dict())
    assert fresh_outer["m"].n_tasks == 3


@pytest.mark.parametrize("ids", [[2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2], [2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 1]])
def test_rows_of_several_tasks_match_one_call_per_row(ids):
    """Equal groups (one batched product per layer) and unequal ones (one MLP call per task) alike."""
    torch.manual_seed(0)
    model = HyperDynamics(5, 2, HyperConfig(hidden_sizes=(16, 16), hnet_hidden_sizes=(8,)))
    for _ in range(3):
        model.add_task()
    obs, act, ids = torch.randn(12, 5), torch.randn(12, 2), torch.tensor(ids)
    with torch.no_grad():
        mean, logvar = model(obs, act, ids)
        one_by_one = [model(obs[i : i + 1], act[i : i + 1], int(ids[i])) for i in range(12)]
    torch.testing.assert_close(mean, torch.cat([m for m, _ in one_by_one], dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logvar, torch.cat([v for _, v in one_by_one], dim=1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", [TINY, CHUNKED], ids=["plain", "chunked"])
def test_no_grad_predictions_follow_fused_adam_steps(config):
    """A no-grad prediction after training equals a fresh copy's: the fused Adam step does not bump parameters'
    ``_version`` on CPU, so weights cached on it went stale (planning then used the first call's weights)."""
    import copy

    model = model_with_tasks(config, 2)
    model.start_task(1)
    obs, act = torch.randn(32, 3), torch.randn(32, 2)
    with torch.no_grad():
        before = model(obs, act, 1)[0].clone()  # a no-grad call first, as a planner makes before the next fit
    data = linear_task(torch.eye(2), 256, seed=0)
    data = {"obs": torch.cat([data["obs"], data["obs"][:, :1]], 1), "action": torch.cat([data["action"]] * 2, 1),
            "next_obs": torch.cat([data["next_obs"], data["obs"][:, :1]], 1), "reward": data["reward"]}
    optimizer = adam(model.parameters_for_optimizer(), lr=1e-2)
    train_model_steps(model.loss, model.parameters_for_optimizer(), data, 20, 64, optimizer, None, None)
    with torch.no_grad():
        after = model(obs, act, 1)[0]
        fresh = copy.deepcopy(model)(obs, act, 1)[0]
        assert not torch.allclose(after, before)
        torch.testing.assert_close(after, fresh)
        # inside a planner's frozen-weights scope the weights are generated once and reused, and a later scope
        # sees the trained parameters
        with model.frozen_weights():
            torch.testing.assert_close(model(obs, act, 1)[0], fresh)
            torch.testing.assert_close(model.for_task(torch.tensor([1] * 32))(obs, act)[0], fresh)
    train_model_steps(model.loss, model.parameters_for_optimizer(), data, 5, 64, optimizer, None, None)
    with torch.no_grad(), model.frozen_weights():
        torch.testing.assert_close(model(obs, act, 1)[0], copy.deepcopy(model)(obs, act, 1)[0])
        calls = []
        generate = model.generate
        model.generate = lambda tasks: calls.append(tasks) or generate(tasks)  # noqa: B023
        for _ in range(3):  # a plan's repeated calls: the weights are generated once per block
            model(obs, act, 1)
            model.for_task(torch.tensor([0, 1] * 16))(obs, act)
        assert len(calls) == 0  # made by the first call of the block, above
