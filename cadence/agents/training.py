"""Training loops: plain functions that read top to bottom."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import cadence
from cadence.checkpoint import DEPLOY, load_checkpoint, save_checkpoint
from cadence.config import ConfigError, check, check_device, check_positive
from cadence.envs import env_rng_state, episode_state, run_episodes, set_env_rng_state, set_episode_state
from cadence.logging import RunLogger
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
    torch_threads: int = 2
    """torch intra-op threads (0 keeps torch's default)."""
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


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """The online training loop."""

    num_envs: int = 1
    """Worlds collecting experience at once; above 1 they run batched on the rollout backend (envs.batched)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "num_envs")


@dataclass
class TrainState:
    """Counters of a run; saved in every checkpoint."""

    step: int = 0
    """Primitive env steps taken."""
    decisions: int = 0
    episodes: int = 0
    last_return: float = float("nan")
    next_eval: int = 0
    next_checkpoint: int = 0
    evals: list[tuple[int, float]] = field(default_factory=list)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


def evaluate(agent: Any, env: Any, episodes: int, seed: int) -> float:
    """Mean return of the deterministic policy over ``episodes`` seeded episodes."""
    returns, _ = run_episodes(env, lambda o: agent.act(o, deterministic=True), episodes, seed)
    return float(returns.mean())


def deployment_bundle(agent: Any) -> dict[str, Any]:
    """What ``agent.pt`` holds: the acting part of the agent only."""
    return {"algo": agent.algo, "agent": agent.deployment_state_dict(), "cadence_version": cadence.__version__}


def snapshot_name(step: int) -> str:
    return f"agent_{step}.pt"


def checkpoint_bundle(agent: Any, buffer: ReplayBuffer, env: Any, state: TrainState) -> dict[str, Any]:
    return {
        "algo": agent.algo,
        "agent": agent.state_dict(),
        "buffer": buffer.state_dict(),
        "rng": rng_state(),
        "env_rng": env_rng_state(env),
        "train_state": dataclasses.asdict(state),
        "cadence_version": cadence.__version__,
    }


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[speed]:.0f} steps/s"), TextColumn("last return {task.fields[ret]:.1f}"),
        TimeRemainingColumn(), disable=not enabled, transient=False,
    )


def restore_run(run_dir: Path, agent: Any, buffer: ReplayBuffer, env_key: str) -> tuple[dict[str, Any], TrainState]:
    """Load the last checkpoint into ``agent``, ``buffer`` and the global RNGs; the env part is the caller's."""
    bundle = load_checkpoint(run_dir, required=("algo", "agent", "buffer", "rng", env_key, "train_state"))
    if bundle["algo"] != agent.algo:
        raise ValueError(f"checkpoint in {run_dir} is a {bundle['algo']!r} run, not {agent.algo!r}")
    agent.load_state_dict(bundle["agent"])
    buffer.load_state_dict(bundle["buffer"])
    set_rng_state(bundle["rng"])
    state = TrainState(**bundle["train_state"])
    state.evals = [tuple(e) for e in state.evals]
    return bundle, state


class PeriodicLog:
    """Training metrics, steps/s and the progress bar, every ``every`` env steps."""

    def __init__(self, logger: RunLogger, progress: Progress, label: str, config: LoopConfig, state: TrainState):
        self.task = progress.add_task(label, total=config.total_steps, completed=state.step, speed=0.0,
                                      ret=state.last_return)
        self.logger, self.progress, self.every = logger, progress, config.log_every
        self.last_step, self.last_time = state.step, time.perf_counter()

    def __call__(self, state: TrainState, metrics: dict[str, float]) -> None:
        if state.step - self.last_step < self.every:
            return
        now = time.perf_counter()
        speed = (state.step - self.last_step) / (now - self.last_time)
        # bare names are training metrics; names with a group ("model/nll") keep it
        self.logger.scalars({k if "/" in k else f"train/{k}": v for k, v in metrics.items()}, state.step)
        self.logger.scalars({"train/steps_per_second": speed}, state.step)
        self.progress.update(self.task, completed=state.step, speed=speed, ret=state.last_return)
        self.last_step, self.last_time = state.step, now


def check_precision(agent: Any, precision: str) -> None:
    """Refuse ``train.precision`` values the agent (an instance or its class) was not built for: under
    bf16-mixed its networks must cast their outputs back to float32 (``SUPPORTS_BF16_MIXED``)."""
    if precision != "fp32" and not getattr(agent, "SUPPORTS_BF16_MIXED", False):
        name = getattr(agent, "algo", type(agent).__name__)
        raise ConfigError(f"train.precision={precision!r} is supported for sac and srl only, not {name}")


def learn(agent: Any, buffer: ReplayBuffer, transitions: int, state: TrainState, run_dir: Path,
          precision: str = "fp32") -> dict[str, float]:
    """``gradient_steps`` updates per new transition; stops on a non-finite loss, naming it and the step."""
    metrics: dict[str, float] = {}
    for _ in range(agent.config.gradient_steps * int(transitions)):
        # one autocast block per update: its cached bfloat16 weights must not outlive an optimiser step
        with mixed_precision(precision, buffer.device):
            metrics = agent.update(buffer.sample(agent.config.batch_size))
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(f"{bad[0]} became {metrics[bad[0]]} at step {state.step}; the last good checkpoint "
                               f"is kept in {run_dir / 'checkpoints'}")
    return metrics


def evaluate_if_due(agent: Any, eval_env: Any, config: TrainConfig, state: TrainState, logger: RunLogger,
                     progress: Progress, run_dir: Path) -> bool:
    """Evaluate (and snapshot) when due; True when the evaluation reached ``config.stop_return``."""
    if not config.eval_every or state.step < state.next_eval:
        return False
    state.next_eval += config.eval_every * math.ceil((state.step - state.next_eval + 1) / config.eval_every)
    mean_return = evaluate(agent, eval_env, config.eval_episodes, seed=config.seed + 100_000)
    state.evals.append((state.step, mean_return))
    logger.scalars({"eval/return": mean_return}, state.step)
    if config.progress:  # a plain line too, so logs of non-interactive runs show progress
        progress.console.print(f"step {state.step:>9,}  eval return {mean_return:9.1f}")
    if config.snapshots:
        save_checkpoint(run_dir, deployment_bundle(agent), name=snapshot_name(state.step))
    return mean_return >= config.stop_return


def end_of_step(run_dir: Path, config: LoopConfig, state: TrainState, bundle: Callable[[], dict[str, Any]],
                callbacks: Sequence[Callable[[TrainState], None]]) -> None:
    """Checkpoint when due (for loops whose checkpoints can be taken at any step), then run the callbacks."""
    if state.step >= state.next_checkpoint:
        state.next_checkpoint = state.step + config.checkpoint_every
        save_checkpoint(run_dir, bundle())
    for callback in callbacks:
        callback(state)


def finish_run(agent: Any, eval_env: Any, config: TrainConfig, state: TrainState, logger: RunLogger, run_dir: Path,
            bundle: dict[str, Any]) -> None:
    """Final evaluation (unless one was just done), last checkpoint and the deployment checkpoint."""
    if not state.evals or state.evals[-1][0] != state.step:
        mean_return = evaluate(agent, eval_env, config.eval_episodes, seed=config.seed + 100_000)
        state.evals.append((state.step, mean_return))
        logger.scalars({"eval/return": mean_return}, state.step)
    save_checkpoint(run_dir, bundle)
    save_checkpoint(run_dir, deployment_bundle(agent), name=DEPLOY)
    logger.close()


def train_online(
    agent: Any,
    env: Any,
    eval_env: Any,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
) -> TrainState:
    """Off-policy online training: act, store, update, evaluate, checkpoint.

    Periodic checkpoints are taken at episode ends, so resuming from them needs no physics snapshot: the
    env's generators are restored and the next episode starts exactly as it would have. The final checkpoint
    holds the episode in progress (physics included), so a finished run extended with more steps continues
    exactly as one longer run would have.

    Args:
        agent: has ``act``, ``update``, ``state_dict``, ``load_state_dict`` and ``config``
            (with ``buffer_size``, ``batch_size``, ``learning_starts``, ``gradient_steps``).
        env: training env from :func:`cadence.envs.make`.
        eval_env: a separate env for evaluation.
        config: loop settings.
        run_dir: the run folder (TensorBoard events and ``checkpoints/``).
        resume: continue from ``run_dir/checkpoints/last.pt``.
        callbacks: called with the state after every decision (an exception stops training).

    Returns:
        The final :class:`TrainState`.
    """
    run_dir = Path(run_dir)
    check_precision(agent, config.precision)
    agent_cfg = agent.config
    # agents that learn from primitive transitions (SRL) store info["primitive"]; others store decisions
    primitive = getattr(agent, "stores_primitive", False)
    act_shape = env.primitive_action_space.shape if primitive else env.action_space.shape
    buffer = ReplayBuffer(agent_cfg.buffer_size, env.observation_space.shape, act_shape, config.device)
    state = TrainState(next_eval=config.eval_every, next_checkpoint=config.checkpoint_every)
    episode_return, episode_start = 0.0, True
    if resume:
        bundle, state = restore_run(run_dir, agent, buffer, "env_rng")
        if "episode" in bundle:  # the final checkpoint of a finished run: continue its episode
            set_episode_state(env, bundle["episode"]["env"])
            obs, episode_return, episode_start = (bundle["episode"][k] for k in ("obs", "return", "start"))
        else:  # a checkpoint taken at an episode end
            set_env_rng_state(env, bundle["env_rng"])
            obs, _ = env.reset()
    else:
        obs, _ = env.reset(seed=config.seed)
        env.action_space.seed(config.seed)
    logger = RunLogger(run_dir, resume_step=state.step if resume else None, write_layout=not resume)

    metrics: dict[str, float] = {}
    with progress_bar(config.progress) as progress:
        log = PeriodicLog(logger, progress, agent.algo.upper(), config, state)
        while state.step < config.total_steps:
            # act: uniform random actions until learning starts
            if state.step < agent_cfg.learning_starts:
                action = env.action_space.sample()
            else:
                action = agent.act(obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            if primitive:
                p = info["primitive"]
                starts = np.zeros(len(p["reward"]), dtype=bool)
                starts[0] = episode_start
                buffer.add(p["obs"], p["action"], p["reward"], p["next_obs"], p["terminated"], p["truncated"],
                           episode_start=starts)
            else:
                buffer.add(obs, action, reward, next_obs, terminated, truncated, episode_start=episode_start)
            obs, episode_start = next_obs, False
            episode_return += reward
            state.step += info["primitive_steps"]
            state.decisions += 1

            # learn: gradient_steps per stored transition (per primitive step for primitive learners)
            if state.step >= agent_cfg.learning_starts:
                stored = info["primitive_steps"] if primitive else 1
                metrics = learn(agent, buffer, stored, state, run_dir, config.precision) or metrics

            # log
            log(state, metrics)

            # evaluate; stopping early (config.stop_return) waits for this step's episode bookkeeping
            reached = evaluate_if_due(agent, eval_env, config, state, logger, progress, run_dir)

            # episode end: log, checkpoint if one is due, reset. The checkpoint is written before
            # the reset so that a resumed run draws the same next episode.
            if terminated or truncated:
                state.episodes += 1
                state.last_return = float(episode_return)
                logger.scalars({"episode_return": episode_return}, state.step, prefix="train/")
                if state.step >= state.next_checkpoint:
                    state.next_checkpoint = state.step + config.checkpoint_every
                    save_checkpoint(run_dir, checkpoint_bundle(agent, buffer, env, state))
                obs, _ = env.reset()
                episode_return, episode_start = 0.0, True

            for callback in callbacks:
                callback(state)
            if reached:
                break

    # the run may stop mid-episode: keep that episode, so that extending the run continues exactly
    final = checkpoint_bundle(agent, buffer, env, state)
    in_progress = episode_state(env)
    if in_progress is not None:
        final["episode"] = {"env": in_progress, "obs": obs, "return": episode_return, "start": episode_start}
    finish_run(agent, eval_env, config, state, logger, run_dir, final)
    return state



def train_batched(
    agent: Any,
    env: Any,
    eval_env: Any,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
) -> TrainState:
    """:func:`train_online` with ``env`` a :class:`cadence.envs.batched.BatchedEnv` of ``config.num_envs`` worlds.

    Every iteration each world takes one decision; all their transitions are stored and the agent makes
    ``gradient_steps`` updates per stored transition, as with one env. Worlds reset on their own (autoreset).
    Checkpoints hold the worlds' physics states, so a resumed run continues exactly, mid-episode included.
    """
    run_dir = Path(run_dir)
    check_precision(agent, config.precision)
    agent_cfg, n = agent.config, env.n
    primitive = getattr(agent, "stores_primitive", False)
    act_dim = env.single_action_space.shape[0]
    # one decision's action: J actions in sequence mode (SRL), else one (repeated J times by SAC-J)
    per_decision = int(env.intervals.max()) if env.sequence else 1
    low = np.tile(env.single_action_space.low, per_decision)
    high = np.tile(env.single_action_space.high, per_decision)
    act_shape = (act_dim,) if primitive else low.shape
    buffer = ReplayBuffer(agent_cfg.buffer_size, env.single_observation_space.shape, act_shape, config.device)
    state = TrainState(next_eval=config.eval_every, next_checkpoint=config.checkpoint_every)
    returns, starts = np.zeros(n), np.ones(n, bool)
    if resume:
        bundle, state = restore_run(run_dir, agent, buffer, "batched_env")
        env.load_state_dict(bundle["batched_env"])
        returns, starts = bundle["episode_returns"], bundle["episode_starts"]
        obs = env._out(env._obs).numpy()
    else:
        obs = env.reset(seed=config.seed * 100_003).numpy()  # far from the eval episodes' seeds
    logger = RunLogger(run_dir, resume_step=state.step if resume else None, write_layout=not resume)

    def bundle_now() -> dict[str, Any]:
        return {"algo": agent.algo, "agent": agent.state_dict(), "buffer": buffer.state_dict(), "rng": rng_state(),
                "batched_env": env.state_dict(), "episode_returns": returns.copy(), "episode_starts": starts.copy(),
                "train_state": dataclasses.asdict(state), "cadence_version": cadence.__version__}

    metrics: dict[str, float] = {}
    with progress_bar(config.progress) as progress:
        log = PeriodicLog(logger, progress, f"{agent.algo.upper()} x{n}", config, state)
        while state.step < config.total_steps:
            if state.step < agent_cfg.learning_starts:  # uniform actions (numpy's generator, checkpointed)
                actions = np.random.uniform(low, high, (n, *low.shape)).astype(np.float32)
            else:
                actions = agent.act(obs)
            env_actions = actions.reshape(n, -1, act_dim) if env.sequence else actions
            next_obs, reward, terminated, truncated, info = env.step(env_actions, record_primitive=primitive)
            next_obs_np, ended = next_obs.numpy(), (terminated | truncated).numpy()
            final = next_obs_np.copy()
            if ended.any():
                final[ended] = info["final_obs"].numpy()[ended]
            if primitive:
                p = info["primitive"]
                first = np.r_[True, p["world"][1:] != p["world"][:-1]]  # a world's first record this decision
                buffer.add(p["obs"], p["action"], p["reward"], p["next_obs"], p["terminated"], p["truncated"],
                           episode_start=first & starts[p["world"]])
            else:
                buffer.add(obs, actions, reward.numpy(), final, terminated.numpy(), truncated.numpy(),
                           episode_start=starts)
            new_steps = int(info["primitive_steps"].sum())
            state.step += new_steps
            state.decisions += n
            returns += reward.numpy()
            starts = ended.copy()
            obs = next_obs_np

            if state.step >= agent_cfg.learning_starts:
                stored = new_steps if primitive else n
                metrics = learn(agent, buffer, stored, state, run_dir, config.precision) or metrics

            log(state, metrics)

            reached = evaluate_if_due(agent, eval_env, config, state, logger, progress, run_dir)

            for i in np.flatnonzero(ended):
                state.episodes += 1
                state.last_return = float(returns[i])
                logger.scalars({"episode_return": returns[i]}, state.step, prefix="train/")
                returns[i] = 0.0
            # the worlds' states are saved: any step will do
            end_of_step(run_dir, config, state, bundle_now, callbacks)
            if reached:  # config.stop_return
                break

    finish_run(agent, eval_env, config, state, logger, run_dir, bundle_now())
    return state
