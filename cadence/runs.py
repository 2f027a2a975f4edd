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
from cadence.config import ConfigError, load_sections, to_dict, toml_value
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
    run_lock,
    write_config,
    write_metrics,
)
from cadence.seeding import seed_everything

__all__ = ["CONFIG_FILE", "METRICS_FILE", "config_changes", "default_run_dir", "evaluate_fas", "load_agent",
           "load_planner", "read_run_config", "resolve_config", "run_changes", "train", "train_or_resume",
           "write_metrics"]


def resolve_config(algo: str, base: dict[str, dict[str, Any]] | None = None, config_file: str | Path | None = None,
                   overrides: Sequence[str] = (), flags: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{"train": TrainConfig, "agent": <Algo>Config}`` from, in rising priority: the algo's defaults, its per-env
    defaults (:data:`cadence.recipes.ONLINE_ENV_DEFAULTS`), a base dict, a TOML file, explicit command-line
    ``flags`` and ``--set`` overrides."""
    spec = recipe(algo)
    schema = {"train": spec.train_config_cls, "agent": spec.config_cls}
    sections = load_sections(schema, base, config_file, overrides, flags)
    per_env = spec.env_defaults(sections["train"].env)
    if not per_env:
        return sections
    base = base or {}
    layered = {name: {**per_env.get(name, {}), **base.get(name, {})} for name in schema}
    return load_sections(schema, layered, config_file, overrides, flags)


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
    on_resume: Callable[[int], None] | None = None,
    labels: dict[str, str] | None = None,
) -> TrainState:
    """Create (or resume) a run folder and train ``algo`` in it; ``hooks`` act at the loop's events.
    ``on_start(run_dir)`` is called once everything is validated and the folder is written, ``on_resume(step)``
    with the step a resumed run continues from; ``labels`` lead the run's HParams columns (a sweep's ``Method``).

    The run holds the folder's lock (:func:`cadence.run_folder.run_lock`) throughout: a second trainer in the same
    folder is refused with :class:`cadence.run_folder.RunFolderBusy`."""
    spec = recipe(algo)
    train_cfg = sections["train"]
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        resumed_at = None
        if resume:
            # fail before anything is written if the checkpoint is missing or corrupt
            resumed_at = int(load_checkpoint(run_dir).get("counters", {}).get("step", 0))
            _check_same_source(run_dir, train_cfg)
        elif checkpoint_path(run_dir, LAST).exists():
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another folder")
        elif list(run_dir.glob("events.out.tfevents.*")):  # a run that died before its first checkpoint
            raise ConfigError(f"{run_dir} holds TensorBoard events of an earlier run that wrote no checkpoint; "
                              "training into it would mix two runs' curves. Delete the folder or choose another")
        _require_device(train_cfg.device)
        check_precision(spec.agent_cls, train_cfg.precision)
        if train_cfg.torch_threads > 0:
            torch.set_num_threads(train_cfg.torch_threads)
        seed_everything(train_cfg.seed)
        prepared = spec.prepare(spec, sections)
        write_config(run_dir, algo, sections)
        if on_start is not None:
            on_start(run_dir)
        if on_resume is not None and resumed_at is not None:
            on_resume(resumed_at)
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


#: keys a run may change between its start and a resume without changing what it learns: display and speed only
#: (``train.total_steps`` is checked apart: it may grow, which extends the run)
RESUMABLE_KEYS = ("train.progress", "train.torch_threads")


def config_changes(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``section.key -> (stored value, given value)`` for every key where two resolved configs differ, besides
    :data:`RESUMABLE_KEYS` and a grown ``train.total_steps`` (a smaller budget than the run's is a change: the run
    trained longer than the given config says)."""
    changes: dict[str, tuple[Any, Any]] = {}
    for section in sorted(set(stored) | set(given)):
        own = to_dict(stored[section]) if section in stored else {}
        new = to_dict(given[section]) if section in given else {}
        for key in sorted(set(own) | set(new)):
            name = f"{section}.{key}"
            if name in RESUMABLE_KEYS or own.get(key) == new.get(key):
                continue
            if name == "train.total_steps" and new.get(key, 0) > own.get(key, 0):
                continue
            changes[name] = (own.get(key), new.get(key))
    return changes


def run_changes(run_dir: str | Path, algo: str, sections: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """How ``algo`` with ``sections`` differs from what the run in ``run_dir`` trained with (:func:`config_changes`;
    ``algo`` too). Empty when they agree, and when the folder holds no run to continue (no checkpoint, no
    metrics.json, or no config.toml): such a folder starts afresh."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not (checkpoint_path(run_dir).is_file() or read_metrics(run_dir)):
        return {}
    own_algo, own = read_run_config(run_dir)
    if own_algo != algo:
        return {"algo": (own_algo, algo)}
    return config_changes(own, sections)


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """``agent.actor_lr 0.0003 -> 0.1, agent.hidden_sizes [256, 256] -> [8]``: stored value, then given."""
    shown = lambda v: "(unset)" if v is None else toml_value(v)
    return ", ".join(f"{key} {shown(old)} -> {shown(new)}" for key, (old, new) in changes.items())


def train_or_resume(algo: str, sections: dict[str, Any], run_dir: str | Path,
                    labels: dict[str, str] | None = None) -> list[tuple[int, float]]:
    """Train ``algo`` in ``run_dir`` to ``sections["train"].total_steps``, doing only what is left.

    A finished run with at least that budget is returned as it is; an interrupted one, or one finished
    with a smaller budget, resumes. A run trained with other settings than ``sections`` (:func:`run_changes`) is
    refused with a :class:`ConfigError` naming the keys: its results would be reported under settings it was not
    trained with. Otherwise a new run starts with ``sections``.
    Returns the evaluation curve ``[(step, mean return), ...]``; ``labels`` as for :func:`train`.
    """
    run_dir, steps = Path(run_dir), sections["train"].total_steps
    with run_lock(run_dir):
        changes = run_changes(run_dir, algo, sections)
        if changes:
            raise ConfigError(f"{run_dir} was trained with other settings: {describe_changes(changes)} (stored -> "
                              "given); delete the folder to start it again, or give the stored values")
        metrics = read_metrics(run_dir)
        if metrics.get("evals") and (metrics.get("steps", 0) >= steps or metrics.get("stopped_early")):
            return [tuple(e) for e in metrics["evals"]]
        resume = checkpoint_path(run_dir).is_file()
        state = train(algo, sections, run_dir, resume=resume, labels=labels)
    return [tuple(e) for e in state.evals]


def load_agent(run_dir: str | Path, checkpoint: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Rebuild a run's agent from its config and a checkpoint: ``checkpoint`` if given (a file name in
    ``checkpoints/``, e.g. a snapshot ``agent_20000.pt``), else the deployment one, else the last."""
    agent, sections, _ = _load_agent(run_dir, checkpoint)
    return agent, sections


def _load_agent(run_dir: str | Path, checkpoint: str | None = None) -> tuple[Any, dict[str, Any], int | None]:
    """:func:`load_agent`, and the env steps the loaded policy was trained for (None if unknown)."""
    algo, sections = read_run_config(run_dir)
    spec = _single_task_recipe(algo, run_dir)
    name = checkpoint or (DEPLOY if checkpoint_path(run_dir, DEPLOY).is_file() else LAST)
    bundle = load_checkpoint(run_dir, name, required=("algo", "agent"))
    if bundle["algo"] != algo:
        raise CheckpointError(f"checkpoint in {run_dir} holds a {bundle['algo']!r} agent but config.toml says {algo!r}")
    env = make(run_env(run_dir, sections), **spec.env_kwargs(sections["agent"]))
    agent = spec.agent_cls(env.observation_space, env.action_space, sections["agent"])
    agent.load_state_dict(bundle["agent"])
    return agent, sections, _trained_step(run_dir, name, bundle)


def run_env(run_dir: str | Path, sections: dict[str, Any]) -> str:
    """The env a run acts in: ``train.env``, else (an offline run evaluated in its data set's env) metrics.json's."""
    return sections["train"].env or str(read_metrics(run_dir).get("env", ""))


def _trained_step(run_dir: str | Path, name: str, bundle: dict[str, Any]) -> int | None:
    """The step a checkpoint's policy was trained to: the last checkpoint's own counter (an interrupted run's too);
    the deployment policy is written when the run closes, at metrics.json's ``steps``; a snapshot
    ``agent_<step>.pt`` names it."""
    if "counters" in bundle:
        return int(bundle["counters"]["step"])
    if name == DEPLOY:
        steps = read_metrics(run_dir).get("steps")
        return None if steps is None else int(steps)
    digits = Path(name).stem.rpartition("_")[2]
    return int(digits) if digits.isdigit() else None


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
    return _load_planner(run_dir, config)[0]


def _load_planner(run_dir: str | Path, config: CEMConfig) -> tuple[CEMPlanner, int | None]:
    """:func:`load_planner`, and the step its model was trained to."""
    algo, sections = read_run_config(run_dir)
    spec = _single_task_recipe(algo, run_dir)
    bundle = load_checkpoint(run_dir, LAST, required=("algo", "agent"))
    if bundle["algo"] != algo or "model" not in bundle["agent"]:
        raise CheckpointError(f"{run_dir} holds a {bundle['algo']!r} run without a learned model; "
                              "MPC needs a model-based run such as srl")
    env_id = run_env(run_dir, sections)
    env = make(env_id, **spec.env_kwargs(sections["agent"]))
    agent = spec.agent_cls(env.observation_space, env.action_space, sections["agent"])
    agent.load_state_dict(bundle["agent"])
    low, high = env.primitive_action_space.low, env.primitive_action_space.high
    planner = CEMPlanner(agent.model.eval(), low, high, config, termination_fn=termination_fn(env_id, env),
                         generator=torch.Generator().manual_seed(0))
    return planner, _trained_step(run_dir, LAST, bundle)


def evaluate_fas(run_dir: str | Path, asl_grid: Sequence[int] = ASL_GRID, episodes: int = 10, seed: int = 0,
                 on_asl: Callable[[int, Any], None] | None = None, planner: CEMConfig | None = None,
                 batched: bool | None = None) -> FASResult:
    """FAS sweep of a trained run; writes its result files and logs it to the run's TensorBoard.

    A sweep over the full grid (1, 2, 4, ..., 30) writes ``fas.json`` and ``fas.png`` (``fas_mpc.*`` with a planner),
    sets ``metrics.json["fas"]`` and logs ``eval/fas``, the returns per ASL (:func:`log_fas`) and the
    return-against-ASL figure (``fas/return_vs_asl``) at the step the swept policy was trained to (an interrupted
    run's checkpoint step, not its budget). A sweep over part of the grid is no FAS comparable with the paper's: it
    goes to ``fas_partial.json`` / ``.png`` only.

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
        policy, steps = _load_planner(run_dir, planner)
        label, suffix = "MPC", "_mpc"
        sections = read_run_config(run_dir)[1]
    else:
        policy, sections, steps = _load_agent(run_dir)
        label, suffix = policy.algo.upper(), ""
    if steps is None:
        steps = int(read_metrics(run_dir).get("steps", sections["train"].total_steps))
    extra = {"planner": dataclasses.asdict(planner)} if planner is not None else {}
    return evaluate_policy_fas(policy, run_env(run_dir, sections), run_dir, label, asl_grid, episodes, seed, on_asl,
                               batched=batched, batch_policy=planner is None, suffix=suffix, run_step=steps,
                               extra=extra)


def evaluate_policy_fas(policy: Any, env_id: str, out_dir: str | Path, label: str,
                        asl_grid: Sequence[int] = ASL_GRID, episodes: int = 10, seed: int = 0,
                        on_asl: Callable[[int, Any], None] | None = None, *, batched: bool | None = None,
                        batch_policy: bool = True, suffix: str = "", run_step: int | None = None,
                        extra: dict[str, Any] | None = None) -> FASResult:
    """FAS sweep of any policy with ``act_sequence(obs, length)`` (a cadence agent, a planner, a stable-baselines3
    policy); writes ``fas{suffix}.json`` (with ``extra``'s fields) and ``.png`` in ``out_dir``
    (``fas_partial{suffix}.*`` for part of the grid). With ``run_step`` (``out_dir`` is a run folder trained that
    many steps) it also updates metrics.json and the run's TensorBoard, once per trained step."""
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
                                                  "seed": seed, "trained_steps": run_step, "partial": partial,
                                                  **(extra or {})})
    title = (f"{env_id}: {label}, return against ASL ({'part of the paper grid, ' if partial else ''}{episodes} "
             "episodes per ASL"
             + (f", {run_step:,} training steps)" if run_step is not None else ")"))
    plot = plot_fas({label: result}, out_dir / f"{stem}.png", title=title, partial=partial)
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
    """TensorBoard records of a full FAS sweep of the policy trained to ``step``.

    In the run: ``eval/fas`` at that step, the return-against-ASL figure (image ``fas/return_vs_asl``, drawn
    unsmoothed) and the values as a table (text ``fas/returns``). In the sub-run ``fas_by_asl/``, which holds the
    latest sweep only: the per-ASL mean returns as the series ``fas/return_by_asl`` whose x axis ("step") is the
    ASL, so the Scalars tab shows them as one line per run (SRL against SAC at a glance). One scalar per ASL at the
    trained step would be a card with a single, invisible point each."""
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
    rows = [f"| {a} | {m:.1f} | {s:.1f} |" for a, m, s in zip(result.asl, result.mean, result.std, strict=True)]
    table = "\n".join([f"FAS {result.fas:.3f} at step {step:,}", "", "| ASL | mean return | std |",
                        "|---:|---:|---:|", *rows])
    logger.writer.add_text(f"fas{suffix}/returns", table, step)
    image = matplotlib.image.imread(plot)[..., :3]
    logger.writer.add_image(f"fas{suffix}/return_vs_asl", image, step, dataformats="HWC")
    logger.close()
