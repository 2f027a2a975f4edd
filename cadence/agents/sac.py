"""Soft Actor-Critic: the shared off-policy learner (Haarnoja et al. 2018, automatic entropy tuning).

SAC-J, SAC trained with action repeat J, is this agent with ``action_repeat = J``: the env repeats
each action J times and SAC learns on the resulting decision-level transitions.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from cadence.agents.base import AgentBase
from cadence.agents.graphs import GraphedUpdate, Metrics, load_optimizer_in_place, metric_floats
from cadence.config import check, check_positive, check_widths
from cadence.nn import EnsembleMLP, adam, gather_state, mlp, optimizer_step, restore_state, soft_update
from cadence.replay import Batch

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True)
class SoftActorCriticConfig:
    """Settings shared by the soft actor-critic learners (SAC, SAC-J, SRL); defaults: docs/ARCHITECTURE.md, "SAC"."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of each critic (and of SAC's actor)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics."""
    alpha_lr: float = 3e-4
    """Adam learning rate of log(alpha)."""
    batch_size: int = 256
    """Transitions per gradient step."""
    gamma: float = 0.99
    """Discount per stored transition (a decision for SAC-J, a primitive step for SRL)."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    init_alpha: float = 1.0
    """Initial entropy temperature."""
    target_entropy: float | None = None
    """Target entropy per primitive action; None means -act_dim."""
    num_critics: int = 2
    """Critics in the batched critic ensemble (the clipped double-Q minimum is taken over them)."""
    buffer_size: int = 1_000_000
    """Replay capacity in stored transitions."""
    learning_starts: int = 10_000
    """Env steps of uniform random actions before learning starts."""
    gradient_steps: int = 1
    """Gradient steps per stored transition."""
    cuda_graphs: bool = False
    """Run each gradient update as one replayed CUDA graph (train.device=cuda): far fewer kernel launches, same
    numbers. If capture fails the updates run eagerly, with one warning; on a CPU they are eager too."""

    def __post_init__(self) -> None:
        check_widths(self, "hidden_sizes")
        for name in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha", "batch_size", "buffer_size", "gradient_steps"):
            check_positive(self, name)
        check(0.0 <= self.gamma <= 1.0, "gamma", self.gamma, "in [0, 1]")
        check(0.0 < self.tau <= 1.0, "tau", self.tau, "in (0, 1]")
        check(self.num_critics >= 2, "num_critics", self.num_critics, ">= 2")
        check(self.learning_starts >= 0, "learning_starts", self.learning_starts, ">= 0")
        check(isinstance(self.cuda_graphs, bool), "cuda_graphs", self.cuda_graphs, "true or false")


@dataclass(frozen=True)
class SACConfig(SoftActorCriticConfig):
    """Hyperparameters of SAC and SAC-J."""

    autotune_alpha: bool = True
    """Tune alpha towards the target entropy; if False alpha stays at init_alpha."""
    action_repeat: int = 1
    """J of SAC-J: each action is repeated this many primitive steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "action_repeat")


def squashed_gaussian(mean: torch.Tensor, log_std: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                      deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample a = tanh(u) * scale + bias, u ~ N(mean, exp(log_std)) (reparameterised).

    Returns ``(action, log_prob, tanh(u))``. log_prob is the density of the normalised action tanh(u)
    in [-1, 1]^d, log N(u) - sum log(1 - tanh(u)^2) (the tanh Jacobian, in a numerically stable form),
    so a target entropy of -act_dim means the same for any action bounds, as in stable-baselines3.
    Including the scale Jacobian (as CleanRL does) would shift the effective target by sum log(scale):
    by -1.1 nats on InvertedPendulum's [-3, 3].
    """
    log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    std = log_std.exp()
    u = mean if deterministic else mean + std * torch.randn_like(mean)
    y = torch.tanh(u)
    normal_logp = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
    log_det = (2.0 * (np.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return y * scale + bias, normal_logp - log_det, y


class SquashedGaussianActor(nn.Module):
    """State -> tanh-squashed Gaussian over actions, rescaled to the action bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 2 * act_dim)
        self.register_buffer("scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(action, log_prob)``; log_prob is that of the normalised action (see ``squashed_gaussian``)."""
        mean, log_std = self.net(obs).float().chunk(2, dim=-1)  # float32 under bf16-mixed autocast too
        action, logp, _ = squashed_gaussian(mean, log_std, self.scale, self.bias, deterministic)
        return action, logp


class EnsembleCritic(nn.Module):
    """``n`` Q-functions Q(s, a) as one batched module; returns ``[n, B]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], n: int):
        super().__init__()
        self.net = EnsembleMLP(n, obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1).float()  # float32 under autocast too


class SoftActorCriticAgent(AgentBase):
    """What every soft actor-critic learner shares: the temperature, the update's eager and graphed paths, and
    checkpoint persistence.

    Subclasses set ``PARTS`` (modules and optimisers saved in full checkpoints), own ``actor``, ``log_alpha`` and
    ``updates``, implement :meth:`update_step` and call :meth:`init_graphs` at the end of ``__init__``;
    deployment checkpoints keep the actor alone.
    """

    PARTS: tuple[str, ...] = ()
    config: SoftActorCriticConfig
    device: torch.device
    log_alpha: torch.Tensor
    target_entropy: float
    updates: int
    graphed: GraphedUpdate | None = None

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    def alpha_loss(self, logp: torch.Tensor) -> torch.Tensor:
        """L = -E[log(alpha) (log pi(a|s) + target_entropy)] over every sampled action."""
        return -(self.log_alpha * (logp + self.target_entropy)).mean()

    # --- update --------------------------------------------------------------------------------------
    def init_graphs(self) -> None:
        """Set up graphed updates when ``config.cuda_graphs`` asks for them (captured at the first update)."""
        if not self.config.cuda_graphs:
            return
        if self.device.type != "cuda":
            warnings.warn(f"agent.cuda_graphs needs a CUDA device: {self.algo} on {self.device} updates eagerly",
                          RuntimeWarning, stacklevel=3)
            return
        self.graphed = self.make_graphed()

    def make_graphed(self) -> GraphedUpdate:
        """The graphed form of :meth:`update_step`: it changes the ``PARTS`` and log alpha."""
        parts = [getattr(self, name) for name in self.PARTS]
        return GraphedUpdate(self.update_step, [p for p in parts if isinstance(p, nn.Module)],
                             [p for p in parts if isinstance(p, torch.optim.Optimizer)], [self.log_alpha],
                             self.device, self.algo)

    def update_step(self, batch: Batch) -> Metrics:
        """One whole gradient step, metrics as 0-dim device tensors; no host syncs, so it can be captured."""
        raise NotImplementedError

    def before_update(self, batch: Batch) -> None:
        """Host-side preparation outside the captured step (SRL fits its model's input normaliser here)."""

    def update_tensors(self, batch: Batch) -> Metrics:
        """One gradient step (a graph replay when captured), its metrics left on the device: no host sync."""
        self.before_update(batch)
        metrics = self.graphed(batch) if self.graphed is not None else None
        if metrics is None:
            metrics = self.update_step(batch)
        self.updates += 1
        return metrics

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step; its metrics as floats (one host sync)."""
        return metric_floats(self.update_tensors(batch))

    # --- persistence ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**gather_state(self, self.PARTS), "log_alpha": self.log_alpha.detach().clone(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "critic" not in state:  # a deployment checkpoint: the actor alone
            restore_state(self, state, ("actor",))
            return
        if self.graphed is not None and self.graphed.captured:
            # captured graphs read these tensors: modules load in place; optimiser states must too
            optimizers = [n for n in self.PARTS if isinstance(getattr(self, n), torch.optim.Optimizer)]
            restore_state(self, state, tuple(n for n in self.PARTS if n not in optimizers))
            if not all([load_optimizer_in_place(getattr(self, n), state[n]) for n in optimizers]):
                self.graphed.invalidate()  # other learning rates: the graphs baked the old ones in
        else:
            restore_state(self, state, self.PARTS)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.updates = int(state["updates"])

    def deployment_state_dict(self) -> dict[str, Any]:
        """What acting needs: the actor alone."""
        return {"actor": self.actor.state_dict()}


class SAC(SoftActorCriticAgent):
    """Soft Actor-Critic with a batched critic ensemble and automatic entropy tuning.

    Args:
        observation_space: a flat ``Box``.
        action_space: a flat ``Box`` (the env's per-decision action space).
        config: hyperparameters.
        device: torch device for networks.
    """

    algo = "sac"
    #: its actor and critics cast their outputs to float32, so train.precision=bf16-mixed is safe
    supports_bf16_mixed = True

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box, config: SACConfig = SACConfig(),
                 device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.obs_dim = int(np.prod(observation_space.shape))
        self.act_dim = int(np.prod(action_space.shape))
        hidden = tuple(config.hidden_sizes)
        self.actor = SquashedGaussianActor(
            self.obs_dim, self.act_dim, hidden, action_space.low, action_space.high
        ).to(self.device)
        self.critic = EnsembleCritic(self.obs_dim, self.act_dim, hidden, config.num_critics).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(float(np.log(config.init_alpha)), device=self.device, requires_grad=True)
        self.target_entropy = float(-self.act_dim if config.target_entropy is None else config.target_entropy)
        self.actor_optimizer = adam(self.actor.parameters(), config.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), config.critic_lr)
        self.alpha_optimizer = adam([self.log_alpha], config.alpha_lr)
        self.updates = 0
        self.init_graphs()

    # --- acting --------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """One action for one observation (or a batch ``[B, obs_dim]``)."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        action, _ = self.actor(obs_t, deterministic=deterministic)
        return action.cpu().numpy()

    def act_sequence(self, obs: np.ndarray, length: int, deterministic: bool = True) -> np.ndarray:
        """``[length, act_dim]`` actions decided from one state (``[B, length, act_dim]`` from a batch):
        SAC repeats its one action."""
        return np.repeat(self.act(obs, deterministic)[..., None, :], length, axis=-2)

    # --- losses --------------------------------------------------------------------------------------
    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """Soft Bellman error summed over critics:

        y = r + gamma (1 - terminated) (min_k Q'_k(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')
        L = 1/2 sum_k E[(Q_k(s, a) - y)^2]
        """
        with torch.no_grad():
            next_action, next_logp = self.actor(batch["next_obs"])
            next_q = self.critic_target(batch["next_obs"], next_action).min(dim=0).values
            not_done = 1.0 - batch["terminated"].float()
            target = batch["reward"] + self.config.gamma * not_done * (next_q - self.alpha * next_logp)
        q = self.critic(batch["obs"], batch["action"])
        loss = 0.5 * ((q - target) ** 2).mean(dim=1).sum()
        return loss, {"critic_loss": loss.detach(), "q_mean": q.detach().mean()}

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """L = E_s[alpha log pi(a|s) - min_k Q_k(s, a)],  a ~ pi(.|s) reparameterised.

        Returns the loss and log pi(a|s) (detached) for the temperature loss.
        """
        action, logp = self.actor(batch["obs"])
        self.critic.requires_grad_(False)  # the actor loss must not leave gradients on the critics
        q = self.critic(batch["obs"], action).min(dim=0).values
        self.critic.requires_grad_(True)
        return (self.alpha * logp - q).mean(), logp.detach()

    # --- update --------------------------------------------------------------------------------------
    def update_step(self, batch: Batch) -> Metrics:
        """One gradient step on critics, actor and temperature, then a Polyak target update."""
        critic_loss, metrics = self.critic_loss(batch)
        optimizer_step(self.critic_optimizer, critic_loss)

        actor_loss, logp = self.actor_loss(batch)
        optimizer_step(self.actor_optimizer, actor_loss)

        if self.config.autotune_alpha:
            alpha_loss = self.alpha_loss(logp)
            optimizer_step(self.alpha_optimizer, alpha_loss)
            metrics["alpha_loss"] = alpha_loss.detach()

        soft_update(self.critic_target, self.critic, self.config.tau)
        metrics.update(actor_loss=actor_loss.detach(), alpha=self.alpha, entropy=-logp.mean())
        return metrics

    #: modules and optimisers saved in full checkpoints
    PARTS = ("actor", "critic", "critic_target", "actor_optimizer", "critic_optimizer", "alpha_optimizer")
