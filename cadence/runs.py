"""Runs: start, resume and evaluate training runs in run folders (see :mod:`cadence.run_folder` for the files).

:func:`train` looks up the algorithm's recipe (:mod:`cadence.recipes`), which builds and validates everything,
then writes the folder's config, runs the recipe's loop and closes the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadence.agents.planning import CEMConfig, CEMPlanner
from cadence.checkpoint import DEPLOY, LAST, CheckpointError, checkpoint_path, load_checkpoint
from cadence.config import ConfigError, load_sections
from cadence.envs import make
from cadence.envs.rewards import supported_envs
from cadence.envs.terminations import termination_fn
from cadence.evaluation.fas import ASL_GRID, FASResult, fas_sweep, fas_sweep_batched
from cadence.evaluation.plots import plot_fas
from cadence.io import atomic_write_json
from cadence.logging import RunLogger
from cadence.loops import Hook, TrainState, check_precision
from cadence.recipes import recipe
from cadence.run_folder import (
    CONFIG_FILE,
    METRICS_FILE,
    close_run,
    default_run_dir,
    read_config_file,
    read_metrics,
    write_config,
    write_metrics,
)
from cadence.seeding import seed_everything

__all__ = ["CONFIG_FILE", "METRICS_FILE", "default_run_dir", "evaluate_fas", "load_agent", "load_planner",
           "read_run_config", "resolve_config", "train", "train_or_resume", "write_metrics"]


def resolve_config(algo: str, base: dict[str, dict[str, Any]] | None = None, config_file: str | Path | None = None,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``{"train": TrainConfig, "agent": <Algo>Config}`` from defaults, a base dict, a TOML file and overrides."""
    spec = recipe(algo)
    return load_sections({"train": spec.train_config_cls, "agent": spec.config_cls}, base, config_file, overrides)


def read_run_config(run_dir: str | Path) -> tuple[str, dict[str, Any]]:
    """The algo and config sections of an existing run folder."""
    algo, raw = read_config_file(run_dir)
    return algo, resolve_config(algo, base=raw)


def train(
    algo: str,
    sections: dict[str, Any],
    run_dir: str | Path,
    *,
    resume: bool = False,
    hooks: Iterable[Hook] = (),
    callbacks: Iterable[Callable[[TrainState], None]] = (),
) -> TrainState:
    """Create (or resume) a run folder and train ``algo`` in it; ``hooks`` act at the loop's events."""
    spec = recipe(algo)
    train_cfg = sections["train"]
    run_dir = Path(run_dir)
    if resume:
        load_checkpoint(run_dir)  # fail before anything is written if the checkpoint is missing or corrupt
    elif checkpoint_path(run_dir, LAST).exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another folder")
    _require_device(train_cfg.device)
    check_precision(spec.agent_cls, train_cfg.precision)
    if train_cfg.torch_threads > 0:
        torch.set_num_threads(train_cfg.torch_threads)
    seed_everything(train_cfg.seed)
    prepared = spec.prepare(spec, sections)
    write_config(run_dir, algo, sections)
    state = prepared.run(run_dir, resume, hooks, callbacks)
    return close_run(algo, sections, run_dir, state, prepared.env_id, prepared.extra_metrics(state))


def _require_device(name: str) -> None:
    """Fail before any work when ``train.device`` names hardware this machine lacks."""
    device = torch.device(name)
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}[device.type]
    if device.type == "cuda" and available and device.index is not None:
        available = device.index < torch.cuda.device_count()
    if not available:
        raise ConfigError(f"train.device={name!r} is not available on this machine (torch {torch.__version__}); "
                          "use train.device=cpu")


def train_or_resume(algo: str, sections: dict[str, Any], run_dir: str | Path) -> list[tuple[int, float]]:
    """Train ``algo`` in ``run_dir`` to ``sections["train"].total_steps``, doing only what is left.

    A finished run with at least that budget is returned as it is; an interrupted one, or one finished
    with a smaller budget, resumes under its own config; otherwise a new run starts with ``sections``.
    Returns the evaluation curve ``[(step, mean return), ...]``.
    """
    run_dir, steps = Path(run_dir), sections["train"].total_steps
    metrics = read_metrics(run_dir)
    if metrics and (metrics.get("steps", 0) >= steps or metrics.get("stopped_early")):
        return [tuple(e) for e in metrics["evals"]]
    if checkpoint_path(run_dir).is_file():
        _, own = read_run_config(run_dir)
        own["train"] = dataclasses.replace(own["train"], total_steps=steps)
        state = train(algo, own, run_dir, resume=True)
    else:
        state = train(algo, sections, run_dir)
    return [tuple(e) for e in state.evals]


def load_agent(run_dir: str | Path, checkpoint: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Rebuild a run's agent from its config and a checkpoint: ``checkpoint`` if given (a file name in
    ``checkpoints/``, e.g. a snapshot ``agent_20000.pt``), else the deployment one, else the last."""
    algo, sections = read_run_config(run_dir)
    spec = recipe(algo)
    name = checkpoint or (DEPLOY if checkpoint_path(run_dir, DEPLOY).is_file() else LAST)
    bundle = load_checkpoint(run_dir, name, required=("algo", "agent"))
    if bundle["algo"] != algo:
        raise CheckpointError(f"checkpoint in {run_dir} holds a {bundle['algo']!r} agent but config.toml says {algo!r}")
    env = make(sections["train"].env, **spec.env_kwargs(sections["agent"]))
    agent = spec.agent_cls(env.observation_space, env.action_space, sections["agent"])
    agent.load_state_dict(bundle["agent"])
    return agent, sections


def load_planner(run_dir: str | Path, config: CEMConfig = CEMConfig()) -> CEMPlanner:
    """CEM-MPC through the world model that a model-based run (SRL) learned: the online-planning baseline."""
    algo, sections = read_run_config(run_dir)
    spec = recipe(algo)
    bundle = load_checkpoint(run_dir, LAST, required=("algo", "agent"))
    if bundle["algo"] != algo or "model" not in bundle["agent"]:
        raise CheckpointError(f"{run_dir} holds a {bundle['algo']!r} run without a learned model; "
                              "MPC needs a model-based run such as srl")
    env_id = sections["train"].env
    env = make(env_id, **spec.env_kwargs(sections["agent"]))
    agent = spec.agent_cls(env.observation_space, env.action_space, sections["agent"])
    agent.load_state_dict(bundle["agent"])
    low, high = env.primitive_action_space.low, env.primitive_action_space.high
    return CEMPlanner(agent.model.eval(), low, high, config, termination_fn=termination_fn(env_id),
                      generator=torch.Generator().manual_seed(0))


def evaluate_fas(run_dir: str | Path, asl_grid: Sequence[int] = ASL_GRID, episodes: int = 10, seed: int = 0,
                 on_asl: Callable[[int, Any], None] | None = None, planner: CEMConfig | None = None,
                 batched: bool | None = None) -> FASResult:
    """FAS sweep of a trained run; writes fas.json and fas.png (fas_mpc.* with a planner) and logs eval/fas.

    With ``planner`` set, the run's learned model is planned through by CEM-MPC instead of running its actor.
    ``batched`` runs every (ASL, episode) world at once on the rollout backend (same seeds, same FAS); the
    default is batched when the env has torch physics functions, else the sequential Gymnasium loop.
    """
    run_dir = Path(run_dir)
    if planner is not None:
        policy, label, suffix = load_planner(run_dir, planner), "MPC", "_mpc"
        sections = read_run_config(run_dir)[1]
    else:
        policy, sections = load_agent(run_dir)
        label, suffix = policy.algo.upper(), ""
    env_id = sections["train"].env
    if batched is None:
        batched = env_id in supported_envs()
    if batched:  # the planner plans one state at a time
        result = fas_sweep_batched(env_id, policy.act_sequence, asl_grid, episodes, seed,
                                   batch_policy=planner is None)
        if on_asl is not None:
            for asl, returns in zip(result.asl, result.returns, strict=True):
                on_asl(asl, np.asarray(returns))
    else:
        result = fas_sweep(env_id, policy.act_sequence, asl_grid, episodes, seed, on_asl=on_asl)
    atomic_write_json(run_dir / f"fas{suffix}.json", result.to_dict())
    plot_fas({label: result}, run_dir / f"fas{suffix}.png")
    write_metrics(run_dir, {f"fas{suffix}": result.fas})
    logger = RunLogger(run_dir)
    logger.scalars({f"eval/fas{suffix}": result.fas}, step=sections["train"].total_steps)
    logger.close()
    return result
