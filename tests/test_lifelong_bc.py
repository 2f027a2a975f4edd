"""Lifelong behaviour cloning (LIBERO's SeqL, ER, EWC, multitask) on tiny synthetic tasks, the lifelong loop's
success matrix with a stand-in env, and the demonstration file's checks."""

import numpy as np
import pytest
import torch

from cadence.agents.lifelong_bc import LifelongBC, LifelongBCConfig
from cadence.evaluation.continual import libero_nbt, summary
from cadence.loops import lifelong_imitation
from cadence.loops.lifelong_imitation import LifelongImitationConfig, train_lifelong_imitation
from cadence.replay.datasets import OfflineDataset

OBS, ACT = 4, 2
SMALL = LifelongBCConfig(hidden_sizes=(32, 32), lr=3e-3, batch_size=64, memory=200, ewc_lambda=1e4,
                         fisher_samples=100)


def task_data(task: int, n: int = 300) -> dict[str, torch.Tensor]:
    """Task t: the expert's action is a fixed, task-specific linear map of the state (in the action box)."""
    g = torch.Generator().manual_seed(task)
    obs = torch.randn(n, OBS, generator=g)
    weights = torch.randn(OBS, ACT, generator=torch.Generator().manual_seed(100 + task)) * 0.5
    return {"obs": obs, "action": torch.tanh(obs @ weights), "reward": torch.zeros(n), "next_obs": obs,
            "terminated": torch.zeros(n)}


def error(learner: LifelongBC, data, slot: int) -> float:
    return float(((torch.as_tensor(learner.act(data["obs"].numpy(), slot)) - data["action"]) ** 2).mean())


def learn(strategy: str, steps: int = 400) -> tuple[LifelongBC, list]:
    tasks = [task_data(0), task_data(1)]
    learner = LifelongBC(OBS, ACT, 2, strategy, SMALL, seed=0)
    for i, data in enumerate(tasks):
        learner.begin_task(i, data)
        learner.train(steps)
        learner.end_task()
    return learner, tasks


def test_cloning_learns_a_task():
    learner = LifelongBC(OBS, ACT, 1, "seql", SMALL, seed=0)
    data = task_data(0)
    learner.begin_task(0, data)
    before = error(learner, data, 0)
    learner.train(400)
    assert error(learner, data, 0) < 0.1 * before


def test_er_memory_keeps_its_quota_and_multitask_sees_everything():
    learner, _ = learn("er", steps=50)
    assert len(learner.memory) == SMALL.memory and learner.memory.task_counts() == {0: 100, 1: 100}
    multi, _ = learn("multitask", steps=10)
    assert len(multi.seen) == 2 and sum(d["obs"].shape[0] for d in multi.seen) == 600


def test_replay_and_ewc_forget_less_than_finetuning():
    # the task id is an input, so forgetting comes from shared weights drifting towards task 1
    forgetting = {s: error(learn(s)[0], task_data(0), 0) for s in ("seql", "er", "ewc", "multitask")}
    assert forgetting["er"] < forgetting["seql"] and forgetting["multitask"] < forgetting["seql"]
    assert forgetting["ewc"] < 0.8 * forgetting["seql"]


def test_bad_input():
    with pytest.raises(ValueError, match="unknown lifelong strategy 'replay'; valid: seql, er, ewc, multitask"):
        LifelongBC(OBS, ACT, 2, "replay")
    learner = LifelongBC(OBS, ACT, 2, "seql", SMALL)
    with pytest.raises(ValueError, match="4-D states and 2-D actions"):
        learner.begin_task(0, {**task_data(0), "obs": torch.zeros(10, 5)})
    bad = task_data(0)
    bad["action"][3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf in 'action'"):
        learner.begin_task(0, bad)
    with pytest.raises(RuntimeError, match="begin_task"):
        learner.train(1)
    from cadence.config import ConfigError

    with pytest.raises(ConfigError, match="memory"):
        LifelongBCConfig(memory=0)


class StandInEnv:
    """A LiberoEnv stand-in: task t is solved iff the action's first value is within 0.25 of t/4."""

    def __init__(self, suite, task):
        self.task = task

    def reset(self, options):
        self.task = options["task"]
        return np.full(OBS, self.task, np.float32), {}

    def step(self, action):
        solved = abs(float(action[0]) - self.task / 4) < 0.25
        return np.full(OBS, self.task, np.float32), float(solved), solved, not solved, {}

    def close(self):
        """The stand-in holds no simulator, so there is nothing to release."""


def stand_in_demos(n_tasks: int) -> OfflineDataset:
    obs = np.repeat(np.arange(n_tasks, dtype=np.float32), 50)[:, None].repeat(OBS, 1)
    actions = np.stack([obs[:, 0] / 4, np.zeros(len(obs))], 1).astype(np.float32)
    n = len(obs)
    return OfflineDataset(obs, actions, np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool),
                          next_observations=obs, task_ids=np.repeat(np.arange(n_tasks), 50))


def test_the_loop_fills_the_lower_triangle_and_gives_libero_metrics(monkeypatch, tmp_path):
    monkeypatch.setattr(lifelong_imitation, "LiberoEnv", StandInEnv)
    learner = LifelongBC(OBS, ACT, 3, "multitask", SMALL, seed=0)
    config = LifelongImitationConfig(steps_per_task=300, eval_inits=(0, 1), mid_task_evals=1)
    record = train_lifelong_imitation(learner, stand_in_demos(3), "object", [0, 1, 2], config, run_dir=tmp_path)
    c = record.matrix
    assert np.isnan(c[np.triu_indices(3, 1)]).all() and not np.isnan(c[np.tril_indices(3)]).any()
    assert (c[np.tril_indices(3)] == 1.0).all()  # multitask keeps every task
    assert len(record.history) == 6 and sum(r.final for r in record.history) == 3
    metrics = summary(record)
    assert metrics["libero_nbt"] == pytest.approx(libero_nbt(c)) == 0.0
    assert (tmp_path / "continual_success.json").is_file() and (tmp_path / "continual_success.png").is_file()
