"""Continual offline RL over a sequence of offline data sets (OER and its baselines), a loop that reads top to bottom.

For each task of the sequence, in order:

1. the learner begins the task with that task's data set (the only data it may read besides its own memory);
2. it takes ``steps_per_task`` gradient steps (:meth:`~cadence.agents.oer.ContinualOffline.update`);
3. every ``eval_every`` gradient steps, and at the task's end, the policy is evaluated on every task of the
   sequence in its true env (one batched ``task_returns`` call, ``eval_episodes`` each, the policy told each row's
   task); the rows fill a :class:`~cadence.evaluation.continual.ContinualEvaluation` (``continual_return``), and
   with reference returns also a normalised-score record (``continual_normalized_score``, 0 = random, 100 = the
   reference expert);
4. the learner ends the task: with dual behaviour cloning its clone network takes the task over, and it fills
   its memory (random or MBES selection).

No environment step ever reaches the learner: the envs exist only to score it. A checkpoint holds the learner (its
memory included), the counters and the records; the data sets are read again from their files on resume and must
be the same ones (their sizes and a content digest are checked).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadence.checkpoint import save_checkpoint
from cadence.config import check
from cadence.envs.batched.episodes import task_returns
from cadence.envs.tasks import resolve_sequence
from cadence.envs.terminations import TERMINATIONS, termination_fn
from cadence.evaluation.continual import ContinualEvaluation, log_continual_row
from cadence.logging import RunLogger
from cadence.loops.common import (
    PeriodicLog,
    TrainState,
    bundle,
    check_finite,
    interrupt_run,
    make_hooks,
    open_run,
    progress_bar,
    stop_signals,
)
from cadence.loops.continual import SequenceLoopConfig, finish_continual, physics_backend, physics_device
from cadence.loops.hooks import Hook, LoopContext
from cadence.replay.sequences import KINDS

Data = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ContinualOfflineTrainConfig(SequenceLoopConfig):
    """The continual offline loop (``[train]``); ``env`` and ``total_steps`` follow from the sequence."""

    total_steps: int = 0
    """Set from the sequence: steps_per_task x its number of tasks (gradient steps)."""
    sequence: str = "cheetah-vel-3"
    """Task sequence (cadence.envs.tasks.SEQUENCES) whose data sets the learner meets in order."""
    dataset_kind: str = "medium"
    """Which collected kind of every task's data set: medium or medium-replay (cadence collect --sequence)."""
    steps_per_task: int = 20_000
    """Gradient steps on each task."""
    eval_every: int = 0
    """Also evaluate every task this often inside a task, in gradient steps (0: at task ends only)."""
    checkpoint_every: int = 10_000

    def __post_init__(self) -> None:
        check(self.dataset_kind in KINDS, "dataset_kind", self.dataset_kind, "a kind cadence collect makes: "
              + ", ".join(KINDS))
        super().__post_init__()


def data_digest(data: Sequence[Data]) -> list[dict[str, Any]]:
    """Size and a content hash of every task's data: a resumed run must meet the same data sets."""
    out = []
    for part in data:
        h = hashlib.sha1()
        for key in ("obs", "action", "reward"):
            h.update(part[key].detach().cpu().contiguous().numpy().tobytes())
        out.append({"rows": int(part["obs"].shape[0]), "sha1": h.hexdigest()[:16]})
    return out


class DatasetSequence:
    """The sequence's data sets as the loop's "buffer": checkpointed as their digests, checked on resume."""

    def __init__(self, data: Sequence[Data], labels: Sequence[str]):
        self.data, self.labels = list(data), list(labels)
        self.digest = data_digest(self.data)

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "digest": self.digest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["labels"] != self.labels or state["digest"] != self.digest:
            raise ValueError(f"the checkpoint was trained on other data sets ({state['labels']}, {state['digest']}) "
                             f"than these ({self.labels}, {self.digest}); resume with the same data")


def check_sequence_data(data: Sequence[Data], labels: Sequence[str], obs_dim: int, act_dim: int) -> None:
    """``ValueError`` before any training when the data sets of one sequence disagree with the env's spaces (or
    each other), hold too few rows, or hold NaN/inf."""
    if len(data) != len(labels):
        raise ValueError(f"the sequence has {len(labels)} tasks ({', '.join(labels)}) but {len(data)} data sets")
    for label, part in zip(labels, data, strict=True):
        shapes = {"obs": (obs_dim,), "next_obs": (obs_dim,), "action": (act_dim,)}
        for key, want in shapes.items():
            got = tuple(part[key].shape[1:])
            if got != want:
                raise ValueError(f"data set of task {label}: {key} has shape {got}, the env's is {want}; every data "
                                 "set of a sequence must come from the sequence's env")
        for key, value in part.items():
            if value.dtype.is_floating_point and not torch.isfinite(value).all():
                raise ValueError(f"data set of task {label}: {key} holds NaN or inf")
        if part["obs"].shape[0] < 2:
            raise ValueError(f"data set of task {label} holds {part['obs'].shape[0]} transitions; it needs at least 2")


def train_continual_offline(
    learner: Any,
    data: Sequence[Data],
    config: ContinualOfflineTrainConfig,
    run_dir: str | Path,
    *,
    reference: Sequence[tuple[float, float]] | None = None,
    resume: bool = False,
    hooks: Iterable[Hook] = (),
    callbacks: Iterable[Callable[[TrainState], None]] = (),
) -> TrainState:
    """Learn ``config.sequence`` from ``data`` (one data set per task, in order) with ``learner`` (a
    :class:`cadence.agents.oer.ContinualOffline`); ``reference`` gives each task's (random, expert) return for the
    normalised-score record. See the module docstring."""
    run_dir = Path(run_dir)
    family, sequence = resolve_sequence(config.sequence)
    labels, params = [label for label, _ in sequence], [p for _, p in sequence]
    n_tasks = len(sequence)
    check_sequence_data(data, labels, learner.obs_dim, learner.act_dim)
    if reference is not None and len(reference) != n_tasks:
        raise ValueError(f"reference needs one (random, expert) pair per task ({n_tasks}), got {len(reference)}")
    datasets = DatasetSequence(data, labels)
    returns = ContinualEvaluation(labels, metric_name="return", higher_is_better=True)
    scores = ContinualEvaluation(labels, metric_name="normalized_score", higher_is_better=True)
    position = {"task": 0, "task_step": 0, "started": False}
    ctx = LoopContext(learner, None, None, datasets, None, TrainState(), config, run_dir,  # type: ignore[arg-type]
                      extras={"returns": returns, "position": position})
    run_hooks = make_hooks(config, hooks, callbacks)
    restored = open_run(ctx, run_hooks, resume, required=("continual",))
    if restored is not None:
        own = restored["continual"]
        position.update(own["position"])
        returns = ContinualEvaluation.from_dict(own["returns"])
        scores = ContinualEvaluation.from_dict(own["scores"])
        if position["started"]:  # the task in progress: give the learner its data again
            learner.current = {k: v.to(learner.device) for k, v in data[position["task"]].items()}
    ctx.logger = RunLogger(run_dir, resume_step=ctx.state.step if resume else None, write_layout=not resume)
    state = ctx.state
    (run_hooks.resume if restored is not None else run_hooks.run_start)(ctx)
    backend = physics_backend(family.name, config.backend)
    termination = termination_fn(family.name) if family.base_env in TERMINATIONS else None  # for MBES's rollouts

    def bundle_now() -> dict[str, Any]:
        return bundle(ctx, run_hooks, continual={"position": dict(position), "returns": returns.to_dict(),
                                                 "scores": scores.to_dict()})

    def evaluate(final: bool) -> None:
        """One row: every task of the sequence (learned or not), in one batched call, each row told its task."""
        task = position["task"]
        row = task_returns(family.name, learner.act_sequence, params, config.eval_episodes,
                           seed=config.seed + 10_000, task_aware=True, backend=backend, batch_policy=True,
                           physics_device=physics_device(backend, config.device),
                           max_episode_steps=config.episode_steps or None).mean(axis=1)
        returns.add_row(task, row, state.step, final)
        log_continual_row(ctx.logger, state.step, returns, row)
        if reference is not None:
            score = np.array([100 * (r - lo) / (hi - lo) for r, (lo, hi) in zip(row, reference, strict=True)])
            scores.add_row(task, score, state.step, final)
            log_continual_row(ctx.logger, state.step, scores, score)
        learned = float(np.mean(row[: task + 1]))
        state.evals.append((state.step, learned))
        state.last_evaluation = {"eval/return": learned}
        ctx.logger.scalars(state.last_evaluation, state.step)
        run_hooks.eval(ctx, learned)

    metrics: dict[str, float] = {}
    with stop_signals() as caught, progress_bar(config.progress) as progress:
        log = PeriodicLog(ctx.logger, progress, learner.algo.upper(), config, state)
        while position["task"] < n_tasks:
            task = position["task"]
            if not position["started"]:
                learner.begin_task(task, data[task])
                position.update(started=True, task_step=0)
            while position["task_step"] < config.steps_per_task:
                metrics = learner.update()
                position["task_step"] += 1
                state.step += 1
                if state.step % config.log_every == 0:
                    check_finite(metrics, state, run_dir)
                log(state, {**metrics, "continual/task": float(task)})
                if config.eval_every and state.step >= state.next_eval:
                    state.next_eval += config.eval_every
                    if position["task_step"] < config.steps_per_task:  # the task's end evaluates anyway
                        evaluate(final=False)
                if state.step >= state.next_checkpoint:
                    state.next_checkpoint = state.step + config.checkpoint_every
                    save_checkpoint(run_dir, bundle_now())
                run_hooks.step(ctx)
                if ctx.stop or caught:
                    break
            if ctx.stop or caught:
                break
            evaluate(final=True)
            learner.end_task(termination)
            progress.console.print(f"task {task + 1}/{n_tasks} ({labels[task]}) done at step {state.step:,}: "
                                   f"return per task {np.round(returns.matrix[task], 1).tolist()}")
            position.update(task=task + 1, started=False)
    if caught:
        interrupt_run(ctx, bundle_now, caught["signal"])
    if not state.evals or state.evals[-1][0] != state.step:  # stopped early by a hook: a last in-task row
        evaluate(final=False)
    finish_continual(ctx, bundle_now, [returns, scores] if reference is not None else [returns],
                     complete=position["task"] == n_tasks)
    return state
