"""Continual model-based RL: one dynamics learner over a task sequence, planned through by CEM-MPC (HyperCRL).

:class:`ContinualModelBased` learns a dynamics model task after task and controls by planning through it
(:class:`~cadence.agents.planning.CEMPlanner`). The ``strategy`` says how the model keeps earlier tasks
(docs/ARCHITECTURE.md, "HyperCRL"):

* ``hypercrl``: a :class:`~cadence.world_models.hyper.HyperDynamics` with one embedding per task, regularised
  towards its own outputs for earlier tasks; trains on the current task's data only;
* ``finetune``: one Gaussian MLP trained on each task in turn (the lower bound);
* ``coreset``: the MLP, trained on the current task plus a growing replay of earlier tasks' transitions
  (``coreset_per_task`` rows of each, chosen by ``replay.selection.RandomSelector``);
* ``ewc`` / ``si``: the MLP with Elastic Weight Consolidation's or Synaptic Intelligence's penalty;
* ``multitask``: the MLP trained on every task's data so far (the upper bound for one model);
* ``single``: a fresh MLP per task (no transfer, no forgetting).

All strategies share the target MLP's sizes, the optimiser settings and the planner, so only the way of keeping
old tasks differs. The MLP baselines do not see the task id; HyperCRL and ``single`` plan with the task's own model.

``preset`` picks the values of the options left unset: ``default`` (cadence's) or ``reference`` (the HyperCRL
code's ``hnet`` preset for Half-Cheetah, point by point: :data:`PRESETS`, docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from cadence.agents.planning import CEMConfig, CEMPlanner
from cadence.config import check, check_positive
from cadence.evaluation.model_error import normalized_errors
from cadence.nn import adam
from cadence.replay.selection import RandomSelector
from cadence.world_models import EnsembleConfig, GaussianEnsemble
from cadence.world_models.base import DynamicsModel, frozen_weights
from cadence.world_models.continual import EWC, SI, train_model_steps
from cadence.world_models.hyper import (
    ACTIVATIONS,
    INITS,
    LOSS_REDUCTIONS,
    HyperConfig,
    HyperDynamics,
    HyperOptimizers,
    train_two_optimizers,
)

Data = dict[str, torch.Tensor]

#: strategy name -> what it keeps of earlier tasks (for help texts)
STRATEGIES: dict[str, str] = {
    "hypercrl": "a hypernetwork with one embedding per task, regularised on its earlier outputs",
    "finetune": "nothing: one model trained on each task in turn",
    "coreset": "a growing replay of coreset_per_task transitions per earlier task",
    "ewc": "an Elastic Weight Consolidation penalty",
    "si": "a Synaptic Intelligence penalty",
    "multitask": "every task's data (one model trained on all of it)",
    "single": "one separate model per task",
}


ObsReward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``reward(obs, action, next_obs) -> [B]``, as :mod:`cadence.envs.obs_rewards` gives them."""

#: preset -> the value each option takes when the user leaves it unset (None). "reference" is the HyperCRL code's
#: ``hnet`` preset for Half-Cheetah (tools/default_arg.py, hnet_exp.py, model/tools.py, control/); see
#: docs/ARCHITECTURE.md, "HyperCRL: the reference preset", for each value's source and what still differs.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "hidden_sizes": (200, 200, 200), "batch_size": 256, "activation": "silu", "init": "default",
        "two_optimizers": False, "train_logvar_bounds": True, "loss_reduction": "mean", "normalize_per_task": False,
        "look_ahead": False, "output_bias_l1": 0.0, "plan_with_true_reward": False, "model_updates_per_step": None,
        "plan_gamma": 0.99, "plan_init_std": 0.5,
    },
    "reference": {
        "hidden_sizes": (200, 200, 200, 200), "batch_size": 100, "activation": "relu", "init": "xavier",
        "two_optimizers": True, "train_logvar_bounds": False, "loss_reduction": "sum", "normalize_per_task": True,
        "look_ahead": True, "output_bias_l1": 1.0, "plan_with_true_reward": True, "model_updates_per_step": 2.0,
        "plan_gamma": 1.0, "plan_init_std": 1.0,
    },
}

#: HyperCRL's hypernetwork widths by target-net widths (``Hparams.add_hnet_hparams``), for the reference preset
REFERENCE_HNET_HIDDEN: dict[tuple[int, ...], tuple[int, ...]] = {
    (32, 32): (16, 16), (100, 100): (40, 40), (200, 200): (50, 50), (256, 256): (128, 128),
    (200, 200, 200): (100, 100), (400, 400, 400): (100, 100), (200, 200, 200, 200): (256, 256),
}

#: options that HyperConfig takes as they are
_HYPER_OPTIONS = ("activation", "init", "train_logvar_bounds", "loss_reduction", "normalize_per_task", "look_ahead",
                  "output_bias_l1")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContinualModelBasedConfig:
    """Settings of a continual model-based learner (``[agent]``); one strategy reads only its own keys.

    An option left unset (None) takes the ``preset``'s value (:data:`PRESETS`); :meth:`option` resolves one.
    """

    preset: str = "default"
    """Values of the options left unset: "default" (cadence's) or "reference" (the HyperCRL code's hnet preset for
    Half-Cheetah: ReLU, Xavier init, two optimisers, fixed log-variance bounds, summed loss, per-task normaliser,
    look-ahead, true-reward planning, batch 100, 2 model updates per env step, [200]x4 target / [256, 256] hnet)."""
    hidden_sizes: tuple[int, ...] | None = None
    """Hidden widths of the dynamics MLP (HyperCRL's target network, and every baseline's model); None: the
    preset's, (200, 200, 200) default, (200, 200, 200, 200) reference."""
    lr: float = 1e-3
    """Adam learning rate of the baselines' MLP."""
    hnet_lr: float = 1e-4
    """Adam learning rate of HyperCRL's hypernetwork and task embeddings (the paper's 1e-4)."""
    hnet_hidden_sizes: tuple[int, ...] | None = None
    """Hidden widths of HyperCRL's hypernetwork (None: HyperCRL's presets, (100, 100) plain, (25, 30) chunked; with
    the reference preset HyperCRL's table by target widths, e.g. (256, 256) for (200, 200, 200, 200))."""
    embedding_size: int = 10
    """Size of HyperCRL's task embeddings."""
    chunked: bool = False
    """Use the chunked hypernetwork (a chunk embedding per slice of the target weights: far fewer parameters).
    Off by default, as in HyperCRL's main preset (``hnet``): in cadence's measurements the chunked variant forgets
    earlier tasks at any regulariser weight that still lets it learn the next (benchmarks/README, LIBERO)."""
    beta: float | None = None
    """Weight of HyperCRL's output regulariser (None: the paper's 0.05, or 0.005 for the chunked variant)."""
    grad_clip: float = 5.0
    """Gradient-norm clip of every model update (HyperCRL's 5)."""
    batch_size: int | None = None
    """Transitions per model update; None: the preset's, 256 default, 100 reference."""
    coreset_per_task: int = 1000
    """coreset: transitions kept of every finished task."""
    ewc_lambda: float = 100.0
    """ewc: weight of the penalty lambda/2 * sum F (theta - theta*)^2."""
    si_c: float = 1.0
    """si: weight of the penalty c * sum Omega (theta - theta*)^2."""
    si_xi: float = 0.1
    """si: damping xi of the importance Omega = omega / (delta theta^2 + xi)."""
    horizon: int = 30
    """CEM planning horizon (HyperCRL's 30; 15 in CEMConfig.cpu())."""
    samples: int = 500
    """CEM candidates per iteration (HyperCRL's 500)."""
    elites: int = 50
    """CEM elites (HyperCRL's 50)."""
    iterations: int = 5
    """CEM iterations per decision (HyperCRL's 5)."""
    plan_gamma: float | None = None
    """Discount of the planner's predicted rewards; None: the preset's, 0.99 default, 1.0 reference (HyperCRL's
    CEM sums the rewards undiscounted)."""
    plan_init_std: float | None = None
    """Initial std of CEM's sampling Gaussian in actions scaled to [-1, 1]; None: the preset's, 0.5 default, 1.0
    reference (HyperCRL's ``mag_noise``)."""
    plan_with_true_reward: bool | None = None
    """Plan with the env's reward as a function of (s, a, s') (cadence.envs.obs_rewards) where it is known, else with
    the learned reward (a warning says so); None: the preset's, false default, true reference."""
    model_updates_per_step: float | None = None
    """Model updates per env step when train.model_steps is unset: model_steps = this x train.train_every; None: the
    preset's, unset default (train.model_steps' own 200 per fit), 2.0 reference (HyperCRL's 2000 per 1000 steps)."""
    activation: str | None = None
    """hypercrl: target-net activation, "silu" or "relu"; None: the preset's, silu default, relu reference."""
    init: str | None = None
    """hypercrl: hypernetwork init, "default" (PyTorch's) or "xavier" (Xavier-uniform, zero biases); None: the
    preset's, default default, xavier reference."""
    two_optimizers: bool | None = None
    """hypercrl: one Adam over Theta (task loss + regulariser) and one over the current embedding (task loss only),
    each clipped on its own; None: the preset's, false default (one Adam over all), true reference."""
    train_logvar_bounds: bool | None = None
    """hypercrl: train the log-variance bounds; None: the preset's, true default, false reference."""
    loss_reduction: str | None = None
    """hypercrl: "mean" (0.5 mean NLL + beta R) or "sum" (summed NLL / columns + beta x batch x R); None: the
    preset's, mean default, sum reference."""
    normalize_per_task: bool | None = None
    """hypercrl: one input normaliser per task, refitted at every fit on the task's data (else one, fixed on the
    first task's first data); None: the preset's, false default, true reference."""
    look_ahead: bool | None = None
    """hypercrl: evaluate the regulariser one Adam step ahead (a step of the two-optimiser update: needs
    two_optimizers); None: the preset's, false default, true reference (off when two_optimizers is)."""
    output_bias_l1: float | None = None
    """hypercrl: weight of the L1 norm of the generated output bias in the task loss (a term of HyperCRL's
    TaskLoss.regularize); None: the preset's, 0 default, 1 reference."""

    def __post_init__(self) -> None:
        check(self.preset in PRESETS, "preset", self.preset, f"one of {', '.join(PRESETS)}")
        for name in ("lr", "hnet_lr", "embedding_size", "coreset_per_task", "horizon", "samples", "elites",
                     "iterations"):
            check_positive(self, name)
        for name in ("batch_size", "model_updates_per_step", "plan_init_std"):
            if getattr(self, name) is not None:
                check_positive(self, name)
        for name in ("ewc_lambda", "si_c", "si_xi", "grad_clip"):
            check(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        check(self.beta is None or self.beta >= 0, "beta", self.beta, ">= 0 (or unset for the paper's value)")
        check(self.elites <= self.samples, "elites", self.elites, f"<= samples ({self.samples})")
        self._check_options()

    def _check_options(self) -> None:
        """The preset-filled options that are set: in their range."""
        if self.hidden_sizes is not None:
            check(len(self.hidden_sizes) > 0 and all(w > 0 for w in self.hidden_sizes), "hidden_sizes",
                  self.hidden_sizes, "a non-empty list of positive widths")
        for name, valid in (("activation", ACTIVATIONS), ("init", INITS), ("loss_reduction", LOSS_REDUCTIONS)):
            value = getattr(self, name)
            check(value is None or value in valid, name, value, f"one of {', '.join(valid)}")
        check(self.plan_gamma is None or 0.0 <= self.plan_gamma <= 1.0, "plan_gamma", self.plan_gamma, "in [0, 1]")
        check(self.output_bias_l1 is None or self.output_bias_l1 >= 0, "output_bias_l1", self.output_bias_l1, ">= 0")
        check(not (self.look_ahead and not self.option("two_optimizers")), "look_ahead", self.look_ahead,
              "false unless two_optimizers is on (the look-ahead is a step of HyperCRL's two-optimiser update)")

    def option(self, name: str) -> Any:
        """Option ``name`` as set, or the preset's value when unset (an unset look_ahead is off without
        two_optimizers, so that one can be switched off alone)."""
        value = getattr(self, name)
        if value is not None:
            return value
        if name == "look_ahead":
            return PRESETS[self.preset][name] and self.option("two_optimizers")
        return PRESETS[self.preset][name]

    @property
    def options(self) -> dict[str, Any]:
        """Every preset-filled option, resolved."""
        return {name: self.option(name) for name in PRESETS[self.preset]}

    @property
    def hnet_hidden(self) -> tuple[int, ...] | None:
        """The hypernetwork widths: as set; with the reference preset HyperCRL's table by target widths (plain
        variant); else None (HyperConfig's default for the variant)."""
        if self.hnet_hidden_sizes is not None:
            return tuple(self.hnet_hidden_sizes)
        if self.preset == "reference" and not self.chunked:
            return REFERENCE_HNET_HIDDEN.get(tuple(self.option("hidden_sizes")))
        return None

    @property
    def cem(self) -> CEMConfig:
        return CEMConfig(horizon=self.horizon, samples=self.samples, elites=self.elites, iterations=self.iterations,
                         init_std=self.option("plan_init_std"), gamma=self.option("plan_gamma"))


class PerTaskModels(torch.nn.Module):
    """The ``single`` strategy's models, one per task; ``for_task`` picks one (an int task id)."""

    def __init__(self, models: list[GaussianEnsemble]):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        self.predicts_reward = True

    def for_task(self, task: Any) -> Any:
        """Task ``task``'s model, or for one task id per row a view that sends each row to its task's model."""
        task = torch.as_tensor(task)
        if task.ndim == 0:
            return self.models[int(task)]
        return _RowsByTask(self, task)


class _RowsByTask:
    """``elite_mean`` of :class:`PerTaskModels` with one task id per row: rows are grouped by task."""

    predicts_reward = True

    def __init__(self, models: PerTaskModels, task: torch.Tensor):
        self.models, self.task = models, task

    def elite_mean(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        next_obs, reward = torch.empty_like(obs), obs.new_empty(obs.shape[0])
        for t in self.task.unique().tolist():
            rows = self.task == t
            next_obs[rows], reward[rows] = self.models.models[t].elite_mean(obs[rows], act[rows])
        return next_obs, reward


class ContinualModelBased:
    """A continual dynamics learner plus a CEM planner; see the module docstring for the strategies.

    Args:
        observation_space, action_space: the family's spaces (flat Boxes).
        strategy: one of :data:`STRATEGIES`.
        config: settings.
        termination_fn: ``next_obs -> bool`` of the base env, used by the planner.
        device: torch device.
        seed: seeds the model-update generator.
    """

    stores_primitive = True
    supports_bf16_mixed = False

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box, strategy: str,
                 config: ContinualModelBasedConfig = ContinualModelBasedConfig(), termination_fn: Any = None,
                 device: str | torch.device = "cpu", seed: int = 0):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown continual strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        self.algo = "hypercrl" if strategy == "hypercrl" else f"mbrl-{strategy}"
        self.strategy, self.config, self.device = strategy, config, torch.device(device)
        self.obs_dim, self.act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.low, self.high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
        self.termination_fn = termination_fn
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.task = -1  # the task being learned
        self.normalizer: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean, std) of the first data
        self.coreset: Data | None = None
        #: the run's continual evaluations by measure ("return", "model_error"), set by the continual loop
        self.records: dict[str, Any] = {}
        self.model: Any = self._new_model()
        if strategy == "single":
            self.model = PerTaskModels([])
        self.optimizer = None if strategy == "single" else self._new_optimizer()  # single: one per task's model
        self.penalty = EWC(self.model, config.ewc_lambda) if strategy == "ewc" else (
            SI(self.model, config.si_c, config.si_xi) if strategy == "si" else None)

    # --- models --------------------------------------------------------------------------------------------
    def _new_model(self) -> torch.nn.Module:
        cfg = self.config
        hidden, batch = tuple(cfg.option("hidden_sizes")), cfg.option("batch_size")
        if self.strategy == "hypercrl":
            hyper = HyperConfig(embedding_size=cfg.embedding_size, hidden_sizes=hidden,
                                hnet_hidden_sizes=cfg.hnet_hidden, chunked=cfg.chunked, beta=cfg.beta,
                                lr=cfg.hnet_lr, grad_clip=cfg.grad_clip, batch_size=batch,
                                **{name: cfg.option(name) for name in _HYPER_OPTIONS})
            return HyperDynamics(self.obs_dim, self.act_dim, hyper).to(self.device)
        mlp = EnsembleConfig(n_members=1, n_elites=1, hidden_sizes=hidden, lr=cfg.lr, batch_size=batch,
                             learn_reward=True)
        return GaussianEnsemble(self.obs_dim, self.act_dim, mlp).to(self.device)

    def _new_optimizer(self) -> torch.optim.Optimizer | HyperOptimizers:
        if self.strategy == "hypercrl" and self.config.option("two_optimizers"):
            return HyperOptimizers(self.model, self.config.hnet_lr)  # HyperCRL's: Theta's, the embedding's
        lr = self.config.hnet_lr if self.strategy == "hypercrl" else self.config.lr
        return adam(self._trained().parameters(), lr)

    def _trained(self) -> torch.nn.Module:
        """The module the current task trains (for ``single``, the current task's own model)."""
        return self.model.models[-1] if self.strategy == "single" else self.model

    def dynamics(self, task: Any) -> DynamicsModel:
        """The model the planner uses for ``task`` (an int, or one id per row)."""
        for_task = getattr(self.model, "for_task", None)
        return self.model if for_task is None else for_task(task)

    # --- the task sequence ---------------------------------------------------------------------------------
    def start_task(self, task: int) -> None:
        """Begin learning ``task`` (ids count up from 0)."""
        if task != self.task + 1:
            raise ValueError(f"tasks are learned in order: expected task {self.task + 1}, got {task}")
        self.task = task
        if self.strategy == "single":
            self.model.models.append(self._new_model())
            if self.normalizer is not None:
                self._restore_normalizer(self._trained())
        if self.strategy == "hypercrl":
            self.model.add_task()
            self.model.start_task(task)
        if self.strategy in ("single", "hypercrl"):  # new parameters (a model, an embedding): a new optimiser
            self.optimizer = self._new_optimizer()
        if self.strategy == "si":
            self.penalty.begin_task()

    def fit(self, data: Data, steps: int, every_task: list[Data] | None = None) -> dict[str, float]:
        """``steps`` model updates for the current task. ``data`` is the current task's data so far;
        ``every_task`` (multitask only) is every task's data so far."""
        train = self._training_data(data, every_task)
        model = self._trained()  # HyperDynamics' loss is the current task's NLL plus its regulariser
        batch = self.config.option("batch_size")
        if self.strategy == "hypercrl" and self.config.option("normalize_per_task"):
            # HyperCRL refits the current task's normaliser on all its data at every fit; earlier tasks keep theirs
            model.set_normalizer(data["obs"], data["action"], self.task)
        elif self.normalizer is None:  # set once, from the first task's first data: later inputs keep their scale
            model.set_normalizer(data["obs"], data["action"])
            self.normalizer = (model.in_mean.clone(), model.in_std.clone())
        if isinstance(self.optimizer, HyperOptimizers):
            return train_two_optimizers(model, train, steps, batch, self.optimizer, self.config.grad_clip,
                                        self.generator)
        return train_model_steps(model.loss, list(model.parameters()), train, steps, batch,
                                 self.optimizer, self.config.grad_clip, self.generator,
                                 penalty=None if self.penalty is None else self.penalty.penalty,
                                 si=self.penalty if self.strategy == "si" else None)

    def _restore_normalizer(self, model: torch.nn.Module) -> None:
        model.in_mean.copy_(self.normalizer[0])
        model.in_std.copy_(self.normalizer[1])

    def _training_data(self, data: Data, every_task: list[Data] | None) -> Data:
        if self.strategy == "multitask":
            if not every_task:
                raise ValueError("the multitask strategy trains on every task's data: pass every_task")
            return {k: torch.cat([d[k] for d in every_task]) for k in _MODEL_KEYS}
        if self.strategy == "coreset" and self.coreset is not None:
            return {k: torch.cat([data[k], self.coreset[k]]) for k in _MODEL_KEYS}
        return {k: data[k] for k in _MODEL_KEYS}

    def end_task(self, data: Data) -> None:
        """Close the current task: consolidate EWC/SI, or add the task's coreset rows."""
        if self.strategy == "ewc":
            n = len(data["obs"])
            batches = [{k: data[k][i:i + 1024] for k in _MODEL_KEYS} for i in range(0, n, 1024)]
            self.penalty.consolidate(batches, lambda batch: self.model.loss(batch)[0])
        elif self.strategy == "si":
            self.penalty.end_task()
        elif self.strategy == "coreset":
            rows = {k: data[k] for k in _MODEL_KEYS}
            keep = RandomSelector().select(rows, min(self.config.coreset_per_task, len(rows["obs"])), self.generator)
            chosen = {k: v[keep] for k, v in rows.items()}
            self.coreset = chosen if self.coreset is None else {
                k: torch.cat([self.coreset[k], chosen[k]]) for k in _MODEL_KEYS}

    # --- acting --------------------------------------------------------------------------------------------
    #: the env's reward as a function of (s, a, s'), for ``plan_with_true_reward`` (set by :meth:`set_true_reward`)
    true_reward: ObsReward | None = None
    _warned_reward = False

    def set_true_reward(self, reward: ObsReward | None) -> None:
        """The env's reward of (obs, action, next_obs), e.g. :func:`cadence.envs.obs_rewards.obs_reward` of the
        family (None where it is unknown); the planner uses it with ``plan_with_true_reward``."""
        self.true_reward = reward

    def planner(self, config: CEMConfig | None = None, generator: torch.Generator | None = None) -> CEMPlanner:
        """A CEM planner through this learner's models (task-conditioned where the strategy has per-task models),
        scoring with :attr:`true_reward` instead of the learned reward when ``plan_with_true_reward`` and it is
        known."""
        model: Any = _TaskRouter(self)
        if self.config.option("plan_with_true_reward"):
            if self.true_reward is not None:
                model = _TrueReward(model, self.true_reward)
            elif not self._warned_reward:
                log.warning("plan_with_true_reward: no reward of (s, a, s') is known for this env; "
                            "planning with the learned reward")
                self._warned_reward = True
        return CEMPlanner(model, self.low, self.high, config or self.config.cem,
                          termination_fn=self.termination_fn, generator=generator, device=self.device)

    @torch.no_grad()
    def prediction_errors(self, data: Data, task: int, scale: torch.Tensor) -> dict[str, float]:
        """The model's errors on ``data`` (held-out transitions of ``task``): ``state`` and ``reward``, per column
        normalised by ``scale`` (:func:`~cadence.evaluation.model_error.transition_scale` of reference data), and
        ``raw_mse``, the plain MSE of ``(s', r)``."""
        model = self.dynamics(task)
        data = {k: v.to(self.device) for k, v in data.items()}
        next_obs, reward = model.elite_mean(data["obs"], data["action"])
        return normalized_errors(next_obs, reward, data, scale)

    def prediction_error(self, data: Data, task: int) -> float:
        """Mean squared error of the predicted (s' - s, r) on ``data`` (held-out transitions of ``task``)."""
        n = data["obs"].shape[1] + 1
        return self.prediction_errors(data, task, torch.ones(n))["raw_mse"]

    def old_task_memory(self) -> int | None:
        """Numbers the learner keeps for earlier tasks besides its current model (None for ``multitask``, which
        keeps every earlier task's data in the loop): HyperCRL's stored outputs and earlier embeddings, the
        coreset's rows, EWC's Fisher and anchor, SI's importance and anchor, single's earlier models."""
        count = lambda tensors: int(sum(t.numel() for t in tensors))
        if self.strategy == "hypercrl":
            return int(self.model.reg_targets.numel()) + max(self.task, 0) * self.config.embedding_size
        if self.strategy == "coreset":
            return 0 if self.coreset is None else count(self.coreset.values())
        if self.strategy in ("ewc", "si"):
            state = self.penalty.state_dict()
            kept = ("fisher", "star") if self.strategy == "ewc" else ("importance", "star")
            return count(t for key in kept for t in (state[key] or {}).values())
        if self.strategy == "single":
            return count(p for m in self.model.models[:-1] for p in m.parameters())
        return None if self.strategy == "multitask" else 0

    # --- persistence ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "task": self.task, "n_models": len(getattr(self.model, "models", [])),
                "model": self.model.state_dict(),
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "normalizer": self.normalizer, "coreset": self.coreset, "generator": self.generator.get_state(),
                "penalty": None if self.penalty is None else self.penalty.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["strategy"] != self.strategy:
            raise ValueError(f"checkpoint holds a {state['strategy']!r} learner, not {self.strategy!r}")
        two = self.strategy == "hypercrl" and bool(self.config.option("two_optimizers"))
        if state["optimizer"] is not None and two != ("theta" in state["optimizer"]):
            raise ValueError(f"the checkpoint was trained with {'one optimiser' if two else 'two optimisers'}; this "
                             f"learner has two_optimizers={two}: resume with the run's own agent config")
        self.task, self.normalizer, self.coreset = int(state["task"]), state["normalizer"], state["coreset"]
        if self.strategy == "single":
            self.model = PerTaskModels([self._new_model() for _ in range(int(state["n_models"]))])
        self.model.load_state_dict(state["model"])
        if state["optimizer"] is not None:
            self.optimizer = self._new_optimizer()
            self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if self.penalty is not None:
            self.penalty.load_state_dict(state["penalty"])

    def deployment_state_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "task": self.task, "n_models": len(getattr(self.model, "models", [])),
                "model": self.model.state_dict(), "normalizer": self.normalizer}


_MODEL_KEYS = ("obs", "action", "reward", "next_obs")


class _TrueReward:
    """A DynamicsModel for the planner whose rewards are ``reward(obs, action, predicted next_obs)`` instead of the
    learned ones (HyperCRL plans with the env's own reward, ``control/reward.py``); next states are the model's."""

    predicts_reward = True

    def __init__(self, model: Any, reward: ObsReward):
        self.model, self.reward = model, reward

    def for_task(self, task: Any) -> _TrueReward:
        return _TrueReward(self.model.for_task(task), self.reward)

    def frozen_weights(self) -> AbstractContextManager:
        return frozen_weights(self.model)

    def elite_mean(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        next_obs, _ = self.model.elite_mean(obs, act)
        return next_obs, self.reward(obs, act, next_obs)


class _TaskRouter:
    """The learner's models as one DynamicsModel for the planner: ``for_task`` routes to the task's model."""

    def __init__(self, learner: ContinualModelBased):
        self.learner = learner
        self.predicts_reward = True

    def for_task(self, task: Any) -> DynamicsModel:
        return self.learner.dynamics(task)

    def frozen_weights(self) -> AbstractContextManager:
        return frozen_weights(self.learner.model)

    def elite_mean(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.learner.dynamics(self.learner.task).elite_mean(obs, act)
