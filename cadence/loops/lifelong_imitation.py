"""Lifelong imitation over a LIBERO suite: clone each task's demonstrations in turn, measure every learned task's
success in the simulator after each, and report LIBERO's FWT, NBT and AUC from the success record.

LIBERO (Liu et al., arXiv 2306.03310, section 5; its ``Sequential.learn_one_task``): while task k trains, its success
c_{k,k,e} is measured at checkpoints e (epoch 0, before any training, then every 5 of 50 epochs); training is taken
to stop at the first checkpoint with the best success, whose policy is restored at the task's end, so
c_{k,k} = max_e c_{k,k,e} and every later c_{tau,k} measures a restored policy. FWT_k averages c_{k,k,e} over the
checkpoints, each one from the best on counted as the best (:func:`~cadence.evaluation.continual.hold_best`).

Here the checkpoints are the task's start (``eval_at_start``), ``mid_task_evals`` evenly spaced points inside and
its end. The record gets a periodic row for each checkpoint but the last, then the task-end row: the kept
checkpoint's success on task k (the best with ``restore_best``; measured already, as evaluation is deterministic:
fixed init states, a deterministic policy) and every earlier task's success under the kept policy. Its in-task
curve is thus c_{k,k,0..E-1} then the kept value, whose hold-best mean equals LIBERO's FWT_k (when the best comes
before the last checkpoint, hold-best replaces the last one's value by the best anyway). The raw curves, last
checkpoint included, go to the record file's ``checkpoints``. ``c[i, j]`` is measured for j <= i (the lower
triangle, all LIBERO's metrics read), on init states the demonstrations did not use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadence.agents.lifelong_bc import LifelongBC
from cadence.envs.libero import LiberoEnv
from cadence.evaluation.continual import ContinualEvaluation
from cadence.replay.datasets import OfflineDataset


@dataclass(frozen=True)
class LifelongImitationConfig:
    """How a lifelong imitation run trains and evaluates."""

    steps_per_task: int = 2000
    """Gradient steps on each task."""
    eval_inits: tuple[int, ...] = (45, 46, 47, 48, 49)
    """Init states every success rate is measured on (held out from the demonstrations' 0..k)."""
    mid_task_evals: int = 4
    """Checkpoints of the current task evenly spaced inside its training (LIBERO: 9, every 5 of 50 epochs). 4, six
    checkpoints a task with the start and end, about doubles a 10-task run's simulator time against task-end rows
    alone."""
    eval_at_start: bool = True
    """Also a checkpoint before the task's first step (LIBERO's epoch 0: zero-shot transfer counts in FWT)."""
    restore_best: bool = True
    """End each task with its best checkpoint (the first, on ties), as LIBERO does; False keeps the last."""

    def __post_init__(self) -> None:
        if self.steps_per_task < 1 or not self.eval_inits or self.mid_task_evals < 0:
            raise ValueError(f"steps_per_task >= 1, eval_inits non-empty and mid_task_evals >= 0 required; got "
                             f"{self.steps_per_task}, {self.eval_inits}, {self.mid_task_evals}")
        if self.steps_per_task < self.mid_task_evals + 1:
            raise ValueError(f"{self.mid_task_evals} mid-task evaluations need at least {self.mid_task_evals + 1} "
                             f"steps per task, got {self.steps_per_task}")


@dataclass
class TaskCheckpoints:
    """Task ``task``'s success at each checkpoint while it trained (LIBERO's c_{k,k,e}) and the one kept."""

    task: str
    steps: list[int]
    success: list[float]
    best: int
    """The first checkpoint with the highest success."""
    kept: int
    """The checkpoint whose policy the task ended with: ``best`` with ``restore_best``, else the last."""
    restored: bool
    """Whether the policy was set back to an earlier checkpoint at the task's end."""


def task_tensors(data: OfflineDataset, task: int) -> dict[str, torch.Tensor]:
    """One task's transitions as the learner's tensors (``obs``, ``action``, ``reward``, ``next_obs``,
    ``terminated``)."""
    part = data.task(task)
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return {"obs": as_t(part.observations), "action": as_t(part.actions), "reward": as_t(part.rewards),
            "next_obs": as_t(part.next_obs()), "terminated": as_t(part.terminals)}


def success_rate(env: LiberoEnv, act: Callable[[np.ndarray], np.ndarray], task: int, inits: Sequence[int]) -> float:
    """The share of episodes of ``task`` from ``inits`` that ``act`` solves within the suite's step cap."""
    wins = 0
    for init in inits:
        obs, _ = env.reset(options={"task": task, "init_state": int(init)})
        while True:
            obs, _, terminated, truncated, _ = env.step(act(obs))
            if terminated or truncated:
                wins += int(terminated)
                break
    return wins / len(inits)


class _Checkpoints:
    """Evaluates the current task at each checkpoint, keeping a snapshot of the first best one."""

    def __init__(self, learner: LifelongBC, env: LiberoEnv, slot: int, task: int, config: LifelongImitationConfig):
        self.learner, self.env, self.slot, self.task, self.config = learner, env, slot, task, config
        self.steps: list[int] = []
        self.success: list[float] = []
        self.best = -1
        self.snapshot: Any = None

    def evaluate(self, step: int) -> float:
        value = success_rate(self.env, lambda o: self.learner.act(o, self.slot), self.task, self.config.eval_inits)
        self.steps.append(step)
        self.success.append(value)
        if self.best < 0 or value > self.success[self.best]:  # strictly better: the first best is kept, as LIBERO
            self.best = len(self.success) - 1
            if self.config.restore_best:
                self.snapshot = self.learner.snapshot()
        return value

    def finish(self, label: str) -> tuple[float, TaskCheckpoints]:
        """Restore the best checkpoint if asked; the kept checkpoint's success and the task's curve."""
        last = len(self.success) - 1
        kept = self.best if self.config.restore_best else last
        if kept != last:
            self.learner.restore(self.snapshot)
        return self.success[kept], TaskCheckpoints(label, self.steps, self.success, self.best, kept, kept != last)


def _one_value(n: int, index: int, value: float) -> np.ndarray:
    row = np.full(n, np.nan)
    row[index] = value
    return row


def train_lifelong_imitation(learner: LifelongBC, data: OfflineDataset, suite: str, tasks: Sequence[int],
                             config: LifelongImitationConfig, run_dir: Path | None = None,
                             progress: Callable[[str], None] | None = None) -> ContinualEvaluation:
    """Learn ``tasks`` of ``suite`` in order from ``data`` (demonstrations with task ids); returns the success
    record (matrix and in-task rows; :func:`~cadence.evaluation.continual.summary` gives LIBERO's metrics), also
    written to ``run_dir/continual_success.json`` with its heatmap and every task's checkpoints (``checkpoints``)
    when ``run_dir`` is given. See the module docstring for the checkpoints and the restored policy."""
    tasks = list(tasks)
    if learner.n_tasks != len(tasks):
        raise ValueError(f"the learner has {learner.n_tasks} task slots for {len(tasks)} tasks")
    record = ContinualEvaluation(tasks=[f"{suite}/{t}" for t in tasks], metric_name="success")
    say = progress or (lambda line: None)
    checkpoints: list[TaskCheckpoints] = []
    env = LiberoEnv(suite, tasks[0])
    n, step = len(tasks), 0
    try:
        for i, task in enumerate(tasks):
            learner.begin_task(i, task_tensors(data, task))
            current = _Checkpoints(learner, env, i, task, config)
            if config.eval_at_start:
                record.add_row(i, _one_value(n, i, current.evaluate(step)), step=step)
                say(f"task {i + 1}/{n} step {step}: success {current.success[-1]:.2f} (before training)")
            chunks = np.array_split(np.arange(config.steps_per_task), config.mid_task_evals + 1)
            for c, chunk in enumerate(chunks):
                learner.train(len(chunk))
                step += len(chunk)
                value = current.evaluate(step)
                if c < len(chunks) - 1:  # the last checkpoint's value enters the task-end row (if kept)
                    record.add_row(i, _one_value(n, i, value), step=step)
                    say(f"task {i + 1}/{n} step {step}: success {value:.2f}")
            kept, curve = current.finish(record.tasks[i])
            checkpoints.append(curve)
            row = _one_value(n, i, kept)
            for j in range(i):  # earlier tasks under the kept policy
                row[j] = success_rate(env, lambda o, j=j: learner.act(o, j), tasks[j], config.eval_inits)
            record.add_row(i, row, step=step, final=True)
            say(f"task {i + 1}/{n} step {step}: kept checkpoint {curve.kept}/{len(curve.success) - 1}"
                f"{' (restored)' if curve.restored else ''}; success " + " ".join(f"{v:.2f}" for v in row[: i + 1]))
            learner.end_task()  # after the restore: EWC's Fisher is the kept policy's, as in LIBERO
    finally:
        env.close()
    if run_dir is not None:
        from cadence.loops.continual import write_records

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_records(Path(run_dir), record, extras={"success": {"checkpoints": [asdict(c) for c in checkpoints]}})
    return record
