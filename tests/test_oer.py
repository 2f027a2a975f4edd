"""Continual offline RL: OER's memories (random, MBES), dual behaviour cloning and the task-conditioned learner."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from cadence.agents.oer import STRATEGIES, ContinualOffline, ContinualOfflineConfig, episode_steps, one_hot_tasks
from cadence.config import ConfigError

OBS, ACT = 3, 2
TINY = {"hidden_sizes": (16, 16), "batch_size": 32, "memory": 60, "mbes_starts": 8, "mbes_model_rows": 200,
        "mbes_model_epochs": 1, "mbes_max_states": 20}
EPISODE = 40  # trajectory_data's episode length


def task_data(task, n=200, seed=0):
    g = torch.Generator().manual_seed(seed + task)
    obs = torch.randn(n, OBS, generator=g) + 3 * task  # each task lives in its own part of the state space
    action = torch.rand(n, ACT, generator=g) * 2 - 1
    return {"obs": obs, "action": action, "reward": torch.randn(n, generator=g), "next_obs": obs + 0.1,
            "terminated": torch.zeros(n, dtype=torch.bool), "episode_start": torch.arange(n) % 50 == 0}


def trajectory_data(task, episodes=6, seed=0):
    """Episodes that move: state 0 advances 0.25 a step, states 1-2 are an episode's own constant offset."""
    g = torch.Generator().manual_seed(seed + task)
    step = torch.arange(EPISODE).repeat(episodes).float()
    offset = (torch.randn(episodes, OBS - 1, generator=g) * 0.3).repeat_interleave(EPISODE, 0)
    obs = torch.cat([(0.25 * step + 3 * task)[:, None], offset], dim=1)
    n = len(step)
    return {"obs": obs, "action": torch.rand(n, ACT, generator=g) * 2 - 1, "reward": torch.randn(n, generator=g),
            "next_obs": obs + torch.tensor([0.25, 0.0, 0.0]), "terminated": torch.zeros(n, dtype=torch.bool),
            "episode_start": step == 0}


class OracleModel:
    """A stand-in for MBES's fitted model whose prediction is ``jump`` data steps ahead of the state."""

    def __init__(self, jump):
        self.jump = jump

    def elite_mean(self, obs, act):
        return obs + torch.tensor([0.25 * self.jump, 0.0, 0.0]), None


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
    assert 0 < len(refs) <= 20  # mbes_max_states of the real states the rollouts reached
    assert (refs[:, None] == data["obs"][None]).all(dim=-1).any(dim=1).all()  # every reference is a row of the data
    kept = agent.memory.transitions()["obs"]
    scale = agent.td3bc.obs_std[:OBS]
    distance = torch.cdist(data["obs"] / scale, refs / scale).min(dim=1).values
    nearest = torch.sort(distance).values[:60]
    kept_distance = torch.cdist(kept / scale, refs / scale).min(dim=1).values
    torch.testing.assert_close(torch.sort(kept_distance).values, nearest)


def test_mbes_rollouts_start_at_episode_starts_and_last_whole_episodes():
    agent = learner("mbes", n_tasks=1)
    data = trajectory_data(0)
    agent.begin_task(0, data)
    path = agent.mbes_rollouts(data)
    assert path.shape == (8, EPISODE) and (path >= 0).all()  # the data's episode length; nothing terminates here
    steps = episode_steps(data["episode_start"])
    assert (steps[path[:, 0]] == 0).all()
    visited = steps[path]
    assert visited.max() >= EPISODE - 2 and (visited >= EPISODE // 2).float().mean() > 0.3  # not only early states
    assert agent.mbes_rollouts(data).shape[1] == EPISODE
    capped = learner("mbes", n_tasks=1, mbes_horizon=7)
    capped.begin_task(0, data)
    assert capped.mbes_rollouts(data).shape == (8, 7)


def test_mbes_reanchors_every_step_on_the_real_state_nearest_the_models_prediction():
    agent = learner("mbes", n_tasks=1)
    data = trajectory_data(0)
    agent.begin_task(0, data)
    rows = torch.arange(len(data["obs"]))
    steps = episode_steps(data["episode_start"])
    path = agent._anchored_rollouts(OracleModel(jump=2), data, rows, None)
    # two data steps a rollout step, in the episode it started in, until the episode's last state
    expected = torch.clamp(2 * torch.arange(EPISODE), max=EPISODE - 1)
    assert (steps[path] == expected).all()
    assert (path - path[:, :1] == expected).all()
    # a model that sees no progress: the rollout takes the data's own next state rather than stalling
    stalled = agent._anchored_rollouts(OracleModel(jump=0), data, rows, None)
    assert (steps[stalled] == torch.arange(EPISODE)).all()
    # termination(s_hat) ends a rollout after the state it was predicted from
    ends = agent._anchored_rollouts(OracleModel(jump=1), data, rows, lambda s: s[:, 0] > 0.25 * 9.5)
    assert (steps[ends[:, :10]] == torch.arange(10)).all() and (ends[:, 10:] == -1).all()


def test_mbes_memory_spreads_over_whole_episodes():
    agent = learner("oer", n_tasks=1, mbes_max_states=500, mbes_model_epochs=5)
    data = trajectory_data(0)
    agent.begin_task(0, data)
    agent.end_task()
    kept = agent.memory.transitions()["obs"]
    kept_steps = torch.round(kept[:, 0] / 0.25)  # state 0 is 0.25 x the step
    assert len(kept) == 60 and kept_steps.max() >= EPISODE - 5
    assert 0.25 < (kept_steps >= EPISODE // 2).float().mean() < 0.75  # both halves of the episodes


def test_memory_stores_the_acting_policys_actions_as_cloning_targets():
    agent = learner("dbc", n_tasks=2)
    data = task_data(0)
    agent.begin_task(0, data)
    for _ in range(5):
        agent.update()
    agent.end_task()
    batch = agent._memory_batch(40)
    acting = torch.as_tensor(agent.act(batch["obs"].numpy(), task=np.zeros(40, dtype=np.int64)))
    torch.testing.assert_close(batch["policy_action"], acting)
    data_rows = torch.cdist(batch["obs"], data["obs"]).argmin(dim=1)
    torch.testing.assert_close(batch["action"], data["action"][data_rows])  # the data's own action beside it
    assert not torch.allclose(batch["policy_action"], batch["action"])


def test_clone_loss_is_dual_behaviour_clonings():
    agent = learner("dbc", n_tasks=2)
    run_tasks(agent, 1)
    agent.begin_task(1, task_data(1))
    new, old = agent._sample_tasks([agent.current], 32), agent._memory_batch(32)
    loss, metrics = agent.clone_loss(new, old)
    with torch.no_grad():
        pi = agent._act(agent.td3bc.actor, new["obs"], 1)
        new_loss = ((agent._act(agent.clone, new["obs"], 1) - pi) ** 2).mean()
        old_loss = ((agent._act(agent.clone, old["obs"], old["task_id"]) - old["policy_action"]) ** 2).mean()
    torch.testing.assert_close(loss.detach(), new_loss + old_loss)
    assert metrics["clone_new_loss"] == pytest.approx(new_loss.item())
    agent.td3bc.actor.zero_grad(set_to_none=True)
    agent.td3bc.critic.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in agent.td3bc.actor.parameters())  # cloning never pulls on the policy network
    assert all(p.grad is None for p in agent.td3bc.critic.parameters())


def test_clone_network_learns_the_new_tasks_policy_and_the_old_tasks_stored_actions():
    agent = learner("dbc", n_tasks=2, clone_lr=3e-3)
    run_tasks(agent, 1)
    agent.begin_task(1, task_data(1))
    for p in agent.clone.parameters():  # start the clone far from both targets
        torch.nn.init.normal_(p, std=0.5)
    memory = agent.memory.transitions()
    old_obs, old_task = memory["obs"], memory["task_id"].long()
    stored, data_action = memory["action"][:, ACT:], memory["action"][:, :ACT]
    new_obs = agent.current["obs"]

    def errors():
        with torch.no_grad():
            clone_old = agent._act(agent.clone, old_obs, old_task)
            clone_new = agent._act(agent.clone, new_obs, 1)
            return (((clone_new - agent._act(agent.td3bc.actor, new_obs, 1)) ** 2).mean().item(),
                    ((clone_old - stored) ** 2).mean().item(), ((clone_old - data_action) ** 2).mean().item())

    before = errors()
    for _ in range(150):
        agent.update()
    after = errors()
    assert after[0] < 0.5 * before[0]  # the policy network's actions on the new task's states
    assert after[1] < 0.5 * before[1]  # the stored policy actions on old tasks' memory states ...
    assert after[1] < 0.5 * after[2]  # ... not the data set's actions there


def test_td3bc_learns_from_the_current_task_only_and_the_clone_from_it_and_the_memory(monkeypatch):
    agent = learner("dbc", n_tasks=2)
    seen = batch_tasks(agent, monkeypatch)
    agent.begin_task(0, task_data(0))
    clone_before = [p.clone() for p in agent.clone.parameters()]
    metrics = agent.update()
    assert "clone_new_loss" in metrics and "clone_old_loss" not in metrics  # no memory yet: the new task only
    assert not all(torch.equal(a, b) for a, b in zip(clone_before, agent.clone.parameters(), strict=True))
    agent.end_task()
    agent.begin_task(1, task_data(1))
    grads_from = []
    memory_batch = agent._memory_batch
    monkeypatch.setattr(agent, "_memory_batch", lambda n: grads_from.append(memory_batch(n)) or grads_from[-1])
    metrics = agent.update()
    assert {"clone_new_loss", "clone_old_loss", "clone_loss"} <= set(metrics)
    assert (grads_from[0]["task_id"] == 0).all()  # the clone's memory batch: old tasks only
    assert all((tasks == t).all() for tasks, t in zip(seen, [0, 1], strict=True))  # TD3+BC: the current task only


def test_hand_over_keeps_the_agents_actions_on_finished_tasks():
    # fast learning rates, so the policy network moves far within a task and a hand-over could show
    agent = learner("oer", n_tasks=3, actor_lr=3e-3, clone_lr=3e-3)
    data = [task_data(t) for t in range(3)]
    range_ = 2.0  # the action space is [-1, 1]
    start = agent.act(data[0]["obs"].numpy(), task=np.zeros(200, dtype=np.int64))

    def acting(task):
        return agent.act(data[task]["obs"].numpy(), task=np.full(200, task))

    moved, jumps, drift = [], [], []
    for task in range(3):
        agent.begin_task(task, data[task])
        old = {t: acting(t) for t in range(task)}
        for _ in range(150):
            agent.update()
        drift += [np.abs(acting(t) - old[t]).mean() for t in range(task)]  # finished tasks while this one is learned
        before = acting(task)
        agent.end_task()
        jumps.append(np.abs(acting(task) - before).max())
        if task == 0:
            moved.append(np.abs(before - start).max())
    assert moved[0] > 0.25 * range_  # the policy network did move away from its start ...
    assert max(jumps) < 0.1 * range_  # ... and yet no task's actions jump at its hand-over
    assert max(drift) < 0.05 * range_  # and finished tasks stay put, on average, while later ones are learned


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


def test_finished_tasks_are_served_by_the_clone_network_and_the_current_one_by_the_policy_network():
    agent = learner("dbc", n_tasks=3)
    run_tasks(agent, 1)
    agent.begin_task(1, task_data(1))
    for _ in range(3):
        agent.update()
    obs = np.zeros((4, OBS), dtype=np.float32)
    plans = agent.act_sequence(obs, 3, np.array([0, 1, 1, 0]))
    assert plans.shape == (4, 3, ACT)
    clone = agent._act(agent.clone, torch.zeros(1, OBS), 0).numpy()
    rl = agent._act(agent.td3bc.actor, torch.zeros(1, OBS), 1).numpy()
    np.testing.assert_allclose(plans[0, 0], clone[0], rtol=1e-6)
    np.testing.assert_allclose(plans[1, 2], rl[0], rtol=1e-6)
    assert not np.allclose(clone, rl)
    assert agent.act_sequence(obs[0], 2).shape == (2, ACT)  # one state, the current task
    agent.end_task()  # the hand-over: the policy network restarts from the clone network
    for a, b in zip(agent.clone.parameters(), agent.td3bc.actor.parameters(), strict=True):
        assert torch.equal(a, b)


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
    for bad in ({"memory": 0}, {"memory_share": 1.0}, {"mbes_horizon": 0}, {"mbes_starts": 0}):
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
