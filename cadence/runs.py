"""Run folders: what every command writes, and how a run is started, resumed and evaluated.

A run folder holds ``config.toml`` (the resolved config), TensorBoard event files,
``checkpoints/`` (``last.pt`` to resume, ``agent.pt`` to deploy) and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadence.agents import agent_spec
from cadence.agents.planning import CEMConfig, CEMPlanner
from cadence.agents.training import TrainConfig, TrainState, check_precision, train_batched, train_online
from cadence.checkpoint import DEPLOY, LAST, CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from cadence.config import ConfigError, load_sections, read_toml, to_dict, to_toml
from cadence.envs import make
from cadence.envs.batched import BatchedEnv
from cadence.envs.rewards import supported_envs
from cadence.envs.terminations import termination_fn
from cadence.evaluation.fas import ASL_GRID, FASResult, fas_sweep, fas_sweep_batched
from cadence.evaluation.plots import plot_fas
from cadence.io import atomic_write_json, atomic_write_text
from cadence.logging import RunLogger
from cadence.seeding import seed_everything
from cadence.world_models import (
    DynamicsReward,
    DynamicsRewardConfig,
    FilterConfig,
    GaussianEnsemble,
    TransitionFilter,
)
from cadence.world_models.trainer import buffer_transitions

CONFIG_FILE = "config.toml"
MODEL = "model.pt"  # the fitted dynamics ensemble of offline model-based runs
DYNAMICS_REWARD = "dynamics_reward.pt"  # MOREC's fitted dynamics reward
METRICS_FILE = "metrics.json"


def default_run_dir(algo: str, env_id: str, seed: int, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{algo}_{env_id}_s{seed}_{stamp}"


def resolve_config(algo: str, base: dict[str, dict[str, Any]] | None = None, config_file: str | Path | None = None,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``{"train": TrainConfig, "agent": <Algo>Config}`` from defaults, a base dict, a TOML file and overrides."""
    spec = agent_spec(algo)
    return load_sections({"train": spec.train_config_cls, "agent": spec.config_cls}, base, config_file, overrides)


def read_run_config(run_dir: str | Path) -> tuple[str, dict[str, Any]]:
    """The algo and config sections of an existing run folder."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a cadence run folder: {path} is missing")
    raw = read_toml(path)
    algo = raw.pop("algo", {}).get("name")
    if algo is None:
        raise CheckpointError(f"{path} does not name the run's algo ([algo] name = ...)")
    return algo, resolve_config(algo, base=raw)


def train(
    algo: str,
    sections: dict[str, Any],
    run_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
) -> TrainState:
    """Create (or resume) a run folder and train ``algo`` in it."""
    spec = agent_spec(algo)
    train_cfg: TrainConfig = sections["train"]
    agent_cfg = sections["agent"]
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
    if spec.offline:
        return _train_offline(spec, sections, run_dir, resume, callbacks)
    eval_env = make(train_cfg.env, **spec.env_kwargs(agent_cfg))
    agent = spec.agent_cls(eval_env.observation_space, eval_env.action_space, agent_cfg, device=train_cfg.device)
    if train_cfg.num_envs > 1:
        kwargs = spec.env_kwargs(agent_cfg)
        env = BatchedEnv(train_cfg.env, train_cfg.num_envs, decision_interval=kwargs["decision_interval"],
                         sequence=kwargs.get("sequence", False), threads=max(1, train_cfg.torch_threads))
        loop = train_batched
    else:
        env, loop = make(train_cfg.env, **spec.env_kwargs(agent_cfg)), train_online
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, to_toml({"algo": _AlgoSection(algo), **sections}))
    state = loop(agent, env, eval_env, train_cfg, run_dir, resume=resume, callbacks=callbacks)
    return _close_run(algo, sections, run_dir, state, train_cfg.env)


def _require_device(name: str) -> None:
    """Fail before any work when ``train.device`` names hardware this machine lacks."""
    device = torch.device(name)
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}[device.type]
    if device.type == "cuda" and available and device.index is not None:
        available = device.index < torch.cuda.device_count()
    if not available:
        raise ConfigError(f"train.device={name!r} is not available on this machine (torch {torch.__version__}); "
                          "use train.device=cpu")


def _close_run(algo: str, sections: dict[str, Any], run_dir: Path, state: TrainState, env_id: str,
               extra: dict[str, Any] | None = None) -> TrainState:
    """metrics.json and the hparams record of a finished (or early-stopped) run."""
    train_cfg = sections["train"]
    metrics = {"algo": algo, "env": env_id, "seed": train_cfg.seed, "steps": state.step, **(extra or {}),
               "episodes": state.episodes, "final_eval_return": state.evals[-1][1], "evals": state.evals,
               "stopped_early": state.step < train_cfg.total_steps}
    write_metrics(run_dir, metrics)
    logger = RunLogger(run_dir)
    flat = {f"{name}.{k}": v for name, cfg in sections.items() for k, v in to_dict(cfg).items()}
    logger.hparams({"algo": algo, **flat}, {"hparams/final_eval_return": state.evals[-1][1]})
    logger.close()
    return state


def train_or_resume(algo: str, sections: dict[str, Any], run_dir: str | Path) -> list[tuple[int, float]]:
    """Train ``algo`` in ``run_dir`` to ``sections["train"].total_steps``, doing only what is left.

    A finished run with at least that budget is returned as it is; an interrupted one, or one finished
    with a smaller budget, resumes under its own config; otherwise a new run starts with ``sections``.
    Returns the evaluation curve ``[(step, mean return), ...]``.
    """
    import json

    run_dir, steps = Path(run_dir), sections["train"].total_steps
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("steps", 0) >= steps or metrics.get("stopped_early"):
            return [tuple(e) for e in metrics["evals"]]
    if checkpoint_path(run_dir).is_file():
        _, own = read_run_config(run_dir)
        own["train"] = dataclasses.replace(own["train"], total_steps=steps)
        state = train(algo, own, run_dir, resume=True)
    else:
        state = train(algo, sections, run_dir)
    return [tuple(e) for e in state.evals]


def _train_offline(spec: Any, sections: dict[str, Any], run_dir: Path, resume: bool,
                   callbacks: Sequence[Callable[[TrainState], None]]) -> TrainState:
    """MOPO / MOBILE: data set, fitted model (kept in checkpoints/model.pt), then the offline loop."""
    from cadence.agents.offline import fit_model, train_offline
    from cadence.evaluation.scores import normalized_score
    from cadence.replay import load_dataset

    train_cfg, agent_cfg = sections["train"], sections["agent"]
    data = load_dataset(train_cfg.dataset)
    env_id = train_cfg.env or str(data.metadata.get("env_id", ""))
    if not env_id:
        raise ConfigError(f"data set {train_cfg.dataset!r} does not name its env; set train.env")
    eval_env = make(env_id)
    data.validate(eval_env.observation_space.shape, eval_env.action_space.shape)
    real = data.to_buffer(device=train_cfg.device)
    agent = spec.agent_cls(eval_env.observation_space, eval_env.action_space, agent_cfg, device=train_cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, to_toml({"algo": _AlgoSection(spec.name), **sections}))
    obs_dim, act_dim = eval_env.observation_space.shape[0], eval_env.action_space.shape[0]
    model_path = checkpoint_path(run_dir, MODEL)
    if model_path.is_file():  # fitted before (this run, or the run it resumes): fitting is the expensive part
        model = load_model(run_dir, obs_dim, act_dim, env_id, device=train_cfg.device)
    else:
        model, fit = fit_model(real, obs_dim, act_dim, max_epochs=train_cfg.model_max_epochs, seed=train_cfg.seed)
        save_checkpoint(run_dir, {"algo": spec.name, "model": model.state_dict(), "fit": fit, "env": env_id}, MODEL)
    choose = None
    if agent_cfg.morec:  # MOREC: a dynamics reward learned on the data against this model filters rollouts
        choose = _morec_filter(run_dir, spec.name, real, model, obs_dim, act_dim, train_cfg.seed,
                               agent_cfg.morec_fit_steps, agent_cfg.morec_threshold_quantile,
                               agent_cfg.morec_early_termination)
    name = train_cfg.dataset

    def score(ret: float) -> float:
        return float(normalized_score(name if name.startswith("d4rl:") else env_id, ret))

    try:
        score(0.0)
    except ValueError:  # no reference scores for this env yet: log returns only
        score = None  # type: ignore[assignment]
    state = train_offline(agent, real, model, eval_env, env_id, train_cfg, run_dir, choose=choose, resume=resume,
                          score=score, callbacks=callbacks)
    extra = {"dataset": name, "final_normalized_score": score(state.evals[-1][1])} if score else {"dataset": name}
    return _close_run(spec.name, sections, run_dir, state, env_id, extra)


def _morec_filter(run_dir: Path, algo: str, real: Any, model: GaussianEnsemble, obs_dim: int, act_dim: int,
                  seed: int, steps: int, quantile: float,
                  early_termination: bool = True) -> Callable[[torch.Generator], TransitionFilter]:
    """MOREC's transition filter (made with the loop's generator, so resume stays exact); its dynamics reward and
    threshold are fitted once and kept in checkpoints/dynamics_reward.pt (without early termination the threshold
    is -inf)."""
    device = next(model.parameters()).device  # the reward lives beside the model it judges
    if checkpoint_path(run_dir, DYNAMICS_REWARD).is_file():
        reward, config = load_dynamics_reward(run_dir, obs_dim, act_dim, device=device)
    else:
        reward = DynamicsReward(obs_dim, act_dim, DynamicsRewardConfig(steps=steps), device=device)
        generator = torch.Generator(device=device).manual_seed(seed)  # it draws batches on the data's device
        fit = reward.fit(real, model, generator=generator)
        config = FilterConfig()
        if quantile > 0:  # calibrate on (up to) 10k of the data's own (s, a) pairs
            data = buffer_transitions(real)
            rows = torch.randperm(len(data["obs"]), generator=generator, device=device)[:10_000]
            filt = TransitionFilter(model, reward, config, generator)
            config = filt.calibrated(data["obs"][rows], data["action"][rows], quantile).config
        save_checkpoint(run_dir, {"algo": algo, "dynamics_reward": reward.state_dict(), "fit": fit,
                                  "threshold": config.threshold, "threshold_quantile": quantile}, DYNAMICS_REWARD)
        print(f"MOREC dynamics reward: mean {fit['model/dr_reward_data']:.3f} on data, "
              f"{fit['model/dr_reward_model']:.3f} on model samples; rollouts end below {config.threshold:.3f}")
    if not early_termination:  # the ablation: the same reward and choice, no rollout ends early
        config = FilterConfig(threshold=float("-inf"))
    return lambda generator: TransitionFilter(model, reward, config, generator)


def load_dynamics_reward(run_dir: str | Path, obs_dim: int, act_dim: int,
                         device: str | torch.device = "cpu") -> tuple[DynamicsReward, FilterConfig]:
    """A MOREC run's fitted dynamics reward (``checkpoints/dynamics_reward.pt``) and its filter settings."""
    saved = load_checkpoint(run_dir, DYNAMICS_REWARD, required=("dynamics_reward", "threshold"))
    reward = DynamicsReward(obs_dim, act_dim, device=device)
    reward.load_state_dict(saved["dynamics_reward"])
    return reward, FilterConfig(threshold=saved["threshold"])


def load_model(run_dir: str | Path, obs_dim: int, act_dim: int, env_id: str | None = None,
               device: str | torch.device = "cpu") -> GaussianEnsemble:
    """An offline run's fitted dynamics ensemble (``checkpoints/model.pt``), refused if fitted for another env."""
    saved = load_checkpoint(run_dir, MODEL, required=("model", "env"))
    if env_id is not None and saved["env"] != env_id:
        raise CheckpointError(f"{checkpoint_path(run_dir, MODEL)} holds a model of {saved['env']}, but this run "
                              f"evaluates in {env_id}; use another run folder")
    model = GaussianEnsemble(obs_dim, act_dim)
    model.load_state_dict(saved["model"])
    return model.to(device)


@dataclasses.dataclass(frozen=True)
class _AlgoSection:
    name: str


def write_metrics(run_dir: str | Path, update: dict[str, Any]) -> None:
    """Merge ``update`` into the run's metrics.json (atomically)."""
    import json

    path = Path(run_dir) / METRICS_FILE
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics.update(update)
    atomic_write_json(path, metrics)


def load_agent(run_dir: str | Path, checkpoint: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Rebuild a run's agent from its config and a checkpoint: ``checkpoint`` if given (a file name in
    ``checkpoints/``, e.g. a snapshot ``agent_20000.pt``), else the deployment one, else the last."""
    algo, sections = read_run_config(run_dir)
    spec = agent_spec(algo)
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
    spec = agent_spec(algo)
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
