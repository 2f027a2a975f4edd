"""Online off-policy training, one env or many batched worlds: a plain loop that reads top to bottom.

Each iteration: every world takes one decision (uniform random actions until learning starts) and its
transitions are stored; the agent makes ``gradient_steps`` updates per stored transition; metrics are logged;
the policy is evaluated when due; ended episodes are closed (hooks hear their returns), a checkpoint is
written when due, and the ended worlds are reset with the task their hooks choose.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cadence.agents.base import Agent
from cadence.config import check, check_positive
from cadence.envs.batched import BatchedEnv
from cadence.logging import RunLogger
from cadence.loops.collectors import BatchedCollector, SingleEnvCollector
from cadence.loops.common import (
    LoopConfig,
    PeriodicLog,
    TrainState,
    bundle,
    check_precision,
    checkpoint_if_due,
    evaluate_if_due,
    finish_run,
    interrupt_run,
    learn,
    make_hooks,
    open_run,
    progress_bar,
    read_metrics,
    stop_signals,
)
from cadence.loops.hooks import Hook, LoopContext
from cadence.replay import ReplayBuffer


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """The online training loop."""

    num_envs: int = 1
    """Worlds collecting experience at once; above 1 they run batched (envs.batched) on ``backend``."""
    backend: str = "rollout"
    """Physics of the batched worlds (num_envs above 1): rollout (mujoco.rollout on CPU threads) or warp (MuJoCo
    Warp on train.device: a CUDA GPU, or Warp's CPU device; the gpu extra)."""
    teacher: str = ""
    """A curriculum teacher choosing each episode's task: on a task-family env random, alp-gmm, riac or covar-gmm;
    on a maze-layout env (PointMazeLayout-v0) dr or clutr; empty: none."""
    teacher_rvae: str = ""
    """clutr only: a layout RVAE checkpoint (cadence.curricula.save_rvae); empty: the CPU-sized one, trained and
    cached on first use."""
    teacher_reward_range: tuple[float, ...] | None = None
    """[low, high]: the episode returns a teacher maps to [0, 1] (alp-gmm, riac and covar-gmm compare returns across
    tasks on that scale; outside it they are clipped). Unset: the task family's own reward_range."""
    teacher_settings: dict[str, Any] | None = None
    """The teacher's own settings, a table: e.g. {fit_every = 100, random_share = 0.3, criterion = "bic"} for
    alp-gmm (also bootstrap, k_range, alp_min_history); covar-gmm: the same but alp_min_history, plus absolute_lp;
    riac: max_region_size, alp_window, mutation_std, shares, ...; clutr: regret, batch_size, lr, ...
    (cadence.curricula.teacher_settings(name) lists them with their defaults). Unset: the defaults."""
    task: tuple[float, ...] | float | str | None = None
    """Fixes every episode's task of a task-family env: its params (e.g. [0.6, 1.0, 1.0]) or a preset name
    (low-gravity); on PointMazeLayout-v0 a layout's code. Unset (or empty): the family's default task. Training,
    evaluation and interval envs all run it; not with teacher (which chooses tasks) or num_envs above 1."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "num_envs")
        check(self.backend in ("rollout", "warp"), "backend", self.backend, "rollout or warp")
        check(self.backend == "rollout" or self.num_envs > 1, "backend", self.backend,
              "rollout unless num_envs is above 1 (one env runs in Gymnasium)")
        if isinstance(self.task, numbers.Real) and not isinstance(self.task, bool):  # one param: --set train.task=1.5
            object.__setattr__(self, "task", (float(self.task),))
        params = isinstance(self.task, (list, tuple)) and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in self.task)
        check(self.task is None or isinstance(self.task, str) or params, "task", self.task,
              "a list of numbers (a task family's params) or a preset name")
        if self.task is not None and len(self.task) == 0:  # "" or []: the family's default task
            object.__setattr__(self, "task", None)
        if isinstance(self.task, (list, tuple)):
            object.__setattr__(self, "task", tuple(float(v) for v in self.task))
        if self.task is not None:
            check(not self.teacher, "task", self.task,
                  f"unset with a teacher: teacher={self.teacher!r} chooses every episode's task")
            check(self.num_envs == 1, "task", self.task,
                  f"unset with num_envs={self.num_envs}: a BatchedEnv takes per-world tasks at reset, not when "
                  "built; fix a task with num_envs = 1")
        if self.teacher:
            from cadence.curricula import LAYOUT_TEACHERS, TEACHERS

            valid = [*TEACHERS, *LAYOUT_TEACHERS]
            close = difflib.get_close_matches(self.teacher.lower(), valid, n=1, cutoff=0.5)
            check(self.teacher in valid, "teacher", self.teacher,
                  "one of " + ", ".join(valid) + (f" (did you mean {close[0]!r}?)" if close else ""))
        check(not self.teacher_rvae or self.teacher == "clutr", "teacher_rvae", self.teacher_rvae,
              "set only with teacher = 'clutr'")
        self._check_teacher_reward_range()
        self._check_teacher_settings()

    def _check_teacher_reward_range(self) -> None:
        """[low, high] finite with low < high, only beside a teacher over a task family's box; [] means unset."""
        value = self.teacher_reward_range
        if value is not None and len(value) == 0:
            object.__setattr__(self, "teacher_reward_range", None)
            return
        if value is None:
            return
        from cadence.curricula import TEACHERS

        check(self.teacher in TEACHERS, "teacher_reward_range", value,
              "set only with a teacher over a task family's box (" + ", ".join(TEACHERS) + "); the maze teachers "
              "score success in [0, 1]")
        check(len(value) == 2 and all(math.isfinite(v) for v in value) and value[0] < value[1],
              "teacher_reward_range", value, "[low, high], finite, with low < high")

    def _check_teacher_settings(self) -> None:
        """A table of the teacher's settings, each converted to the type its constructor declares."""
        value = self.teacher_settings
        if value is None:
            return
        check(isinstance(value, dict) and all(isinstance(k, str) for k in value), "teacher_settings", value,
              "a table of the teacher's settings, e.g. {fit_every = 100}")
        check(bool(self.teacher) or not value, "teacher_settings", value, "set only with a teacher")
        if self.teacher:
            from cadence.curricula import check_teacher_settings

            object.__setattr__(self, "teacher_settings", check_teacher_settings(self.teacher, value))


def train_online(
    agent: Agent,
    env: Any,
    eval_env: Any,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    hooks: Iterable[Hook] = (),
    callbacks: Iterable[Callable[[TrainState], None]] = (),
    eval_at_interval: tuple[int, Any] | None = None,
) -> TrainState:
    """Off-policy online training: act, store, update, evaluate, checkpoint.

    With one Gymnasium env, periodic checkpoints are taken between episodes (restoring the env's generators
    then starts the next episode exactly as it would have); the final checkpoint holds the episode in progress,
    physics included, so a finished run extended with more steps continues exactly as one longer run. With a
    :class:`cadence.envs.batched.BatchedEnv` (``autoreset=False``), checkpoints hold every world's physics.

    Args:
        agent: an :class:`cadence.agents.base.Agent`; its config has ``buffer_size``, ``batch_size``,
            ``learning_starts`` and ``gradient_steps``.
        env: the training env, from :func:`cadence.envs.make`, or a BatchedEnv.
        eval_env: a separate plain env (decision interval 1) for evaluation at ASL 1.
        eval_at_interval: ``(J, env)``: also evaluate at the agent's training decision interval J.
        config: loop settings.
        run_dir: the run folder (TensorBoard events and ``checkpoints/``).
        resume: continue from ``run_dir/checkpoints/last.pt``.
        hooks: act at the loop's events (task switches, teachers, ...); their states are checkpointed.
        callbacks: called with the counters after every iteration (an exception stops training).

    Returns:
        The final :class:`TrainState`.
    """
    run_dir = Path(run_dir)
    check_precision(agent, config.precision)
    cfg = agent.config
    collector = (BatchedCollector if isinstance(env, BatchedEnv) else SingleEnvCollector)(env, agent.stores_primitive)
    buffer = ReplayBuffer(cfg.buffer_size, collector.obs_shape, collector.act_shape, config.device)
    ctx = LoopContext(agent, env, eval_env, buffer, None, TrainState(), config, run_dir,  # type: ignore[arg-type]
                      eval_at_interval=eval_at_interval)
    run_hooks = make_hooks(config, hooks, callbacks)
    restored = open_run(ctx, run_hooks, resume, required=("env",))
    ctx.logger = RunLogger(run_dir, resume_step=ctx.state.step if resume else None, write_layout=not resume)
    state = ctx.state
    if restored is None:
        collector.start(config.seed)
        run_hooks.run_start(ctx)
    else:
        collector.load_state_dict(restored["env"])
        run_hooks.resume(ctx)

    run_hooks.start_episodes(ctx, list(collector.pending), collector.reset_worlds)
    metrics: dict[str, Any] = {}
    defer = buffer.device.type != "cpu"  # on a GPU, metrics stay there until logged: no host sync per update
    with stop_signals() as caught, progress_bar(config.progress) as progress:
        log = PeriodicLog(ctx.logger, progress, agent.algo.upper() + collector.label, config, state)
        while state.step < config.total_steps:
            # act and store: uniform random actions until learning starts
            got = collector.collect(agent, buffer, random=state.step < cfg.learning_starts)
            state.step += got.steps
            state.decisions += got.decisions

            # learn: gradient_steps per stored transition (per primitive step for primitive learners)
            if state.step >= cfg.learning_starts:
                metrics = learn(agent, buffer, got.stored, state, run_dir, config.precision, defer) or metrics

            if log.due(state):
                metrics = read_metrics(metrics, state, run_dir)
            log(state, metrics)
            evaluate_if_due(ctx, run_hooks, progress)

            # close ended episodes, checkpoint between episodes (so a resumed run draws the same next ones),
            # then start the next episodes with the tasks the hooks choose
            for world, episode_return in got.ended:
                state.episodes += 1
                state.last_return = episode_return
                ctx.logger.scalars({"episode_return": episode_return}, state.step, prefix="train/")
                run_hooks.episode_end(ctx, world, episode_return, collector.tasks(world))
            if collector.can_checkpoint:
                checkpoint_if_due(ctx, lambda: bundle(ctx, run_hooks, env=collector.state_dict()))
            run_hooks.start_episodes(ctx, list(collector.pending), collector.reset_worlds)

            run_hooks.step(ctx)
            if ctx.stop or caught:  # a hook asked (train.stop_return), or Ctrl-C: this step's bookkeeping is done
                break

    final = lambda: bundle(ctx, run_hooks, env=collector.state_dict())
    if caught:
        interrupt_run(ctx, final, caught["signal"])
    finish_run(ctx, final)
    return state
