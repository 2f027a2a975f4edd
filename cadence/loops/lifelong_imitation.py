"""Lifelong imitation over a LIBERO suite: clone each task's demonstrations in turn, measure every learned task's
success in the simulator after each, and report LIBERO's FWT, NBT and AUC from the success matrix.

``c[i, j]`` is the success rate on task j after learning task i, measured for j <= i (the lower triangle is all
LIBERO's metrics read; DESIGN.md section 3, "LIBERO"), on init states the demonstrations did not use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    mid_task_evals: int = 1
    """Extra evaluations of the current task while it is learned (LIBERO's FWT averages them with its end)."""

    def __post_init__(self) -> None:
        if self.steps_per_task < 1 or not self.eval_inits or self.mid_task_evals < 0:
            raise ValueError(f"steps_per_task >= 1, eval_inits non-empty and mid_task_evals >= 0 required; got "
                             f"{self.steps_per_task}, {self.eval_inits}, {self.mid_task_evals}")


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


def train_lifelong_imitation(learner: LifelongBC, data: OfflineDataset, suite: str, tasks: Sequence[int],
                             config: LifelongImitationConfig, run_dir: Path | None = None,
                             progress: Callable[[str], None] | None = None) -> ContinualEvaluation:
    """Learn ``tasks`` of ``suite`` in order from ``data`` (demonstrations with task ids); returns the success
    record (matrix and mid-task rows; :func:`~cadence.evaluation.continual.summary` gives LIBERO's metrics), also
    written to ``run_dir/continual_success.json`` with its heatmap when ``run_dir`` is given."""
    tasks = list(tasks)
    if learner.n_tasks != len(tasks):
        raise ValueError(f"the learner has {learner.n_tasks} task slots for {len(tasks)} tasks")
    record = ContinualEvaluation(tasks=[f"{suite}/{t}" for t in tasks], metric_name="success")
    env = LiberoEnv(suite, tasks[0])
    step = 0
    try:
        for i, task in enumerate(tasks):
            learner.begin_task(i, task_tensors(data, task))
            chunks = np.array_split(np.arange(config.steps_per_task), config.mid_task_evals + 1)
            for c, chunk in enumerate(chunks):
                learner.train(len(chunk))
                step += len(chunk)
                last = c == len(chunks) - 1
                evaluated = range(i + 1) if last else [i]
                row = np.full(len(tasks), np.nan)
                for j in evaluated:
                    row[j] = success_rate(env, lambda o, j=j: learner.act(o, j), tasks[j], config.eval_inits)
                record.add_row(i, row, step=step, final=last)
                if progress is not None:
                    progress(f"task {i + 1}/{len(tasks)} step {step}: success " +
                             " ".join(f"{v:.2f}" for v in row[: i + 1] if not np.isnan(v)))
            learner.end_task()
    finally:
        env.close()
    if run_dir is not None:
        from cadence.loops.continual import write_records

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_records(Path(run_dir), record)
    return record
