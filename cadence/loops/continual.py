"""Continual model-based training over a task sequence (HyperCRL and its baselines), a loop that reads top to bottom.

For each task of the sequence, in order:

1. the learner starts the task (HyperCRL adds the task's embedding and snapshots its outputs for earlier tasks);
2. ``worlds`` copies of the task's env collect ``steps_per_task`` primitive steps: uniform random actions for the
   first ``random_steps``, then CEM-MPC through the model; each world decides every step (MPC replans);
3. every ``train_every`` steps the model takes ``model_steps`` updates on what its strategy may see;
4. at the task's start (zero-shot, before any update on it), every ``eval_every`` steps, and at the task's end,
   every task learned so far is evaluated in one batched call (``eval_episodes`` episodes each, planned with that
   task's model), and the model's prediction error is measured on every learned task's held-out transitions; the
   rows fill four :class:`~cadence.evaluation.continual.ContinualEvaluation` records: ``continual_return``,
   ``continual_state_error`` and ``continual_reward_error`` (per column normalised by the first task's held-out
   std, :mod:`cadence.evaluation.model_error`) and ``continual_model_error`` (the raw MSE of ``(s', r)``);
5. the learner closes the task (EWC/SI consolidate, coreset rows are kept).

Before the first task the sequence's task gap is measured (:mod:`cadence.envs.task_gap`); once the first task is
learned, a gap below ten times that task's state error is reported as a sequence that cannot show forgetting.
The error records' files also hold the no-change predictor's errors (``s' = s``, ``r = 0``), the floor a model must
beat.

Held-out transitions come from a uniform random policy in every task, collected before the first task with their
own seeds, so all strategies are scored on the same data. A checkpoint holds the learner, every task's data,
the worlds' physics and both records, so a run killed mid-task resumes at the same task and step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape

from cadence.checkpoint import save_checkpoint
from cadence.config import check, check_positive
from cadence.envs.batched import BACKENDS, BatchedEnv
from cadence.envs.batched.episodes import task_returns
from cadence.envs.rewards import supports
from cadence.envs.task_gap import gap_warning, task_gap
from cadence.envs.tasks import resolve_sequence
from cadence.evaluation.continual import ContinualEvaluation, log_continual_row, log_continual_summary, summary
from cadence.evaluation.model_error import no_change_errors, transition_scale
from cadence.evaluation.plots import plot_continual_curves, plot_continual_heatmap
from cadence.io import atomic_write_json
from cadence.logging import RunLogger
from cadence.loops.common import (
    LoopConfig,
    PeriodicLog,
    TrainState,
    bundle,
    check_finite,
    finish_run,
    interrupt_run,
    make_hooks,
    open_run,
    progress_bar,
    stop_signals,
)
from cadence.loops.hooks import Hook, LoopContext
from cadence.replay import ReplayBuffer

Data = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SequenceLoopConfig(LoopConfig):
    """What the loops over a task sequence share (``[train]``); ``env`` and ``total_steps`` follow from it."""

    env: str = ""
    """Set from ``sequence``: the task family's id."""
    total_steps: int = 0
    """Set from the sequence: steps_per_task x its number of tasks."""
    sequence: str = "HalfCheetahBody"
    """Task sequence (cadence.envs.tasks.SEQUENCES): a family's name for its default sequence, or e.g. cheetah-vel-3."""
    steps_per_task: int = 5_000
    """Steps spent on each task."""
    episode_steps: int = 0
    """Episode length in evaluation (0: the env's own limit, 1000 for Half-Cheetah)."""
    eval_every: int = 0
    """Also evaluate every task this often inside a task, in steps (0: at task ends only)."""
    eval_episodes: int = 5
    """Episodes per task and evaluation."""
    backend: str = ""
    """Physics of the batched worlds (collection, evaluation): empty picks rollout (gymnasium where the env has no
    torch physics: PusherObject); warp runs MuJoCo Warp on train.device (a CUDA GPU or Warp's CPU device; the gpu
    extra)."""

    def __post_init__(self) -> None:
        check_positive(self, "steps_per_task")
        check(self.backend in ("", *BACKENDS), "backend", self.backend, "empty (automatic) or one of "
              + ", ".join(BACKENDS))
        check(self.episode_steps >= 0, "episode_steps", self.episode_steps, ">= 0")
        family, tasks = resolve_sequence(self.sequence)  # an unknown sequence fails here, listing the known ones
        object.__setattr__(self, "env", family.name)
        object.__setattr__(self, "total_steps", self.steps_per_task * len(tasks))
        super().__post_init__()


@dataclass(frozen=True)
class ContinualTrainConfig(SequenceLoopConfig):
    """The continual model-based loop (``[train]``); ``env`` and ``total_steps`` follow from the sequence."""

    steps_per_task: int = 5_000
    """Primitive env steps collected in each task (the paper: 100k for Half-Cheetah)."""
    random_steps: int = 1_000
    """Uniform random steps at the start of each task, before the planner acts."""
    worlds: int = 4
    """Copies of the task's env collecting at once (one batched planner call per step for all of them)."""
    train_every: int = 1_000
    """Model updates happen every this many env steps of a task (and when its random steps end)."""
    model_steps: int = 200
    """Model updates per fit."""
    episode_steps: int = 0
    """Episode length in collection and evaluation (0: the env's own limit, 1000 for Half-Cheetah)."""
    heldout: int = 2_000
    """Held-out random-policy transitions per task, for the model-error matrices."""
    task_gap: int = 1_000
    """Random transitions per task for the sequence's task gap, measured before the first task (0: skip it)."""
    eval_every: int = 0
    """Also evaluate every learned task this often inside a task, in env steps (0: at task ends only)."""
    checkpoint_every: int = 5_000

    def __post_init__(self) -> None:
        for name in ("worlds", "train_every", "model_steps", "heldout"):
            check_positive(self, name)
        check(self.task_gap == 0 or self.task_gap >= 2, "task_gap", self.task_gap, "0 (skip) or >= 2")
        check(0 <= self.random_steps < self.steps_per_task, "random_steps", self.random_steps,
              f">= 0 and < steps_per_task ({self.steps_per_task}), so the planner acts in every task")
        super().__post_init__()


class TaskBuffers:
    """One replay buffer per task of the sequence (what each task collected); checkpointed together."""

    def __init__(self, n_tasks: int, capacity: int, obs_dim: int, act_dim: int, device: str | torch.device):
        self.buffers = [ReplayBuffer(capacity, (obs_dim,), (act_dim,), device) for _ in range(n_tasks)]

    def data(self, task: int) -> Data:
        buffer = self.buffers[task]
        return {k: buffer.storage[k][: len(buffer)] for k in ("obs", "action", "reward", "next_obs", "terminated")}

    def state_dict(self) -> dict[str, Any]:
        return {"buffers": [b.state_dict() for b in self.buffers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["buffers"]) != len(self.buffers):
            raise ValueError(f"checkpoint holds {len(state['buffers'])} task buffers, this sequence has "
                             f"{len(self.buffers)} tasks")
        for buffer, own in zip(self.buffers, state["buffers"], strict=True):
            buffer.load_state_dict(own)


def physics_backend(env_id: str, requested: str = "") -> str:
    """``requested``, or when empty ``rollout`` (mujoco.rollout threads) where the base env has torch physics
    functions, else ``gymnasium`` (PusherObject)."""
    if requested:
        return requested
    return "rollout" if supports(env_id) else "gymnasium"


def physics_device(backend: str, device: str) -> str | None:
    """Where a BatchedEnv's physics runs: warp's on the loop's device (outputs stay on the CPU), others' on the CPU."""
    return device if backend == "warp" else None


def collect_heldout(family_id: str, tasks: list[np.ndarray], n: int, seed: int, episode_steps: int,
                    generator: torch.Generator, backend: str = "", device: str = "cpu") -> list[Data]:
    """``n`` uniform-random transitions of every task, from worlds seeded apart from training's."""
    worlds = 8
    backend = physics_backend(family_id, backend)
    env = BatchedEnv(family_id, worlds * len(tasks), backend, autoreset=True, max_episode_steps=episode_steps or None,
                     physics_device=physics_device(backend, device))
    env.reset(seed=seed + 1_000_003, tasks=[p for p in tasks for _ in range(worlds)])
    low = torch.as_tensor(env.single_action_space.low)
    high = torch.as_tensor(env.single_action_space.high)
    parts: list[list[Data]] = [[] for _ in tasks]
    for _ in range(-(-n // worlds)):
        obs = env.observations()
        action = low + (high - low) * torch.rand(env.n, len(low), generator=generator)
        next_obs, reward, terminated, _, info = env.step(action)
        real_next = info["final_obs"] if "final_obs" in info else next_obs
        for t in range(len(tasks)):
            rows = slice(t * worlds, (t + 1) * worlds)
            parts[t].append({"obs": obs[rows], "action": action[rows].float(), "reward": reward[rows],
                             "next_obs": real_next[rows]})
    env.close()
    return [{k: torch.cat([p[k] for p in part])[:n] for k in part[0]} for part in parts]


def train_continual(
    learner: Any,
    config: ContinualTrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    hooks: Iterable[Hook] = (),
    callbacks: Iterable[Callable[[TrainState], None]] = (),
) -> TrainState:
    """Learn ``config.sequence`` task after task with ``learner`` (a
    :class:`cadence.agents.continual.ContinualModelBased`); see the module docstring."""
    run_dir = Path(run_dir)
    family, sequence = resolve_sequence(config.sequence)
    labels, params = [label for label, _ in sequence], [p for _, p in sequence]
    n_tasks, worlds = len(sequence), config.worlds
    backend = physics_backend(family.name, config.backend)
    env = BatchedEnv(family.name, worlds, backend, autoreset=True, max_episode_steps=config.episode_steps or None,
                     physics_device=physics_device(backend, config.device))
    obs_dim, act_dim = env.single_observation_space.shape[0], env.single_action_space.shape[0]
    low = torch.as_tensor(env.single_action_space.low, dtype=torch.float32)
    high = torch.as_tensor(env.single_action_space.high, dtype=torch.float32)
    buffers = TaskBuffers(n_tasks, config.steps_per_task + worlds, obs_dim, act_dim, config.device)
    generator = torch.Generator().manual_seed(config.seed)
    records = new_records(labels)
    position = {"sequence": config.sequence, "labels": labels, "task": 0, "task_step": 0, "next_fit": 0,
                "started": False}
    ctx = LoopContext(learner, env, None, buffers, None, TrainState(), config, run_dir,  # type: ignore[arg-type]
                      extras={"records": records, "position": position})
    run_hooks = make_hooks(config, hooks, callbacks)
    restored = open_run(ctx, run_hooks, resume, required=("env", "continual"))
    if restored is None:
        heldout = collect_heldout(family.name, params, config.heldout, config.seed, config.episode_steps, generator,
                                  config.backend, config.device)
        gap = task_gap(config.sequence, config.task_gap, seed=config.seed).to_dict() if config.task_gap else None
        env.reset(seed=config.seed, tasks=[params[0]] * worlds)
    else:
        own = restored["continual"]
        if (own["sequence"], own["labels"]) != (config.sequence, labels):
            raise ValueError(f"the checkpoint in {run_dir} learns sequence {own['sequence']!r} ({own['labels']}), "
                             f"not {config.sequence!r} ({labels}); nothing was changed")
        env.load_state_dict(restored["env"])
        generator.set_state(own["generator"])
        heldout, gap = own["heldout"], own.get("task_gap")
        position.update(own["position"])
        records = {name: ContinualEvaluation.from_dict(saved) for name, saved in own["records"].items()}
        ctx.extras["records"] = records
    returns = records["return"]
    scale = transition_scale(heldout[0])  # per-column errors in units of the first task's held-out std
    no_change = {name: [no_change_errors(h, scale)[key] for h in heldout] for name, key in ERROR_RECORDS.items()}
    ctx.logger = RunLogger(run_dir, resume_step=ctx.state.step if resume else None, write_layout=not resume)
    state = ctx.state
    (run_hooks.resume if restored is not None else run_hooks.run_start)(ctx)

    def bundle_now() -> dict[str, Any]:
        continual = {"sequence": config.sequence, "labels": labels, "position": dict(position),
                     "generator": generator.get_state(), "heldout": heldout, "task_gap": gap,
                     "records": {name: record.to_dict() for name, record in records.items()}}
        return bundle(ctx, run_hooks, env=env.state_dict(), continual=continual)

    def evaluate(final: bool) -> None:
        """One row of both records: every task learned so far, in one batched call (NaN for later tasks)."""
        task = position["task"]
        planner = learner.planner(generator=torch.Generator().manual_seed(config.seed * 7919 + state.step))
        mean = task_returns(family.name, planner.act_sequence, params[: task + 1], config.eval_episodes,
                            seed=config.seed + 10_000, task_aware=True, backend=backend,
                            physics_device=physics_device(backend, config.device),
                            max_episode_steps=config.episode_steps or None).mean(axis=1)
        rows = {name: np.full(n_tasks, np.nan) for name in records}
        rows["return"][: task + 1] = mean
        for t in range(task + 1):
            measured = learner.prediction_errors(heldout[t], t, scale)
            for name, key in ERROR_RECORDS.items():
                rows[name][t] = measured[key]
        for name, record in records.items():
            record.add_row(task, rows[name], state.step, final)
            log_continual_row(ctx.logger, state.step, record, rows[name])
        row = rows["return"]
        state.evals.append((state.step, float(np.nanmean(row))))
        state.last_evaluation = {"eval/return": float(np.nanmean(row))}
        ctx.logger.scalars(state.last_evaluation, state.step)
        run_hooks.eval(ctx, float(np.nanmean(row)))

    def every_task(task: int) -> list[Data] | None:
        """Every task's data so far, for the strategy that trains on all of it (multitask)."""
        return [buffers.data(t) for t in range(task + 1)] if learner.strategy == "multitask" else None

    planner = learner.planner(generator=generator)  # plans through the learner's current models
    episode_return = np.zeros(worlds)
    metrics: dict[str, float] = {}
    with stop_signals() as caught, progress_bar(config.progress) as progress:
        log = PeriodicLog(ctx.logger, progress, learner.algo.upper(), config, state)
        while position["task"] < n_tasks:
            task = position["task"]
            if not position["started"]:  # a new task: its worlds, its embedding, its first fit after warm-up
                learner.start_task(task)
                env.reset(seed=config.seed + 7 * task, tasks=[params[task]] * worlds)
                position.update(started=True, task_step=0, next_fit=config.random_steps or config.train_every)
                episode_return[:] = 0
                evaluate(final=False)  # zero-shot: the new task before any update on it (forward transfer's start)
            while position["task_step"] < config.steps_per_task:
                obs = env.observations()
                if position["task_step"] < config.random_steps:
                    action = low + (high - low) * torch.rand(worlds, act_dim, generator=generator)
                else:
                    action = torch.as_tensor(planner.plan(obs.numpy(), task=task)[:, 0])
                next_obs, reward, terminated, truncated, info = env.step(action)
                real_next = info["final_obs"] if "final_obs" in info else next_obs
                buffers.buffers[task].add(obs, action, reward, real_next, terminated)
                position["task_step"] += worlds
                state.step += worlds
                state.decisions += worlds
                episode_return += reward.numpy()
                for w in np.flatnonzero((terminated | truncated).numpy()):
                    state.episodes += 1
                    state.last_return = float(episode_return[w])
                    episode_return[w] = 0.0
                if position["task_step"] >= position["next_fit"]:
                    metrics = learner.fit(buffers.data(task), config.model_steps, every_task(task))
                    check_finite(metrics, state, run_dir, unit="model update")
                    position["next_fit"] += config.train_every
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
            # the task's end: a last fit on all of its data, the final row, then the strategy closes the task
            learner.fit(buffers.data(task), config.model_steps, every_task(task))
            evaluate(final=True)
            learner.end_task(buffers.data(task))
            if task == 0 and gap is not None:
                warn_if_no_gap(gap, float(records["state_error"].matrix[0, 0]), progress.console)
            progress.console.print(f"task {task + 1}/{n_tasks} ({labels[task]}) done at step {state.step:,}: "
                                   f"return per task {np.round(returns.matrix[task, : task + 1], 1).tolist()}")
            position.update(task=task + 1, started=False)
    if caught:
        interrupt_run(ctx, bundle_now, caught["signal"])
    if not state.evals or state.evals[-1][0] != state.step:  # stopped early by a hook: a last in-task row
        evaluate(final=False)
    extras = {name: {"no_change": values} for name, values in no_change.items()}
    if gap is not None:
        atomic_write_json(run_dir / "task_gap.json", gap)
    finish_continual(ctx, bundle_now, list(records.values()), complete=position["task"] == n_tasks, extras=extras)
    return state


#: the loop's error records and the key of :func:`~cadence.evaluation.model_error.normalized_errors` each holds
ERROR_RECORDS = {"model_error": "raw_mse", "state_error": "state", "reward_error": "reward"}


def new_records(labels: list[str]) -> dict[str, ContinualEvaluation]:
    """The loop's four records: the MPC return, then the model errors of :data:`ERROR_RECORDS`."""
    records = {"return": ContinualEvaluation(labels, metric_name="return", higher_is_better=True)}
    for name in ERROR_RECORDS:
        records[name] = ContinualEvaluation(labels, metric_name=name, higher_is_better=False)
    return records


def warn_if_no_gap(gap: dict[str, Any], first_task_error: float, console: Any) -> None:
    """Say so when the sequence's smallest task gap is below ten times the first task's just-learned state error
    (and record both in ``gap``)."""
    gap["first_task_state_error"] = first_task_error
    gap["gap_over_error"] = gap["min_state_gap"] / max(first_task_error, 1e-12)
    warning = gap_warning(gap["sequence"], gap["min_state_gap"], gap["min_reward_gap"], first_task_error)
    if warning:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)} (cadence task-gap SEQUENCE measures the gap)")


def finish_continual(ctx: LoopContext, make_bundle: Callable[[], dict[str, Any]], records: list[ContinualEvaluation],
                     complete: bool, extras: dict[str, dict[str, Any]] | None = None) -> None:
    """Close a continual run: once every task is learned, log each record's summary metrics and write its files
    (with ``extras[metric_name]`` added to its JSON); hand the records to the learner (for the run's metrics.json);
    then the last checkpoints."""
    if complete:
        for record in records:
            log_continual_summary(ctx.logger, ctx.state.step, record, summary(record))
        write_records(ctx.run_dir, *records, extras=extras)
    ctx.agent.records = {r.metric_name: r for r in records}
    finish_run(ctx, make_bundle)


def write_records(run_dir: Path, *records: ContinualEvaluation, extras: dict[str, dict[str, Any]] | None = None
                  ) -> None:
    """``continual_<metric>.json`` (the record, its metrics and ``extras[metric]``), ``.png`` (its heatmap) and
    ``_curves.png`` (every task against the env step, from all evaluation rows) per record."""
    for record in records:
        stem = run_dir / f"continual_{record.metric_name}"
        atomic_write_json(stem.with_suffix(".json"), {"record": record.to_dict(), "metrics": summary(record),
                                                      **(extras or {}).get(record.metric_name, {})})
        plot_continual_heatmap(record, stem.with_suffix(".png"), title=f"{run_dir.name}: {record.metric_name}")
        plot_continual_curves(record, run_dir / f"continual_{record.metric_name}_curves.png",
                              title=f"{run_dir.name}: {record.metric_name} of every task", xlabel="env steps")


