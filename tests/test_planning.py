import gymnasium as gym
import numpy as np
import pytest
import torch

from cadence.agents.planning import CEMConfig, CEMPlanner
from cadence.config import ConfigError
from cadence.envs.terminations import TERMINATIONS, termination_fn
from cadence.world_models import EnsembleConfig, GaussianEnsemble


@pytest.mark.parametrize("env_id", [e for e in TERMINATIONS if e != "Pendulum-v1"])
def test_terminations_equal_gymnasium(env_id):
    env = gym.make(env_id)
    fn = termination_fn(env_id)
    rng = np.random.default_rng(0)
    flags, ours = [], []
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(400):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        flags.append(terminated)
        ours.append(bool(fn(torch.as_tensor(obs, dtype=torch.float32))))
        if terminated or truncated:
            env.reset(seed=int(rng.integers(1000)))
    assert ours == flags
    if env_id in ("InvertedPendulum-v5", "Hopper-v5", "Walker2d-v5"):
        assert any(flags)  # the comparison covered terminal states


class PointModel(GaussianEnsemble):
    """A known model for planning tests: s' = s + a, reward = -|s'|^2 (goal at the origin)."""

    def elite_mean(self, obs, act):
        nxt = obs + act
        return nxt, -(nxt**2).sum(-1)


def point_planner(**overrides):
    model = PointModel(2, 2, EnsembleConfig(n_members=1, n_elites=1, hidden_sizes=(4,)))
    cfg = CEMConfig(**{"horizon": 5, "samples": 300, "elites": 30, "iterations": 5, **overrides})
    return CEMPlanner(model, -np.ones(2, np.float32), np.ones(2, np.float32), cfg,
                      generator=torch.Generator().manual_seed(0))


def test_cem_plans_towards_the_goal():
    planner = point_planner()
    start = np.array([0.8, -0.5], dtype=np.float32)
    plan = planner.plan(start)
    assert plan.shape == (5, 2)
    assert np.linalg.norm(start + plan[0]) < 0.3 * np.linalg.norm(start)  # most of the way in one step
    # the best plan (a0 = -s, then stay: return 0) beats doing nothing (return 5 * -0.89) by far
    planned = planner.evaluate(torch.as_tensor(start)[None], torch.as_tensor(plan)[None]).item()
    assert -0.15 < planned <= 0.0


def test_act_sequence_lengths():
    planner = point_planner()
    obs = np.zeros(2, dtype=np.float32)
    assert planner.act_sequence(obs, 3).shape == (3, 2)
    assert planner.act_sequence(obs, 12).shape == (12, 2)  # horizon grows to the ASL


def test_termination_stops_returns():
    model = PointModel(2, 2, EnsembleConfig(n_members=1, n_elites=1, hidden_sizes=(4,)))
    planner = CEMPlanner(model, -np.ones(2, np.float32), np.ones(2, np.float32), CEMConfig(horizon=3, gamma=1.0),
                         termination_fn=lambda s: s[..., 0] > 1.5)
    obs = torch.tensor([[1.0, 0.0]])
    actions = torch.tensor([[[1.0, 0.0]] * 3, [[-1.0, 0.0]] * 3])
    returns = planner.evaluate(obs, actions)
    # candidate 0: s=(2,0) r=-4 then terminated; candidate 1: (0,0),(−1,0),(−2,0): 0 - 1 - 4
    torch.testing.assert_close(returns, torch.tensor([-4.0, -5.0]))


def test_bad_config():
    with pytest.raises(ConfigError, match="elites"):
        CEMConfig(samples=10, elites=20)
    with pytest.raises(ValueError, match="no torch termination"):
        termination_fn("CartPole-v1")


def test_batched_plan_plans_each_world():
    planner = point_planner()
    starts = np.array([[0.8, -0.5], [-0.6, 0.7], [0.0, 0.9]], dtype=np.float32)
    plans = planner.plan(starts)
    assert plans.shape == (3, 5, 2)
    for start, plan in zip(starts, plans, strict=True):
        assert np.linalg.norm(start + plan[0]) < 0.3 * np.linalg.norm(start)
    assert planner.act_sequence(starts, 2).shape == (3, 2, 2)


class GoalPerTask(PointModel):
    """s' = s + a; task t rewards closeness to goal ``GOALS[t]``; ``for_task`` takes an int or one id per row."""

    GOALS = torch.tensor([[0.5, 0.5], [-0.5, 0.0]])

    def for_task(self, task):
        goal = self.GOALS[torch.as_tensor(task)]
        outer = self

        class View:
            predicts_reward = True

            def elite_mean(self, obs, act):
                nxt = obs + act
                return nxt, -((nxt - goal) ** 2).sum(-1)

        outer.views = getattr(outer, "views", 0) + 1
        return View()


def test_task_conditioned_plans_go_to_each_worlds_goal():
    model = GoalPerTask(2, 2, EnsembleConfig(n_members=1, n_elites=1, hidden_sizes=(4,)))
    planner = CEMPlanner(model, -np.ones(2, np.float32), np.ones(2, np.float32),
                         CEMConfig(horizon=3, samples=300, elites=30, iterations=5),
                         generator=torch.Generator().manual_seed(0))
    starts = np.zeros((3, 2), np.float32)
    first = planner.plan(starts, task=[0, 1, 0])[:, 0]
    np.testing.assert_allclose(first, GoalPerTask.GOALS[[0, 1, 0]].numpy(), atol=0.15)
    one = planner.plan(starts[0], task=1)[0]  # one world, one task id
    np.testing.assert_allclose(one, GoalPerTask.GOALS[1].numpy(), atol=0.15)
    assert model.views == 5 + 5  # one view per CEM iteration and call, never one per world


def test_generator_on_keeps_a_same_device_generator_and_seeds_another_from_it():
    from cadence.agents.planning import generator_on

    cpu = torch.Generator().manual_seed(3)
    assert generator_on(torch.device("cpu"), cpu) is cpu
    assert generator_on(torch.device("cpu"), None) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_planner_on_cuda_takes_the_loops_cpu_generator():
    # the continual loop hands its CPU generator to a planner whose model is on the GPU
    model = PointModel(2, 2, EnsembleConfig(n_members=1, n_elites=1, hidden_sizes=(4,))).to("cuda")
    planner = CEMPlanner(model, -np.ones(2, np.float32), np.ones(2, np.float32), CEMConfig(horizon=3, samples=50,
                         elites=5, iterations=2), generator=torch.Generator().manual_seed(0), device="cuda")
    assert planner.generator.device.type == "cuda"
    assert planner.plan(np.array([0.5, -0.5], dtype=np.float32)).shape == (3, 2)
