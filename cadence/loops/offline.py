"""Offline model-based training (MOPO, MOBILE, optionally MOREC-filtered): a plain loop that reads top to bottom.

1. The data set is a real-data buffer; the dynamics model was fitted on it (:func:`fit_model`) and is handed
   to the agent, which says how rollout rewards are penalised (:class:`cadence.agents.base.ModelBasedOffline`).
2. Every ``rollout_every`` gradient steps, roll the policy through the model from real start states into a
   FIFO model buffer (MOREC's filter, if given, chooses the steps).
3. Each gradient step learns from a batch mixing real and model data at ``real_ratio``.
4. Evaluate in the real env (return and normalised score), log, checkpoint; resume continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cadence.agents.base import Agent, ModelBasedOffline
from cadence.config import check
from cadence.logging import RunLogger
from cadence.loops.common import (
    LoopConfig,
    PeriodicLog,
    TrainState,
    bundle,
    check_finite,
    check_precision,
    checkpoint_if_due,
    evaluate_if_due,
    finish_run,
    interrupt_run,
    make_hooks,
    open_run,
    progress_bar,
    stop_signals,
)
from cadence.loops.hooks import Hook, LoopContext
from cadence.replay import ReplayBuffer
from cadence.replay.mixing import MixedSampler, ModelRolloutBuffer
from cadence.world_models.base import DynamicsModel
from cadence.world_models.ensemble import GaussianEnsemble
from cadence.world_models.rollout import Choose, RolloutConfig, model_rollout, random_elite_sample
from cadence.world_models.trainer import EnsembleTrainer, buffer_transitions


@dataclass(frozen=True)
class OfflineTrainConfig(LoopConfig):
    """The offline loop: the data set, the model fit, and the shared loop settings counted in gradient steps."""

    env: str = ""
    """Env to evaluate in; empty: the data set's own (its env_id metadata)."""
    total_steps: int = 500_000
    """Budget in gradient steps."""
    dataset: str = ""
    """Data set name or path (see cadence.replay.load_dataset): hopper-medium, d4rl:NAME, minari:ID, a file.
    Required: an offline run names what it learns from."""
    model_max_epochs: int = 0
    """Cap on the model's training epochs (0: the ensemble config's own cap)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.model_max_epochs >= 0, "model_max_epochs", self.model_max_epochs, ">= 0")


def fit_model(real: ReplayBuffer, obs_dim: int, act_dim: int, model: GaussianEnsemble | None = None,
              max_epochs: int = 0, seed: int = 0) -> tuple[GaussianEnsemble, dict[str, Any]]:
    """Fit a GaussianEnsemble on every transition of ``real``, on ``real``'s device.

    Its defaults are MOREC's: 7 members, 5 elites, 4 x 200 hidden (docs/ARCHITECTURE.md, "MOPO, MOBILE and MOREC").
    """
    model = (model or GaussianEnsemble(obs_dim, act_dim)).to(real.device)
    trainer = EnsembleTrainer(model, torch.Generator().manual_seed(seed))
    metrics = trainer.fit(buffer_transitions(real), max_epochs=max_epochs or None)
    return model, metrics


def train_offline(
    agent: Agent,
    real: ReplayBuffer,
    model: DynamicsModel,
    eval_env: Any,
    termination: Callable[[torch.Tensor], torch.Tensor],
    config: OfflineTrainConfig,
    run_dir: str | Path,
    *,
    choose: Callable[[torch.Generator], Choose] | None = None,
    resume: bool = False,
    score: Callable[[float], float] | None = None,
    hooks: Iterable[Hook] = (),
    callbacks: Iterable[Callable[[TrainState], None]] = (),
) -> TrainState:
    """Train ``agent`` (MOPO or MOBILE) offline on ``real`` and rollouts of the fitted ``model``.

    Args:
        agent: an Agent that is also :class:`cadence.agents.base.ModelBasedOffline`, whose config is an
            :class:`cadence.agents.mopo.OfflineModelBasedConfig`.
        real: the data set as a buffer.
        model: the fitted dynamics model (any :class:`cadence.world_models.base.DynamicsModel`).
        eval_env: the real env, for evaluation only.
        termination: ``done(next_obs)`` of the env, for model rollouts.
        config: loop settings.
        run_dir: the run folder.
        choose: makes, from the loop's generator, how a model step picks its next state (default: a random
            elite's sample; MOREC's filter).
        resume: continue from the run's last checkpoint.
        score: maps a mean return to a normalised score for logging (``eval/normalized_score``), if given.
        hooks: act at the loop's events; their states are checkpointed.
        callbacks: called with the counters after every gradient step (an exception stops training).
    """
    run_dir, cfg = Path(run_dir), agent.config
    check_precision(agent, config.precision)
    if not isinstance(agent, ModelBasedOffline):
        raise TypeError(f"{agent.algo} cannot train offline from model rollouts: it lacks use_model/rollout_penalty")
    agent.use_model(model)
    penalty = agent.rollout_penalty()
    generator = torch.Generator(device=config.device).manual_seed(config.seed)
    choose_next = (choose or (lambda g: random_elite_sample(model, g)))(generator)
    model_buffer = ModelRolloutBuffer.for_rollouts(cfg.rollout_batch_size, cfg.rollout_length, cfg.model_retain_rounds,
                                                   real.obs_shape, real.act_shape, config.device)
    sampler = MixedSampler(real, model_buffer, cfg.real_ratio)
    rollout = RolloutConfig(cfg.rollout_length, cfg.rollout_batch_size, penalty[1] if penalty else 0.0)
    policy = lambda obs: agent.actor(obs)[0]
    ctx = LoopContext(agent, None, eval_env, model_buffer, None, TrainState(), config, run_dir,  # type: ignore[arg-type]
                      extras={"model": model, "real": real})
    run_hooks = make_hooks(config, hooks, callbacks)
    restored = open_run(ctx, run_hooks, resume, required=("generator",))
    ctx.logger = RunLogger(run_dir, resume_step=ctx.state.step if resume else None, write_layout=not resume)
    state = ctx.state
    if restored is None:
        run_hooks.run_start(ctx)
    else:
        generator.set_state(restored["generator"])
        run_hooks.resume(ctx)

    def bundle_now() -> dict[str, Any]:
        return bundle(ctx, run_hooks, model=model.state_dict(), generator=generator.get_state())

    metrics: dict[str, float] = {}
    with stop_signals() as caught, progress_bar(config.progress) as progress:
        log = PeriodicLog(ctx.logger, progress, agent.algo.upper(), config, state)
        while state.step < config.total_steps:
            if state.step % cfg.rollout_every == 0:  # a round of model rollouts from real start states
                start = real.sample(cfg.rollout_batch_size, generator)["obs"]
                out = model_rollout(start, policy, choose_next, termination, rollout, penalty[0] if penalty else None)
                if len(out["obs"]):
                    model_buffer.add(out["obs"], out["action"], out["reward"], out["next_obs"], out["terminated"])
                metrics["model/rollout_transitions"] = float(len(out["obs"]))
                metrics["model/rollout_mean_length"] = float(len(out["obs"])) / cfg.rollout_batch_size

            metrics.update(agent.update(sampler.sample(cfg.batch_size, generator)))
            state.step += 1
            check_finite(metrics, state, run_dir, unit="gradient step")
            log(state, metrics)
            mean_return = evaluate_if_due(ctx, run_hooks, progress)
            if score is not None and mean_return is not None:
                ctx.logger.scalars({"eval/normalized_score": score(mean_return)}, state.step)
            checkpoint_if_due(ctx, bundle_now)
            run_hooks.step(ctx)
            if ctx.stop or caught:  # a hook asked (train.stop_return), or Ctrl-C
                break
    if caught:
        interrupt_run(ctx, bundle_now, caught["signal"])
    finish_run(ctx, bundle_now)
    return state
