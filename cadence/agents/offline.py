"""Offline model-based training (MOPO, MOBILE, optionally MOREC-filtered): a plain loop that reads top to bottom.

1. Load the data set (validated against the env's spaces) into a real-data buffer.
2. Fit the dynamics ensemble on it (holdout early stopping, elites) unless the run already holds one.
3. Every ``rollout_every`` gradient steps, roll the policy through the model from real start states into a
   FIFO model buffer (MOPO penalises rewards there; MOREC's filter chooses the steps).
4. Each gradient step learns from a batch mixing real and model data at ``real_ratio``.
5. Evaluate in the real env (return and normalised score), log, checkpoint; resume continues exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import cadence
from cadence.agents.training import (
    LoopConfig,
    PeriodicLog,
    TrainState,
    end_of_step,
    evaluate_if_due,
    finish_run,
    progress_bar,
    restore_run,
)
from cadence.config import check
from cadence.envs.terminations import termination_fn
from cadence.logging import RunLogger
from cadence.replay import ReplayBuffer
from cadence.replay.mixing import MixedSampler, ModelRolloutBuffer
from cadence.seeding import rng_state
from cadence.world_models.ensemble import GaussianEnsemble
from cadence.world_models.rollout import Choose, RolloutConfig, model_rollout, mopo_penalty, random_elite_sample
from cadence.world_models.trainer import EnsembleTrainer, buffer_transitions


@dataclass(frozen=True)
class OfflineTrainConfig(LoopConfig):
    """The offline loop: the data set, the model fit, and the shared loop settings counted in gradient steps."""

    env: str = ""
    """Env to evaluate in; empty: the data set's own (its env_id metadata)."""
    total_steps: int = 500_000
    """Budget in gradient steps."""
    dataset: str = "hopper-medium"
    """Data set name or path (see cadence.replay.load_dataset): hopper-medium, d4rl:NAME, minari:ID, a file."""
    model_max_epochs: int = 0
    """Cap on the model's training epochs (0: the ensemble config's own cap)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.model_max_epochs >= 0, "model_max_epochs", self.model_max_epochs, ">= 0")


def fit_model(real: ReplayBuffer, obs_dim: int, act_dim: int, model: GaussianEnsemble | None = None,
              max_epochs: int = 0, seed: int = 0) -> tuple[GaussianEnsemble, dict[str, Any]]:
    """Fit a GaussianEnsemble (DESIGN.md defaults) on every transition of ``real``, on ``real``'s device."""
    model = (model or GaussianEnsemble(obs_dim, act_dim)).to(real.device)
    trainer = EnsembleTrainer(model, torch.Generator().manual_seed(seed))
    metrics = trainer.fit(buffer_transitions(real), max_epochs=max_epochs or None)
    return model, metrics


def train_offline(
    agent: Any,
    real: ReplayBuffer,
    model: GaussianEnsemble,
    eval_env: Any,
    env_id: str,
    config: OfflineTrainConfig,
    run_dir: str | Path,
    *,
    choose: Callable[[torch.Generator], Choose] | None = None,
    resume: bool = False,
    score: Callable[[float], float] | None = None,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
) -> TrainState:
    """Train ``agent`` (MOPO or MOBILE) offline on ``real`` and rollouts of the fitted ``model``.

    Args:
        agent: a SAC-family agent whose config is an :class:`OfflineModelBasedConfig`.
        real: the data set as a buffer.
        model: the fitted dynamics ensemble (the agent is given it; it builds nothing itself).
        eval_env: the real env, for evaluation only.
        env_id: its id (for the termination function of model rollouts).
        config: loop settings.
        run_dir: the run folder.
        choose: makes, from the loop's generator, how a model step picks its next state (default: a random
            elite's sample; MOREC's filter).
        resume: continue from the run's last checkpoint.
        score: maps a mean return to a normalised score for logging (``eval/normalized_score``), if given.
    """
    run_dir, cfg = Path(run_dir), agent.config
    agent.model = model  # MOBILE's penalty needs it; MOPO ignores it
    generator = torch.Generator(device=config.device).manual_seed(config.seed)
    choose_next = (choose or (lambda g: random_elite_sample(model, g)))(generator)
    model_buffer = ModelRolloutBuffer.for_rollouts(cfg.rollout_batch_size, cfg.rollout_length, cfg.model_retain_rounds,
                                                   real.obs_shape, real.act_shape, config.device)
    sampler = MixedSampler(real, model_buffer, cfg.real_ratio)
    rollout = RolloutConfig(cfg.rollout_length, cfg.rollout_batch_size, getattr(cfg, "penalty_coef", 0.0))
    penalty = mopo_penalty(model) if agent.algo == "mopo" else None
    terminated = termination_fn(env_id)
    policy = lambda obs: agent.actor(obs)[0]
    state = TrainState(next_eval=config.eval_every, next_checkpoint=config.checkpoint_every)
    if resume:
        bundle, state = restore_run(run_dir, agent, model_buffer, "generator")
        generator.set_state(bundle["generator"])
    logger = RunLogger(run_dir, resume_step=state.step if resume else None, write_layout=not resume)

    def bundle_now() -> dict[str, Any]:
        return {"algo": agent.algo, "agent": agent.state_dict(), "buffer": model_buffer.state_dict(),
                "model": model.state_dict(), "rng": rng_state(), "generator": generator.get_state(),
                "train_state": dataclasses.asdict(state), "cadence_version": cadence.__version__}

    metrics: dict[str, float] = {}
    with progress_bar(config.progress) as progress:
        log = PeriodicLog(logger, progress, agent.algo.upper(), config, state)
        while state.step < config.total_steps:
            if state.step % cfg.rollout_every == 0:  # a round of model rollouts from real start states
                start = real.sample(cfg.rollout_batch_size, generator)["obs"]
                out = model_rollout(start, policy, choose_next, terminated, rollout, penalty)
                if len(out["obs"]):
                    model_buffer.add(out["obs"], out["action"], out["reward"], out["next_obs"], out["terminated"])
                metrics["model/rollout_transitions"] = float(len(out["obs"]))
                metrics["model/rollout_mean_length"] = float(len(out["obs"])) / cfg.rollout_batch_size

            metrics.update(agent.update(sampler.sample(cfg.batch_size, generator)))
            state.step += 1
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise RuntimeError(f"{bad[0]} became {metrics[bad[0]]} at gradient step {state.step}; the last good "
                                   f"checkpoint is kept in {run_dir / 'checkpoints'}")
            log(state, metrics)
            reached = evaluate_if_due(agent, eval_env, config, state, logger, progress, run_dir)
            if score is not None and state.evals and state.evals[-1][0] == state.step:
                logger.scalars({"eval/normalized_score": score(state.evals[-1][1])}, state.step)
            end_of_step(run_dir, config, state, bundle_now, callbacks)
            if reached:  # config.stop_return
                break
    finish_run(agent, eval_env, config, state, logger, run_dir, bundle_now())
    return state
