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
from cadence.envs.rewards import supports
from cadence.envs.terminations import termination_fn
from cadence.evaluation.fas import ASL_GRID, FASResult, check_asl_grid, fas_sweep, fas_sweep_batched
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
    """``{"train": TrainConfig, "agent": <Algo>Config}`` from, in rising priority: the algo's defaults, its per-env
    defaults (:data:`cadence.recipes.ONLINE_ENV_DEFAULTS`), a base dict, a TOML file and ``--set`` overrides."""
    spec = recipe(algo)
    schema = {"train": spec.train_config_cls, "agent": spec.config_cls}
    sections = load_sections(schema, base, config_file, overrides)
    per_env = spec.env_defaults(sections["train"].env)
    if not per_env:
        return sections
    base = base or {}
    layered = {name: {**per_env.get(name, {}), **base.get(name, {})} for name in schema}
    return load_sections(schema, layered, config_file, overrides)


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
    on_start: Callable[[Path], None] | None = None,
    labels: dict[str, str] | None = None,
) -> TrainState:
    """Create (or resume) a run folder and train ``algo`` in it; ``hooks`` act at the loop's events.
    ``on_start(run_dir)`` is called once everything is validated and the folder is written; ``labels`` lead the
    run's HParams columns (a sweep's ``Method``)."""
    spec = recipe(algo)
    train_cfg = sections["train"]
    run_dir = Path(run_dir)
    if resume:
        load_checkpoint(run_dir)  # fail before anything is written if the checkpoint is missing or corrupt
        _check_same_source(run_dir, train_cfg)
    elif checkpoint_path(run_dir, LAST).exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another folder")
    elif list(run_dir.glob("events.out.tfevents.*")):  # a run that died before its first checkpoint
        raise ConfigError(f"{run_dir} holds TensorBoard events of an earlier run that wrote no checkpoint; training "
                          "into it would mix two runs' curves. Delete the folder or choose another")
    _require_device(train_cfg.device)
    check_precision(spec.agent_cls, train_cfg.precision)
    if train_cfg.torch_threads > 0:
        torch.set_num_threads(train_cfg.torch_threads)
    seed_everything(train_cfg.seed)
    prepared = spec.prepare(spec, sections)
    write_config(run_dir, algo, sections)
    if on_start is not None:
        on_start(run_dir)
    state = prepared.run(run_dir, resume, hooks, callbacks)
    return close_run(algo, sections, run_dir, state, prepared.env_id, prepared.extra_metrics(state), labels)


def _check_same_source(run_dir: Path, train_cfg: Any) -> None:
    """A resumed run keeps what it learns from: its env, task sequence or data set (nothing is written otherwise)."""
    stored = read_run_config(run_dir)[1]["train"]
    for key in ("env", "sequence", "dataset"):
        own, given = getattr(stored, key, None), getattr(train_cfg, key, None)
        if own != given:
            raise ConfigError(f"{run_dir} learns {key} {own!r}; it cannot resume under {key} {given!r}. Resume with "
                              "its own config (cadence train ALGO --resume RUN_DIR), or start a new run")


def _require_device(name: str) -> None:
    """Fail before any work when ``train.device`` names hardware this machine lacks."""
    device = torch.device(name)
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}[device.type]
    if device.type == "cuda" and available and device.index is not None:
        available = device.index < torch.cuda.device_count()
    if not available:
        raise ConfigError(f"train.device={name!r} is not available on this machine (torch {torch.__version__}); "
                          "use train.device=cpu")


def train_or_resume(algo: str, sections: dict[str, Any], run_dir: str | Path,
                    labels: dict[str, str] | None = None) -> list[tuple[int, float]]:
    """Train ``algo`` in ``run_dir`` to ``sections["train"].total_steps``, doing only what is left.

    A finished run with at least that budget is returned as it is; an interrupted one, or one finished
    with a smaller budget, resumes under its own config; otherwise a new run starts with ``sections``.
    Returns the evaluation curve ``[(step, mean return), ...]``; ``labels`` as for :func:`train`.
    """
    run_dir, steps = Path(run_dir), sections["train"].total_steps
    metrics = read_metrics(run_dir)
    if metrics and (metrics.get("steps", 0) >= steps or metrics.get("stopped_early")):
        return [tuple(e) for e in metrics["evals"]]
    if checkpoint_path(run_dir).is_file():
        _, own = read_run_config(run_dir)
        own["train"] = dataclasses.replace(own["train"], total_steps=steps)
        state = train(algo, own, run_dir, resume=True, labels=labels)
    else:
        state = train(algo, sections, run_dir, labels=labels)
    return [tuple(e) for e in state.evals]


def load_agent(run_dir: str | Path, checkpoint: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Rebuild a run's agent from its config and a checkpoint: ``checkpoint`` if given (a file name in
    ``checkpoints/``, e.g. a snapshot ``agent_20000.pt``), else the deployment one, else the last."""
    algo, sections = read_run_config(run_dir)
    spec = _single_task_recipe(algo, run_dir)
    name = checkpoint or (DEPLOY if checkpoint_path(run_dir, DEPLOY).is_file() else LAST)
    bundle = load_checkpoint(run_dir, name, required=("algo", "agent"))
    if bundle["algo"] != algo:
        raise CheckpointError(f"checkpoint in {run_dir} holds a {bundle['algo']!r} agent but config.toml says {algo!r}")
    env = make(sections["train"].env, **spec.env_kwargs(sections["agent"]))
    agent = spec.agent_cls(env.observation_space, env.action_space, sections["agent"])
    agent.load_state_dict(bundle["agent"])
    return agent, sections


def _single_task_recipe(algo: str, run_dir: str | Path) -> Any:
    """The recipe of a run that trained one agent on one env; a continual run has its own evaluation."""
    spec = recipe(algo)
    if spec.continual:
        raise ConfigError(f"{run_dir} is a continual {algo} run over a task sequence: its evaluation is the "
                          "task-by-task matrices it wrote (continual_return.json, continual_model_error.json), "
                          "not a FAS sweep")
    return spec


def load_planner(run_dir: str | Path, config: CEMConfig = CEMConfig()) -> CEMPlanner:
    """CEM-MPC through the world model that a model-based run (SRL) learned: the online-planning baseline."""
    algo, sections = read_run_config(run_dir)
    spec = _single_task_recipe(algo, run_dir)
    bundle = load_checkpoint(run_dir, LAST, required=("algo", "agent"))
    if bundle["algo"] != algo or "model" not in bundle["agent"]:
        raise CheckpointError(f"{run_dir} holds a {bundle['algo']!r} run without a learned model; "
                              "MPC needs a model-based run such as srl")
    env_id = sections["train"].env
    env = make(env_id, **spec.env_kwargs(sections["agent"]))
    agent = spec.agent_cls(env.observation_space, env.action_space, sections["agent"])
    agent.load_state_dict(bundle["agent"])
    low, high = env.primitive_action_space.low, env.primitive_action_space.high
    return CEMPlanner(agent.model.eval(), low, high, config, termination_fn=termination_fn(env_id, env),
                      generator=torch.Generator().manual_seed(0))


def evaluate_fas(run_dir: str | Path, asl_grid: Sequence[int] = ASL_GRID, episodes: int = 10, seed: int = 0,
                 on_asl: Callable[[int, Any], None] | None = None, planner: CEMConfig | None = None,
                 batched: bool | None = None) -> FASResult:
    """FAS sweep of a trained run; writes its result files and logs it to the run's TensorBoard.

    A sweep over the full grid (1, 2, 4, ..., 30) writes ``fas.json`` and ``fas.png`` (``fas_mpc.*`` with a planner),
    sets ``metrics.json["fas"]`` and logs ``eval/fas``, the return at each ASL (``fas/return_asl01``, ...) and the
    return-against-ASL figure (``fas/return_vs_asl``) at the run's trained step. A sweep over part of the grid is
    no FAS comparable with the paper's: it goes to ``fas_partial.json`` / ``.png`` only.

    With ``planner`` set, the run's learned model is planned through by CEM-MPC instead of running its actor.
    ``batched`` runs every (ASL, episode) world at once on the rollout backend (same seeds, same FAS); the
    default is batched when the env has torch physics functions, else the sequential Gymnasium loop.
    """
    run_dir = Path(run_dir)
    fixed = getattr(read_run_config(run_dir)[1]["train"], "task", None)
    if fixed is not None:  # the sweeps build their envs from the env id alone
        raise ConfigError(f"{run_dir} was trained on task {fixed!r} of its family, but a FAS sweep runs the family's "
                          "default task; sweeping a fixed-task run is not supported yet")
    if planner is not None:
        policy, label, suffix = load_planner(run_dir, planner), "MPC", "_mpc"
        sections = read_run_config(run_dir)[1]
    else:
        policy, sections = load_agent(run_dir)
        label, suffix = policy.algo.upper(), ""
    steps = int(read_metrics(run_dir).get("steps", sections["train"].total_steps))
    return evaluate_policy_fas(policy, sections["train"].env, run_dir, label, asl_grid, episodes, seed, on_asl,
                               batched=batched, batch_policy=planner is None, suffix=suffix, run_step=steps)


def evaluate_policy_fas(policy: Any, env_id: str, out_dir: str | Path, label: str,
                        asl_grid: Sequence[int] = ASL_GRID, episodes: int = 10, seed: int = 0,
                        on_asl: Callable[[int, Any], None] | None = None, *, batched: bool | None = None,
                        batch_policy: bool = True, suffix: str = "", run_step: int | None = None) -> FASResult:
    """FAS sweep of any policy with ``act_sequence(obs, length)`` (a cadence agent, a planner, a stable-baselines3
    policy); writes ``fas{suffix}.json`` and ``.png`` in ``out_dir`` (``fas_partial{suffix}.*`` for part of the
    grid). With ``run_step`` (``out_dir`` is a run folder trained that many steps) it also updates metrics.json and
    the run's TensorBoard, once per trained step."""
    out_dir = Path(out_dir)
    grid = check_fas_grid(asl_grid)
    if batched is None:
        batched = supports(env_id)
    if batched:  # a planner plans one state at a time (batch_policy=False)
        result = fas_sweep_batched(env_id, policy.act_sequence, grid, episodes, seed, batch_policy=batch_policy)
        if on_asl is not None:
            for asl, returns in zip(result.asl, result.returns, strict=True):
                on_asl(asl, np.asarray(returns))
    else:
        result = fas_sweep(env_id, policy.act_sequence, grid, episodes, seed, on_asl=on_asl)
    partial = grid != ASL_GRID
    stem = fas_stem(grid, suffix)
    atomic_write_json(out_dir / f"{stem}.json", {**result.to_dict(), "label": label, "episodes": episodes,
                                                  "seed": seed, "trained_steps": run_step, "partial": partial})
    title = (f"{env_id}: {label}, return against ASL ({episodes} episodes per ASL"
             + (f", {run_step:,} training steps)" if run_step is not None else ")"))
    plot = plot_fas({label: result}, out_dir / f"{stem}.png", title=title)
    if run_step is not None and not partial:
        logged = read_metrics(out_dir).get(f"fas{suffix}_logged_step")
        write_metrics(out_dir, {f"fas{suffix}": result.fas, f"fas{suffix}_logged_step": run_step})
        if logged != run_step:  # a re-run of the same sweep adds no second point at the same step
            log_fas(out_dir, result, run_step, suffix, plot)
    return result


def fas_stem(grid: Sequence[int], suffix: str = "") -> str:
    """The file stem a sweep over ``grid`` is written to: ``fas`` for the full grid, ``fas_partial`` otherwise
    (``suffix`` ``_mpc`` for a planner)."""
    return f"fas{suffix}" if tuple(grid) == ASL_GRID else f"fas_partial{suffix}"


def check_fas_grid(asl_grid: Sequence[int]) -> tuple[int, ...]:
    """An ASL grid within FAS's range 1..30 (FAS integrates return over ASL and divides by 30)."""
    grid = check_asl_grid(asl_grid)
    if grid[-1] > ASL_GRID[-1]:
        raise ValueError(f"ASL {grid[-1]} is outside FAS's grid 1..{ASL_GRID[-1]} (the paper's); use ASL values "
                         f"up to {ASL_GRID[-1]}")
    return grid


def log_fas(run_dir: Path, result: FASResult, step: int, suffix: str, plot: Path) -> None:
    """``eval/fas``, one scalar per ASL and the return-against-ASL figure, at the run's trained step; and the
    curve itself as ``fas/return_by_asl`` whose x axis ("step") is the ASL, in the sub-run ``fas_by_asl/``, which
    holds the latest sweep only (TensorBoard then draws one line per run: SRL against SAC at a glance)."""
    import shutil

    import matplotlib.image

    curve = run_dir / f"fas{suffix}_by_asl"
    shutil.rmtree(curve, ignore_errors=True)
    curve_logger = RunLogger(curve)
    for asl, mean in zip(result.asl, result.mean, strict=True):
        curve_logger.scalars({f"fas{suffix}/return_by_asl": float(mean)}, int(asl))
    curve_logger.close()
    logger = RunLogger(run_dir)
    logger.scalars({f"eval/fas{suffix}": result.fas}, step)
    logger.scalars({f"fas{suffix}/return_asl{a:02d}": float(m) for a, m in zip(result.asl, result.mean, strict=True)},
                   step)
    image = matplotlib.image.imread(plot)[..., :3]
    logger.writer.add_image(f"fas{suffix}/return_vs_asl", image, step, dataformats="HWC")
    logger.close()
