"""Lifelong behaviour cloning (LIBERO's SeqL, ER, EWC, multitask) on tiny synthetic tasks, the lifelong loop's
success matrix with a stand-in env, and the demonstration file's checks."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from cadence.agents.lifelong_bc import LIBERO_EWC_LAMBDA, LifelongBC, LifelongBCConfig
from cadence.evaluation.continual import libero_nbt, summary, task_curve
from cadence.io import read_json
from cadence.loops import lifelong_imitation
from cadence.loops.lifelong_imitation import LifelongImitationConfig, train_lifelong_imitation
from cadence.replay.datasets import OfflineDataset

OBS, ACT = 4, 2
SMALL = LifelongBCConfig(hidden_sizes=(32, 32), lr=3e-3, batch_size=64, memory=200)
#: on these tiny tasks the Fisher is far smaller than on LIBERO's, so EWC is tested at LIBERO's lambda
STIFF = replace(SMALL, ewc_lambda=LIBERO_EWC_LAMBDA)


def task_data(task: int, n: int = 300) -> dict[str, torch.Tensor]:
    """Task t: the expert's action is a fixed, task-specific linear map of the state (in the action box)."""
    g = torch.Generator().manual_seed(task)
    obs = torch.randn(n, OBS, generator=g)
    weights = torch.randn(OBS, ACT, generator=torch.Generator().manual_seed(100 + task)) * 0.5
    return {"obs": obs, "action": torch.tanh(obs @ weights), "reward": torch.zeros(n), "next_obs": obs,
            "terminated": torch.zeros(n)}


def error(learner: LifelongBC, data, slot: int) -> float:
    return float(((torch.as_tensor(learner.act(data["obs"].numpy(), slot)) - data["action"]) ** 2).mean())


def learn(strategy: str, steps: int = 400, config: LifelongBCConfig | None = None) -> tuple[LifelongBC, list]:
    tasks = [task_data(0), task_data(1)]
    config = config or (STIFF if strategy == "ewc" else SMALL)
    learner = LifelongBC(OBS, ACT, 2, strategy, config, seed=0)
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


def test_ewc_still_learns_each_new_task():
    # EWC (LIBERO's batch Fisher and decay) holds the old task without stopping the new one being learned
    new_task = {s: error(learn(s)[0], task_data(1), 1) for s in ("seql", "ewc")}
    assert new_task["ewc"] < 2 * new_task["seql"] + 0.01


def test_ewc_lambda_trades_the_new_task_for_the_old():
    # the trade the LIBERO benchmark measured: a stiffer penalty keeps task 0 better and learns task 1 worse
    runs = {lam: learn("ewc", config=replace(SMALL, ewc_lambda=lam))[0] for lam in (1e2, 1e4, 1e6)}
    old = [error(runs[lam], task_data(0), 0) for lam in sorted(runs)]
    new = [error(runs[lam], task_data(1), 1) for lam in sorted(runs)]
    assert old[0] > old[1] > old[2] and new[0] < new[1] < new[2], (old, new)


def test_the_batch_fisher_is_one_pass_of_batch_mean_gradients_squared():
    config = LifelongBCConfig(hidden_sizes=(8,), batch_size=16, fisher_batch_size=100, ewc_decay=1.0)
    learner = LifelongBC(OBS, ACT, 1, "ewc", config, seed=0)
    data = task_data(0)
    learner.begin_task(0, data)
    learner.end_task()
    params = list(learner.policy.parameters())
    expected = [torch.zeros_like(p) for p in params]
    order = torch.randperm(300, generator=torch.Generator().manual_seed(0))  # the learner's generator's first draw
    for rows in order.split(100):
        batch = {"obs": data["obs"][rows], "action": data["action"][rows],
                 "task_id": torch.zeros(100, dtype=torch.long)}
        for e, g in zip(expected, torch.autograd.grad(learner.loss(batch)[0], params)):
            e += g**2 / 3
    for e, f in zip(expected, learner.ewc.fisher.values()):
        torch.testing.assert_close(f, e)
    assert learner.ewc.lam == 2 * config.ewc_lambda  # LIBERO's lambda * sum F d^2, without the 1/2


def test_snapshot_and_restore_go_back_exactly():
    learner = LifelongBC(OBS, ACT, 1, "seql", SMALL, seed=0)
    data = task_data(0)
    obs = data["obs"].numpy()
    learner.begin_task(0, data)
    learner.train(20)
    saved, before = learner.snapshot(), learner.act(obs, 0)
    learner.train(50)
    assert not np.allclose(learner.act(obs, 0), before)
    learner.restore(saved)
    np.testing.assert_array_equal(learner.act(obs, 0), before)
    # the optimizer's state is back too: the same batches from the snapshot give the same policy, twice
    batches = learner.generator.get_state()
    learner.train(10)
    once = learner.act(obs, 0)
    learner.restore(saved)
    learner.generator.set_state(batches)
    learner.train(10)
    np.testing.assert_array_equal(learner.act(obs, 0), once)


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
    with pytest.raises(ConfigError, match="fisher"):
        LifelongBCConfig(fisher="full")
    with pytest.raises(ConfigError, match="ewc_decay"):
        LifelongBCConfig(ewc_decay=0.0)


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
    # per task: a checkpoint before training, one inside, then the task-end row
    assert len(record.history) == 9 and sum(r.final for r in record.history) == 3
    metrics = summary(record)
    assert metrics["libero_nbt"] == pytest.approx(libero_nbt(c)) == 0.0
    assert (tmp_path / "continual_success.json").is_file() and (tmp_path / "continual_success.png").is_file()


class ScriptedLearner:
    """A stand-in learner whose action is one scripted value, the next one after each ``train`` call; on the stand-in
    env value v solves task t iff |v - t/4| < 0.25, so 0.0 solves task 0 only, 0.25 task 1 only, 9.0 nothing."""

    def __init__(self, values: list[list[float]]):
        self.n_tasks, self.values, self.value, self.task = len(values), [list(v) for v in values], 9.0, -1
        self.restored: list[tuple[int, float]] = []

    def begin_task(self, task, data):
        self.task = task

    def train(self, steps):
        self.value = self.values[self.task].pop(0)

    def act(self, obs, task):
        return np.array([self.value, 0.0])

    def snapshot(self):
        return self.value

    def restore(self, snapshot):
        self.value = snapshot
        self.restored.append((self.task, snapshot))

    def end_task(self):
        """Nothing to consolidate."""


def run_scripted(monkeypatch, tmp_path, restore_best: bool):
    monkeypatch.setattr(lifelong_imitation, "LiberoEnv", StandInEnv)
    # checkpoints: before training, after 1/3, 2/3 and all of the steps; task 0 peaks at the first inside one and
    # loses it, task 1 peaks there, loses it and gets it back at the end (a tie: the first best is kept)
    learner = ScriptedLearner([[0.0, 9.0, 9.0], [0.25, 9.0, 0.25]])
    config = LifelongImitationConfig(steps_per_task=3, eval_inits=(0,), mid_task_evals=2, restore_best=restore_best)
    record = train_lifelong_imitation(learner, stand_in_demos(2), "object", [0, 1], config, run_dir=tmp_path)
    return learner, record, read_json(tmp_path / "continual_success.json")["checkpoints"]


def test_the_best_checkpoint_is_restored_at_each_task_end(monkeypatch, tmp_path):
    learner, record, checkpoints = run_scripted(monkeypatch, tmp_path, restore_best=True)
    assert [c["success"] for c in checkpoints] == [[0, 1, 0, 0], [0, 1, 0, 1]]
    assert [(c["best"], c["kept"], c["restored"]) for c in checkpoints] == [(1, 1, True), (1, 1, True)]
    assert learner.restored == [(0, 0.0), (1, 0.25)]
    # c_{k,k} is the best checkpoint's success; task 1 starts from (and task 0 is later measured with) the restored
    # policies: 0.0 fails task 1 before training, 0.25 fails task 0
    np.testing.assert_array_equal(record.matrix, [[1, np.nan], [0, 1]])
    assert task_curve(record, 0)[0].tolist() == [0, 1, 2, 3]  # steps of the checkpoints, the last the task end
    assert task_curve(record, 0)[1].tolist() == [0, 1, 0, 1]  # the last checkpoint's 0 is replaced by the kept 1
    metrics = summary(record)
    # LIBERO: FWT_k = mean of the checkpoints after hold-best = (0 + 1 + 1 + 1) / 4 for both tasks
    assert metrics["libero_fwt"] == pytest.approx(0.75)
    assert metrics["libero_nbt"] == pytest.approx(1.0)  # c_00 - c_10
    assert metrics["libero_auc"] == pytest.approx(((0.75 + 0) / 2 + 0.75) / 2)


def test_without_restore_the_last_checkpoint_is_kept(monkeypatch, tmp_path):
    learner, record, checkpoints = run_scripted(monkeypatch, tmp_path, restore_best=False)
    assert learner.restored == [] and [(c["best"], c["kept"], c["restored"]) for c in checkpoints] == [
        (1, 3, False), (1, 3, False)]
    np.testing.assert_array_equal(record.matrix, [[0, np.nan], [0, 1]])  # task 0 ended on the failing 9.0
    assert summary(record)["libero_fwt"] == pytest.approx(0.75)  # the metric's hold-best rule is the same


def test_the_config_needs_a_step_per_checkpoint():
    with pytest.raises(ValueError, match="4 mid-task evaluations need at least 5 steps per task, got 3"):
        LifelongImitationConfig(steps_per_task=3)
