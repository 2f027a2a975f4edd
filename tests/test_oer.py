"""Continual offline RL: OER's memories (random, MBES), dual behaviour cloning and the task-conditioned learner."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from cadence.agents.oer import STRATEGIES, ContinualOffline, ContinualOfflineConfig, one_hot_tasks
from cadence.config import ConfigError

OBS, ACT = 3, 2
TINY = {"hidden_sizes": (16, 16), "batch_size": 32, "memory": 60, "mbes_starts": 8, "mbes_horizon": 3,
        "mbes_model_rows": 200, "mbes_model_epochs": 1, "mbes_max_states": 20}


def task_data(task, n=200, seed=0):
    g = torch.Generator().manual_seed(seed + task)
    obs = torch.randn(n, OBS, generator=g) + 3 * task  # each task lives in its own part of the state space
    action = torch.rand(n, ACT, generator=g) * 2 - 1
    return {"obs": obs, "action": action, "reward": torch.randn(n, generator=g), "next_obs": obs + 0.1,
            "terminated": torch.zeros(n, dtype=torch.bool), "episode_start": torch.arange(n) % 50 == 0}


def learner(strategy, n_tasks=3, **kw):
    torch.manual_seed(0)
    config = ContinualOfflineConfig(**{**TINY, **kw})
    return ContinualOffline(spaces.Box(-np.inf, np.inf, (OBS,)), spaces.Box(-1.0, 1.0, (ACT,)), n_tasks, strategy,
                            config)


def batch_tasks(agent, monkeypatch):
    """A list that receives the task of every row of each batch TD3+BC updates on (read from the one-hot)."""
    seen = []
    update = agent.td3bc.update
    monkeypatch.setattr(agent.td3bc, "update", lambda batch: seen.append(batch["obs"][:, OBS:].argmax(1)) or
                        update(batch))
    return seen


def run_tasks(agent, n_tasks, updates=3):
    for task in range(n_tasks):
        agent.begin_task(task, task_data(task))
        for _ in range(updates):
            agent.update()
        agent.end_task()


def test_one_hot_task_conditioning():
    obs = torch.zeros(2, 3)
    np.testing.assert_array_equal(one_hot_tasks(obs, 1, 3)[:, 3:], [[0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(one_hot_tasks(obs, torch.tensor([2, 0]), 3)[:, 3:], [[0, 0, 1], [1, 0, 0]])


@pytest.mark.parametrize("strategy", ["er", "oer"])
def test_memory_never_exceeds_its_size_and_keeps_an_equal_quota_per_task(strategy):
    agent = learner(strategy)
    for task in range(3):
        agent.begin_task(task, task_data(task))
        agent.update()
        agent.end_task()
        assert len(agent.memory) <= 60
        assert agent.memory.task_counts() == dict.fromkeys(range(task + 1), 60 // (task + 1))


def test_mbes_keeps_the_rows_nearest_the_policys_model_states():
    agent = learner("mbes", n_tasks=1)
    data = task_data(0)
    agent.begin_task(0, data)
    agent.update()
    agent.end_task()
    refs = agent.selector.references[0]
    assert refs.shape == (20, OBS)  # mbes_max_states of the start states and their model successors
    kept = agent.memory.transitions()["obs"]
    scale = agent.td3bc.obs_std[:OBS]
    distance = torch.cdist(data["obs"] / scale, refs / scale).min(dim=1).values
    nearest = torch.sort(distance).values[:60]
    kept_distance = torch.cdist(kept / scale, refs / scale).min(dim=1).values
    torch.testing.assert_close(torch.sort(kept_distance).values, nearest)


def test_dual_cloning_head_learns_from_old_task_memory_only_and_td3bc_from_the_current_task_only(monkeypatch):
    agent = learner("dbc", n_tasks=2)
    seen = batch_tasks(agent, monkeypatch)
    clone_before = [p.clone() for p in agent.clone.parameters()]
    agent.begin_task(0, task_data(0))
    agent.update()
    assert all(torch.equal(a, b) for a, b in zip(clone_before, agent.clone.parameters()))  # no memory yet: no step
    agent.end_task()
    agent.begin_task(1, task_data(1))
    grads_from = []
    memory_batch = agent._memory_batch
    monkeypatch.setattr(agent, "_memory_batch", lambda n: grads_from.append(memory_batch(n)) or grads_from[-1])
    metrics = agent.update()
    assert "clone_loss" in metrics
    assert not all(torch.equal(a, b) for a, b in zip(clone_before, agent.clone.parameters()))
    assert (grads_from[0]["task_id"] == 0).all()  # the cloning head's batch: old-task memory only
    assert all((tasks == t).all() for tasks, t in zip(seen, [0, 1], strict=True))  # TD3+BC: the current task only


def test_er_mixes_memory_into_every_td3bc_batch(monkeypatch):
    agent = learner("er", n_tasks=2, memory_share=0.25)
    run_tasks(agent, 1)
    agent.begin_task(1, task_data(1))
    seen = batch_tasks(agent, monkeypatch)
    agent.update()
    assert (seen[0] == 0).sum() == 8 and (seen[0] == 1).sum() == 24  # a quarter of 32 from memory


def test_multitask_samples_every_task_so_far(monkeypatch):
    agent = learner("multitask", batch_size=300)
    run_tasks(agent, 2, updates=1)
    agent.begin_task(2, task_data(2))
    seen = batch_tasks(agent, monkeypatch)
    agent.update()
    counts = torch.bincount(seen[0], minlength=3)
    assert (counts > 60).all()  # about 100 each
    assert agent.memory is None


def test_finished_tasks_are_served_by_the_cloning_head():
    agent = learner("dbc", n_tasks=3)
    run_tasks(agent, 2)
    obs = np.zeros((4, OBS), dtype=np.float32)
    plans = agent.act_sequence(obs, 3, np.array([0, 1, 1, 0]))
    assert plans.shape == (4, 3, ACT)
    clone = agent._act(agent.clone, torch.zeros(1, OBS), 0).numpy()
    rl = agent._act(agent.td3bc.actor, torch.zeros(1, OBS), 1).numpy()
    np.testing.assert_allclose(plans[0, 0], clone[0], rtol=1e-6)
    np.testing.assert_allclose(plans[1, 2], rl[0], rtol=1e-6)
    assert not np.allclose(clone, rl)
    assert agent.act_sequence(obs[0], 2).shape == (2, ACT)  # one state, the current task


def test_state_dict_round_trip_continues_identically():
    agent = learner("oer")
    run_tasks(agent, 2)
    agent.begin_task(2, task_data(2))
    twin = learner("oer")
    twin.load_state_dict(agent.state_dict())
    twin.current = agent.current
    obs = np.random.default_rng(0).standard_normal((5, OBS)).astype(np.float32)
    tasks = np.array([0, 1, 2, 2, 0])
    np.testing.assert_array_equal(agent.act_sequence(obs, 1, tasks), twin.act_sequence(obs, 1, tasks))
    torch.manual_seed(5)  # TD3's target noise draws from torch's global generator, which a run's checkpoint keeps
    first = agent.update()
    torch.manual_seed(5)
    assert twin.update() == first


def test_bad_settings_and_order():
    for bad in ({"memory": 0}, {"memory_share": 1.0}, {"mbes_horizon": 0}):
        with pytest.raises(ConfigError):
            ContinualOfflineConfig(**bad)
    with pytest.raises(ValueError, match="unknown strategy 'ewc'; strategies: oer, er"):
        learner("ewc")
    agent = learner("er")
    with pytest.raises(ValueError, match="expected 0, got 1"):
        agent.begin_task(1, task_data(1))
    with pytest.raises(ValueError, match="update before begin_task"):
        agent.update()
    assert set(STRATEGIES) == {"oer", "er", "mbes", "dbc", "finetune", "multitask"}
