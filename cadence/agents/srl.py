"""Sequence Reinforcement Learning (Patel & Siegelmann, ICLR 2025; docs/ARCHITECTURE.md, "SRL and FAS").

Three parts at two time scales:

* a learned dynamics model (s, a) -> s' (a :class:`GaussianEnsemble`, trained online on primitive data);
* a SAC critic Q(s, a), trained on real primitive transitions only;
* a :class:`SequenceActor` that, from one state, emits J primitive actions (MLP encoder, then a GRU).

Temporal recall: to train the actor, the model predicts the intermediate states
s_hat_{t+1..t+J-1} and every action a_{t+i} is scored by Q(s_hat_{t+i}, a_{t+i}) with the SAC
entropy term; gradients flow through the GRU. At deployment the actor runs alone, open loop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from cadence.agents.graphs import Metrics
from cadence.agents.sac import EnsembleCritic, SoftActorCriticAgent, SoftActorCriticConfig, squashed_gaussian
from cadence.config import check, check_positive
from cadence.nn import adam, mlp, optimizer_step, soft_update
from cadence.replay import Batch
from cadence.world_models import EnsembleConfig, GaussianEnsemble
from cadence.world_models.ensemble import gaussian_nll, logvar_bound_penalty


@dataclass(frozen=True)
class SRLConfig(SoftActorCriticConfig):
    """Hyperparameters of SRL; the soft actor-critic parts are SAC's (docs/ARCHITECTURE.md, "SAC")."""

    sequence_length: int = 8
    """J: primitive actions decided per state during training (SRL-J)."""
    encoder_sizes: tuple[int, ...] = (256,)
    """Hidden widths of the actor's state encoder."""
    gru_size: int = 128
    """GRU hidden size of the sequence actor."""
    actor_batch_size: int = 64
    """States per actor step; each is unrolled J steps, so J x this many actions are scored."""
    model_lr: float = 1e-3
    """Adam learning rate of the dynamics model."""
    model_members: int = 3
    """Members of the dynamics ensemble; recall uses their mean prediction."""
    model_hidden_sizes: tuple[int, ...] = (200, 200)
    """Hidden widths of each model member."""
    backprop_through_model: bool = False
    """Let actor gradients flow through the predicted states too (the paper's recall is through the GRU)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(isinstance(self.sequence_length, int) and self.sequence_length >= 1, "sequence_length",
              self.sequence_length, "an integer >= 1")
        for name in ("model_lr", "gru_size", "model_members", "actor_batch_size"):
            check_positive(self, name)


class SequenceActor(nn.Module):
    """State -> a sequence of tanh-Gaussian actions of any length.

    An MLP encodes the state into the GRU's initial hidden state; each GRU step takes the previous
    (squashed) action and emits the next action's mean and log-std, so the actor unrolls to any length.
    """

    def __init__(self, obs_dim: int, act_dim: int, encoder_sizes: tuple[int, ...], gru_size: int,
                 low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.act_dim = act_dim
        self.encoder = mlp(obs_dim, encoder_sizes, gru_size)
        self.gru = nn.GRUCell(act_dim, gru_size)
        self.head = nn.Linear(gru_size, 2 * act_dim)
        self.register_buffer("scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor, length: int, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Return actions ``[B, length, act_dim]`` and their log-probabilities ``[B, length]``."""
        if length < 1:
            raise ValueError(f"sequence length must be >= 1, got {length}")
        h = torch.tanh(self.encoder(obs))
        prev = obs.new_zeros(*obs.shape[:-1], self.act_dim)
        actions, logps = [], []
        for _ in range(length):
            h = self.gru(prev, h)
            mean, log_std = self.head(h).float().chunk(2, dim=-1)  # float32 under bf16-mixed autocast too
            action, logp, prev = squashed_gaussian(mean, log_std, self.scale, self.bias, deterministic)
            actions.append(action)
            logps.append(logp)
        return torch.stack(actions, dim=-2), torch.stack(logps, dim=-1)


class SRL(SoftActorCriticAgent):
    """SRL-J: a sequence actor trained by temporal recall through a learned model.

    Args:
        observation_space: a flat ``Box``.
        action_space: the training env's sequence action space ``Box(J * act_dim)``, as made by
            ``make(env_id, decision_interval=J, sequence=True)``.
        config: hyperparameters.
        device: torch device.
    """

    algo = "srl"
    stores_primitive = True
    #: the actor head, critics and model cast their outputs to float32, so train.precision=bf16-mixed is safe
    supports_bf16_mixed = True

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box, config: SRLConfig = SRLConfig(),
                 device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        J = config.sequence_length
        self.obs_dim = int(np.prod(observation_space.shape))
        flat = int(np.prod(action_space.shape))
        if flat % J:
            raise ValueError(f"SRL-{J} needs the sequence action space Box({J} * act_dim), got {action_space.shape}")
        self.act_dim = flat // J
        low, high = action_space.low[: self.act_dim], action_space.high[: self.act_dim]
        self.actor = SequenceActor(self.obs_dim, self.act_dim, tuple(config.encoder_sizes), config.gru_size,
                                   low, high).to(self.device)
        self.critic = EnsembleCritic(self.obs_dim, self.act_dim, tuple(config.hidden_sizes),
                                     config.num_critics).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        model_cfg = EnsembleConfig(n_members=config.model_members, n_elites=config.model_members,
                                   hidden_sizes=tuple(config.model_hidden_sizes), lr=config.model_lr, learn_reward=True)
        self.model = GaussianEnsemble(self.obs_dim, self.act_dim, model_cfg).to(self.device)
        self.model_ready = False  # the model's input normaliser is set from the first batch
        self.log_alpha = torch.tensor(float(np.log(config.init_alpha)), device=self.device, requires_grad=True)
        self.target_entropy = float(-self.act_dim if config.target_entropy is None else config.target_entropy)
        self.actor_optimizer = adam(self.actor.parameters(), config.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), config.critic_lr)
        self.alpha_optimizer = adam([self.log_alpha], config.alpha_lr)
        self.model_optimizer = adam(self.model.parameters(), config.model_lr, weight_decay=1e-5)
        self.updates = 0
        self.init_graphs()

    # --- acting (model-free) -------------------------------------------------------------------------
    @torch.no_grad()
    def act_sequence(self, obs: np.ndarray, length: int, deterministic: bool = True) -> np.ndarray:
        """``[length, act_dim]`` actions from one state: the GRU unrolls ``length`` steps, no model needed."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        actions, _ = self.actor(obs_t, length, deterministic)
        return actions.cpu().numpy()

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The training env's action: J primitive actions, flattened (``[B, J * act_dim]`` for a batch)."""
        actions = self.act_sequence(obs, self.config.sequence_length, deterministic)
        return actions.reshape(*np.shape(obs)[:-1], -1)

    # --- losses --------------------------------------------------------------------------------------
    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """SAC's soft Bellman error on real primitive transitions; a' is the actor's first action at s'.

        y = r + gamma (1 - terminated) (min_k Q'_k(s', a') - alpha log pi(a'|s'))
        """
        with torch.no_grad():
            next_action, next_logp = self.actor(batch["next_obs"], 1)
            next_q = self.critic_target(batch["next_obs"], next_action[:, 0]).min(dim=0).values
            not_done = 1.0 - batch["terminated"].float()
            target = batch["reward"] + self.config.gamma * not_done * (next_q - self.alpha * next_logp[:, 0])
        q = self.critic(batch["obs"], batch["action"])
        loss = 0.5 * ((q - target) ** 2).mean(dim=1).sum()
        return loss, {"critic_loss": loss.detach(), "q_mean": q.detach().mean()}

    def recall_states(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Temporal recall: s_hat_0 = s, s_hat_{i+1} = model(s_hat_i, a_i); returns ``[B, J, obs_dim]``."""
        states = [obs]
        with torch.set_grad_enabled(self.config.backprop_through_model and torch.is_grad_enabled()):
            acts = actions if self.config.backprop_through_model else actions.detach()
            for i in range(actions.shape[1] - 1):
                next_obs, _ = self.model.elite_mean(states[-1], acts[:, i])
                states.append(next_obs)
        return torch.stack(states, dim=1)

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """L = E_s[ mean_i ( alpha log pi(a_i | s, a_<i) - min_k Q_k(s_hat_i, a_i) ) ] over i = 0..J-1.

        Returns the loss and the detached log-probabilities ``[B, J]`` for the temperature loss.
        """
        obs = batch["obs"][: self.config.actor_batch_size]
        actions, logp = self.actor(obs, self.config.sequence_length)
        return self.recall_loss(obs, actions, logp), logp.detach()

    def recall_loss(self, obs: torch.Tensor, actions: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
        """Score every action of the sequence at its recalled state: mean_i(alpha log pi_i - Q(s_hat_i, a_i))."""
        states = self.recall_states(obs, actions)
        self.critic.requires_grad_(False)  # no critic gradients from the actor loss
        q = self.critic(states.reshape(-1, self.obs_dim), actions.reshape(-1, self.act_dim)).min(dim=0).values
        self.critic.requires_grad_(True)
        return (self.alpha * logp - q.reshape(logp.shape)).mean()

    def model_loss(self, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """Gaussian NLL of the dynamics ensemble on real primitive transitions (``GaussianEnsemble.loss``, with its
        metrics left on the device)."""
        self.before_update(batch)
        target = self.model.targets(batch)
        mean, logvar = self.model(batch["obs"], batch["action"])
        nll = gaussian_nll(mean, logvar, target)
        loss = nll.sum() + logvar_bound_penalty(self.model.min_logvar, self.model.max_logvar)
        return loss, {"model/nll": nll.detach().mean(), "model/mse": ((mean.detach() - target) ** 2).mean()}

    # --- update --------------------------------------------------------------------------------------
    def before_update(self, batch: Batch) -> None:
        """The model's input normaliser is fixed from the first batch (on the host side: it is not captured)."""
        if not self.model_ready:
            self.model.set_normalizer(batch["obs"], batch["action"])
            self.model_ready = True

    def update_step(self, batch: Batch) -> Metrics:
        """One step each on model, critics, sequence actor and temperature, then the target update."""
        model_loss, metrics = self.model_loss(batch)
        optimizer_step(self.model_optimizer, model_loss)

        critic_loss, critic_metrics = self.critic_loss(batch)
        optimizer_step(self.critic_optimizer, critic_loss)

        actor_loss, logp = self.actor_loss(batch)
        optimizer_step(self.actor_optimizer, actor_loss)

        alpha_loss = self.alpha_loss(logp)
        optimizer_step(self.alpha_optimizer, alpha_loss)

        soft_update(self.critic_target, self.critic, self.config.tau)
        metrics.update(critic_metrics)
        metrics.update(actor_loss=actor_loss.detach(), alpha_loss=alpha_loss.detach(), alpha=self.alpha,
                       entropy=-logp.mean())
        return metrics

    #: modules and optimisers saved in full checkpoints (the model too; deployment keeps the actor alone)
    PARTS = ("actor", "critic", "critic_target", "model", "actor_optimizer", "critic_optimizer", "alpha_optimizer",
             "model_optimizer")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "model_ready": self.model_ready}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.model_ready = bool(state.get("model_ready", self.model_ready))
