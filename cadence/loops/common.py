"""What every training loop shares: settings, counters, the checkpoint bundle, evaluation, logging, learning.

A loop is a plain function (:mod:`cadence.loops.online`, :mod:`cadence.loops.offline`) built from these
steps: :func:`open_run` (a fresh start or a restored checkpoint), then per iteration :func:`learn`,
:class:`PeriodicLog`, :func:`evaluate_if_due` and :func:`checkpoint`, and at the end :func:`finish_run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import cadence
from cadence.agents.base import Agent
from cadence.agents.graphs import metric_floats
from cadence.checkpoint import BUNDLE_PARTS, DEPLOY, load_checkpoint, save_checkpoint
from cadence.config import ConfigError, check, check_device, check_positive
from cadence.envs import run_episodes
from cadence.logging import RunLogger
from cadence.loops.hooks import Hook, Hooks, LoopContext, PolicySnapshots, StepCallback, StopOnReturn
from cadence.nn import PRECISIONS, mixed_precision
from cadence.replay import ReplayBuffer
from cadence.seeding import rng_state, set_rng_state


@dataclass(frozen=True)
class LoopConfig:
    """What every training loop shares: budget, evaluation, logging and checkpoints."""

    env: str = "Hopper-v5"
    """Env id passed to cadence.envs.make."""
    seed: int = 1
    """Seed for networks, replay sampling and the env."""
    total_steps: int = 1_000_000
    """Budget in primitive env steps."""
    eval_every: int = 10_000
    """Evaluate the deterministic policy every this many steps (0 disables)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    checkpoint_every: int = 50_000
    """Write a checkpoint (at the next episode end, for a single env) after every this many steps."""
    log_every: int = 1_000
    """Log training losses every this many steps."""
    torch_threads: int = 1
    """torch intra-op threads (0 keeps torch's default). 1 by default: on a 2-core machine 2 threads are at most
    1.3x faster when it is idle and 2x slower when other work shares it (benchmarks/thread_defaults.py)."""
    device: str = "cpu"
    """Torch device for networks and replay."""
    precision: str = "fp32"
    """fp32, or bf16-mixed: the networks' matrix products in bfloat16 under torch.autocast during gradient
    steps (parameters, optimiser states, losses and acting stay fp32). Faster on CPUs with AVX512-BF16 or
    AMX and on GPUs; sac and srl (online training) only."""
    progress: bool = True
    """Show a progress bar with steps/s and the last return."""
    snapshots: bool = False
    """Also keep the deployable policy of every evaluation, as checkpoints/agent_<step>.pt (for data collection)."""
    stop_return: float = math.inf
    """Stop early once an evaluation's mean return reaches this (inf: never)."""

    def __post_init__(self) -> None:
        for name in ("total_steps", "eval_episodes", "checkpoint_every", "log_every"):
            check_positive(self, name)
        check(self.eval_every >= 0, "eval_every", self.eval_every, ">= 0")
        check(self.torch_threads >= 0, "torch_threads", self.torch_threads, ">= 0")
        check(self.seed >= 0, "seed", self.seed, ">= 0")
        check_device("device", self.device)
        check(self.precision in PRECISIONS, "precision", self.precision, " or ".join(PRECISIONS))


@dataclass
class TrainState:
    """Counters of a run; saved in every checkpoint (the ``counters`` part)."""

    step: int = 0
    """Primitive env steps taken (gradient steps, offline)."""
    decisions: int = 0
    episodes: int = 0
    last_return: float = float("nan")
    next_eval: int = 0
    next_checkpoint: int = 0
    evals: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean return at ASL 1) of every evaluation."""
    last_evaluation: dict[str, float] = field(default_factory=dict)
    """Every value the last evaluation logged (``eval/return``, ``eval/return_aslJJ``)."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM stopped a run after its current step; a checkpoint of that step was written."""


@contextlib.contextmanager
def stop_signals() -> Iterator[dict[str, str]]:
    """While training, SIGINT and SIGTERM ask the loop to stop after the current step (the returned dict gets
    ``signal``); a second signal stops at once. Outside the main thread signals cannot be caught: nothing changes."""
    caught: dict[str, str] = {}
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum: int, frame: Any) -> None:
        if caught:  # asked twice: stop now, without a checkpoint
            raise KeyboardInterrupt
        caught["signal"] = signal.Signals(signum).name

    # a signal the process ignores (SIGINT of a background job under nohup) stays ignored
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def interrupt_run(ctx: LoopContext, make_bundle: Callable[[], dict[str, Any]], signal_name: str) -> None:
    """Checkpoint the step the run stopped at (exactly resumable) and raise :class:`RunInterrupted`."""
    save_checkpoint(ctx.run_dir, make_bundle())
    ctx.logger.close()
    raise RunInterrupted(f"{signal_name} at step {ctx.state.step:,}: checkpoint written to "
                         f"{ctx.run_dir / 'checkpoints'}; continue with --resume {ctx.run_dir}")


def evaluate(agent: Agent, env: Any, episodes: int, seed: int, every_step: bool = True) -> float:
    """Mean return of the deterministic policy over ``episodes`` seeded episodes.

    ``every_step``: ``env`` is the plain env and the agent decides at every primitive step (ASL 1, closed loop),
    which is comparable across agents; otherwise ``env`` runs at the agent's own decision interval.
    """
    if every_step:
        policy = lambda o: agent.act_sequence(o, 1, deterministic=True)[0]
    else:
        policy = lambda o: agent.act(o, deterministic=True)
    returns, _ = run_episodes(env, policy, episodes, seed)
    return float(returns.mean())


def evaluate_all(ctx: LoopContext) -> dict[str, float]:
    """The evaluations a run logs: ``eval/return`` at ASL 1 (every agent deciding at every step, the headline
    that compares agents), and for agents trained at a decision interval J > 1, ``eval/return_aslJJ`` there."""
    episodes, seed = ctx.config.eval_episodes, ctx.config.seed + 100_000
    out = {"eval/return": evaluate(ctx.agent, ctx.eval_env, episodes, seed)}
    if ctx.eval_at_interval is not None:
        interval, env = ctx.eval_at_interval
        out[f"eval/return_asl{interval:02d}"] = evaluate(ctx.agent, env, episodes, seed, every_step=False)
    return out


def deployment_bundle(agent: Agent) -> dict[str, Any]:
    """What ``agent.pt`` holds: the acting part of the agent only."""
    return {"algo": agent.algo, "agent": agent.deployment_state_dict(), "cadence_version": cadence.__version__}


def snapshot_name(step: int) -> str:
    return f"agent_{step}.pt"


def check_precision(agent: Agent | type, precision: str) -> None:
    """Refuse ``train.precision`` values the agent (an instance or its class) was not built for: under
    bf16-mixed its networks must cast their outputs back to float32 (``supports_bf16_mixed``)."""
    if precision != "fp32" and not agent.supports_bf16_mixed:
        raise ConfigError(f"train.precision={precision!r} is supported for sac and srl only, not {agent.algo}")


def progress_bar(enabled: bool) -> Progress:
    """A live bar on a terminal; under nohup, a pipe or a cluster scheduler no bar (it would be drawn half-way into
    the log) and :class:`PeriodicLog` prints plain lines instead."""
    console = Console()
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[speed]:.0f} steps/s"), TextColumn("{task.fields[ret]}"),
        TimeRemainingColumn(), disable=not (enabled and console.is_terminal), transient=False, console=console,
    )


def last_return_text(value: float) -> str:
    """``last return 12.3``; before the first episode ends (a continual task's first long episode), saying so
    rather than ``nan``."""
    return "no episode finished yet" if math.isnan(value) else f"last return {value:8.1f}"


class PeriodicLog:
    """Training metrics, steps/s and the progress bar, every ``log_every`` steps."""

    def __init__(self, logger: RunLogger, progress: Progress, label: str, config: LoopConfig, state: TrainState):
        self.task = progress.add_task(label, total=config.total_steps, completed=state.step, speed=0.0,
                                      ret=last_return_text(state.last_return))
        self.logger, self.progress, self.every, self.label = logger, progress, config.log_every, label
        self.total = config.total_steps
        # no live bar (not a terminal) but progress wanted: plain lines, as stable-baselines3 and CleanRL print
        self.plain = config.progress and progress.disable
        self.last_step, self.last_time = state.step, time.perf_counter()

    def due(self, state: TrainState) -> bool:
        """Whether the next call logs (so deferred metrics are read now)."""
        return state.step - self.last_step >= self.every

    def __call__(self, state: TrainState, metrics: dict[str, float]) -> None:
        if not self.due(state):
            return
        now = time.perf_counter()
        speed = (state.step - self.last_step) / (now - self.last_time)
        # bare names are training metrics; names with a group ("model/nll") keep it
        self.logger.scalars({k if "/" in k else f"train/{k}": v for k, v in metrics.items()}, state.step)
        self.logger.scalars({"train/steps_per_second": speed}, state.step)
        self.progress.update(self.task, completed=state.step, speed=speed, ret=last_return_text(state.last_return))
        if self.plain:
            losses = "  ".join(f"{k} {v + 0.0:.4g}" for k, v in metrics.items() if "/" not in k)  # + 0.0: no "-0"
            self.progress.console.print(f"{self.label} step {state.step:>9,}/{self.total:,}  {speed:6.0f} steps/s  "
                                        f"episodes {state.episodes:,}  {last_return_text(state.last_return)}  {losses}",
                                        highlight=False, soft_wrap=True)
        self.last_step, self.last_time = state.step, now


def check_finite(metrics: dict[str, float], state: TrainState, run_dir: Path, unit: str = "step") -> None:
    """Stop on a NaN or infinite loss, naming it and the step; the last good checkpoint stays."""
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(f"{bad[0]} became {metrics[bad[0]]} at {unit} {state.step}; the last good checkpoint "
                               f"is kept in {run_dir / 'checkpoints'}")


def learn(agent: Agent, buffer: ReplayBuffer, transitions: int, state: TrainState, run_dir: Path,
          precision: str = "fp32", defer: bool = False) -> dict[str, Any]:
    """``gradient_steps`` updates per new transition; stops on a non-finite loss, naming it and the step.

    ``defer``: the metrics stay on the device as 0-dim tensors, with no host sync per update (on a GPU a sync
    per update costs more than the update); the caller checks them with :func:`read_metrics` when it logs them.
    """
    metrics: dict[str, Any] = {}
    for _ in range(agent.config.gradient_steps * int(transitions)):
        # one autocast block per update: its cached bfloat16 weights must not outlive an optimiser step
        with mixed_precision(precision, buffer.device):
            batch = buffer.sample(agent.config.batch_size)
            metrics = agent.update_tensors(batch) if defer else agent.update(batch)
    if not defer:
        check_finite(metrics, state, run_dir)
    return metrics


def read_metrics(metrics: dict[str, Any], state: TrainState, run_dir: Path) -> dict[str, float]:
    """Deferred metrics (:func:`learn` with ``defer``) as floats, in one host sync; stops on a non-finite one."""
    floats = metric_floats(metrics)
    check_finite(floats, state, run_dir)
    return floats


def open_run(ctx: LoopContext, hooks: Hooks, resume: bool, required: tuple[str, ...]) -> dict[str, Any] | None:
    """Start the run's counters, or restore every shared part of the last checkpoint (agent, buffer, global RNGs,
    counters, hooks) and return the bundle so the loop restores its own parts (``env``, ``model``)."""
    config = ctx.config
    if not resume:
        ctx.state = TrainState(next_eval=config.eval_every, next_checkpoint=config.checkpoint_every)
        return None
    bundle = load_checkpoint(ctx.run_dir, required=(*BUNDLE_PARTS, *required))
    if bundle["algo"] != ctx.agent.algo:
        raise ValueError(f"checkpoint in {ctx.run_dir} is a {bundle['algo']!r} run, not {ctx.agent.algo!r}")
    ctx.agent.load_state_dict(bundle["agent"])
    ctx.buffer.load_state_dict(bundle["buffer"])
    set_rng_state(bundle["rng"])
    ctx.state = TrainState(**bundle["counters"])
    ctx.state.evals = [tuple(e) for e in ctx.state.evals]
    hooks.load_state_dict(bundle["hooks"])
    return bundle


def make_hooks(config: LoopConfig, hooks: Iterable[Hook], callbacks: Iterable[Callable[[TrainState], None]]) -> Hooks:
    """The run's hooks: the caller's, then the loop settings that are hooks (snapshots, stop_return), then plain
    step callbacks."""

    def save_snapshot(ctx: LoopContext) -> None:
        save_checkpoint(ctx.run_dir, deployment_bundle(ctx.agent), name=snapshot_name(ctx.state.step))

    built = list(hooks)
    if config.snapshots:
        built.append(PolicySnapshots(save_snapshot))
    if math.isfinite(config.stop_return):
        built.append(StopOnReturn(config.stop_return))
    built += [StepCallback(c, i) for i, c in enumerate(callbacks)]
    return Hooks(built)


def bundle(ctx: LoopContext, hooks: Hooks, **parts: Any) -> dict[str, Any]:
    """The checkpoint bundle: the shared parts plus the loop's own (``env=...``, ``model=...``)."""
    return {"algo": ctx.agent.algo, "agent": ctx.agent.state_dict(), "buffer": ctx.buffer.state_dict(),
            "rng": rng_state(), "counters": dataclasses.asdict(ctx.state), "hooks": hooks.state_dict(),
            **parts, "cadence_version": cadence.__version__}


def checkpoint_if_due(ctx: LoopContext, make_bundle: Callable[[], dict[str, Any]]) -> None:
    if ctx.state.step >= ctx.state.next_checkpoint:
        ctx.state.next_checkpoint = ctx.state.step + ctx.config.checkpoint_every
        save_checkpoint(ctx.run_dir, make_bundle())


def evaluate_if_due(ctx: LoopContext, hooks: Hooks, progress: Progress) -> float | None:
    """Evaluate when due: log the evaluations, print a plain line, and tell the hooks. Returns the mean return at
    ASL 1 (the headline)."""
    config, state = ctx.config, ctx.state
    if not config.eval_every or state.step < state.next_eval:
        return None
    state.next_eval += config.eval_every * math.ceil((state.step - state.next_eval + 1) / config.eval_every)
    mean_return = _record_evaluation(ctx)
    if config.progress:  # a plain line too, so logs of non-interactive runs show progress
        progress.console.print(f"step {state.step:>9,}  " + _describe(ctx))
    hooks.eval(ctx, mean_return)
    return mean_return


def _record_evaluation(ctx: LoopContext) -> float:
    results = evaluate_all(ctx)
    ctx.state.evals.append((ctx.state.step, results["eval/return"]))
    ctx.state.last_evaluation = results
    ctx.logger.scalars(results, ctx.state.step)
    return results["eval/return"]


def _describe(ctx: LoopContext) -> str:
    """``eval return 950.0 (ASL 1), 120.3 (ASL 8, the training interval)``."""
    results = ctx.state.last_evaluation
    text = f"eval return {results['eval/return']:9.1f} (ASL 1)"
    if ctx.eval_at_interval is not None:
        interval = ctx.eval_at_interval[0]
        text += f", {results[f'eval/return_asl{interval:02d}']:.1f} (ASL {interval}, the training interval)"
    return text


def finish_run(ctx: LoopContext, make_bundle: Callable[[], dict[str, Any]]) -> None:
    """Final evaluation (unless one was just done), then the last checkpoint and the deployment checkpoint."""
    state = ctx.state
    if not state.evals or state.evals[-1][0] != state.step:
        _record_evaluation(ctx)
    save_checkpoint(ctx.run_dir, make_bundle())
    save_checkpoint(ctx.run_dir, deployment_bundle(ctx.agent), name=DEPLOY)
    ctx.logger.close()
