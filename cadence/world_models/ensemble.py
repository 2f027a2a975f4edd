"""GaussianEnsemble: a probabilistic ensemble of dynamics models in one batched module.

Each member predicts a diagonal Gaussian over (s' - s, r) from normalised (s, a). Members are
evaluated together with ensemble-linear layers (no Python loop over members). The log-variance
is soft-bounded between learned limits (Chua et al. 2018, PETS), and ``elites`` are the members
with the lowest holdout error. It satisfies :class:`~cadence.world_models.base.DynamicsModel`.

A model's architecture travels with its weights: :func:`model_bundle` turns a model into a dict of plain values
(``obs_dim``, ``act_dim``, the config as ints/floats/bools/lists) and its ``state_dict``, which ``torch.save`` writes
and ``torch.load(..., weights_only=True)`` reads back; :func:`model_from_bundle` rebuilds the model from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadence.config import build, check, check_positive, to_dict
from cadence.nn import EnsembleMLP, input_scale


@dataclass(frozen=True)
class EnsembleConfig:
    """Architecture and training settings of a GaussianEnsemble."""

    n_members: int = 7
    """Members trained together on the same batches (each with its own initialisation)."""
    n_elites: int = 5
    """Members with the lowest holdout error used for prediction."""
    hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
    """Hidden widths of every member."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 1e-5
    """Adam weight decay."""
    batch_size: int = 256
    """Transitions per gradient step."""
    holdout_ratio: float = 0.1
    """Share of the data kept out of training to pick elites and stop early."""
    patience: int = 5
    """Epochs without holdout improvement before training stops."""
    max_epochs: int = 200
    """Upper bound on epochs per fit."""
    learn_reward: bool = True
    """Also predict the reward."""

    def __post_init__(self) -> None:
        for name in ("n_members", "n_elites", "lr", "batch_size", "patience", "max_epochs"):
            check_positive(self, name)
        check(self.n_elites <= self.n_members, "n_elites", self.n_elites, f"<= n_members ({self.n_members})")
        check(0.0 < self.holdout_ratio < 1.0, "holdout_ratio", self.holdout_ratio, "in (0, 1)")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")


# The Gaussian head shared by every dynamics model here (GaussianEnsemble, HyperDynamics): one implementation of
# the bounded log-variance, the (s' - s, r) targets, the NLL and the conversion of deltas back to next states.


def bounded_logvar(raw: torch.Tensor, min_logvar: torch.Tensor, max_logvar: torch.Tensor) -> torch.Tensor:
    """Soft-bound a raw log-variance between learned limits (PETS): smooth, so gradients never vanish at a clamp."""
    logvar = max_logvar - F.softplus(max_logvar - raw)
    return min_logvar + F.softplus(logvar - min_logvar)


def logvar_bound_penalty(min_logvar: torch.Tensor, max_logvar: torch.Tensor) -> torch.Tensor:
    """``0.01 (sum max - sum min)``: keeps the learned bounds tight (otherwise the NLL would push them apart)."""
    return 0.01 * (max_logvar.sum() - min_logvar.sum())


def transition_targets(batch: dict[str, torch.Tensor], learn_reward: bool) -> torch.Tensor:
    """``s' - s``, with the reward as a last column when ``learn_reward``: ``[..., obs_dim + learn_reward]``."""
    delta = batch["next_obs"] - batch["obs"]
    if learn_reward:
        return torch.cat([delta, batch["reward"].unsqueeze(-1)], dim=-1)
    return delta


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian NLL per member, constants dropped: ``[M]`` from ``[M, B, D]`` tensors.

    NLL = mean_b,d [ (mu - y)^2 exp(-logvar) + logvar ] / 2
    """
    return 0.5 * (((mean - target) ** 2) * torch.exp(-logvar) + logvar).mean(dim=(1, 2))


def next_state_normal(obs: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                      learn_reward: bool) -> torch.distributions.Normal:
    """The Gaussian over ``(s'[, r])`` from one over ``(s' - s[, r])``."""
    shift = F.pad(obs, (0, 1)) if learn_reward else obs  # rewards are not deltas
    return torch.distributions.Normal(mean + shift, torch.exp(0.5 * logvar))


def split_next_state(obs: torch.Tensor, mean: torch.Tensor,
                     learn_reward: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next state ``[B, obs_dim]`` and reward ``[B]`` (or None) from one mean ``[B, out_dim]`` of the deltas."""
    obs_dim = obs.shape[-1]
    reward = mean[..., obs_dim] if learn_reward else None
    return obs + mean[..., :obs_dim], reward


class GaussianEnsemble(nn.Module):
    """Predicts ``p(s' - s, r | s, a)`` with ``n_members`` Gaussian MLPs at once.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        config: architecture settings.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: EnsembleConfig = EnsembleConfig()):
        super().__init__()
        self.config = config
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.out_dim = obs_dim + int(config.learn_reward)
        self.net = EnsembleMLP(config.n_members, obs_dim + act_dim, config.hidden_sizes, 2 * self.out_dim, nn.SiLU)
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), -10.0))
        # input normalisation statistics, set from data by set_normalizer
        self.register_buffer("in_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(config.n_elites))

    @property
    def predicts_reward(self) -> bool:
        """Whether the last output column is the reward (``config.learn_reward``)."""
        return self.config.learn_reward

    def set_normalizer(self, obs: torch.Tensor, act: torch.Tensor) -> None:
        mean, std = input_scale(torch.cat([obs, act], dim=-1))
        self.in_mean.copy_(mean)
        self.in_std.copy_(std)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of (s' - s[, r]) per member: each ``[n_members, B, out_dim]``.

        ``obs`` and ``act`` are ``[B, ...]`` (shared by members) or ``[n_members, B, ...]``.
        """
        x = (torch.cat([obs, act], dim=-1) - self.in_mean) / self.in_std
        mean, raw_logvar = self.net(x).float().chunk(2, dim=-1)  # float32 under bf16-mixed autocast too
        return mean, bounded_logvar(raw_logvar, self.min_logvar, self.max_logvar)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Gaussian NLL per member, summed over members, plus the log-variance bound penalty.

        NLL = mean_b,d [ (mu - y)^2 exp(-logvar) + logvar ] / 2  (constants dropped)
        ``batch`` tensors may carry a leading member axis (bootstrapped batches) or not.
        """
        target = self.targets(batch)
        mean, logvar = self(batch["obs"], batch["action"])
        nll = gaussian_nll(mean, logvar, target)
        loss = nll.sum() + logvar_bound_penalty(self.min_logvar, self.max_logvar)
        mse = ((mean - target) ** 2).mean()
        return loss, {"model/nll": nll.mean().item(), "model/mse": mse.item()}

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(s' - s[, r])`` of ``batch``: see :func:`transition_targets`."""
        return transition_targets(batch, self.config.learn_reward)

    @torch.no_grad()
    def member_errors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared error of each member's mean on ``batch``: ``[n_members]``."""
        mean, _ = self(batch["obs"], batch["action"])
        return ((mean - self.targets(batch)) ** 2).mean(dim=(1, 2))

    def predict(self, obs: torch.Tensor, act: torch.Tensor) -> torch.distributions.Normal:
        """The per-member distribution over ``(s'[, r])`` (not deltas): batch shape ``[n_members, B, out_dim]``."""
        mean, logvar = self(obs, act)
        return next_state_normal(obs, mean, logvar, self.config.learn_reward)

    def elite_mean(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean next state (and reward) averaged over the elites; differentiable. Shapes ``[B, obs_dim]``, ``[B]``."""
        mean, _ = self(obs, act)
        return split_next_state(obs, mean[self.elites].mean(0), self.config.learn_reward)


#: bundle format version, bumped when the layout of :func:`model_bundle`'s dict changes
BUNDLE_FORMAT = 1


def model_bundle(model: GaussianEnsemble) -> dict[str, Any]:
    """``model`` as a dict of plain values and tensors, safe for ``torch.load(weights_only=True)``.

    Keys: ``kind`` ("GaussianEnsemble"), ``format`` (:data:`BUNDLE_FORMAT`), ``obs_dim``, ``act_dim``, ``config``
    (the :class:`EnsembleConfig` as a dict; tuples become lists) and ``state_dict`` (weights, input normaliser,
    log-variance bounds and elites, on the model's device). :func:`model_from_bundle` inverts it.
    """
    if not isinstance(model, GaussianEnsemble):
        raise TypeError(f"model_bundle takes a GaussianEnsemble, got {type(model).__name__}")
    return {
        "kind": "GaussianEnsemble",
        "format": BUNDLE_FORMAT,
        "obs_dim": int(model.obs_dim),
        "act_dim": int(model.act_dim),
        "config": to_dict(model.config),
        "state_dict": model.state_dict(),
    }


def model_from_bundle(bundle: dict[str, Any], device: str | torch.device | None = None) -> GaussianEnsemble:
    """The model saved by :func:`model_bundle`, with its own sizes and config, its weights loaded, on ``device``
    (default: the CPU). Raises ``ValueError`` for a bundle of another kind or format."""
    kind, fmt = bundle.get("kind"), bundle.get("format")
    if kind != "GaussianEnsemble":
        raise ValueError(f"not a GaussianEnsemble bundle: kind={kind!r}")
    if fmt != BUNDLE_FORMAT:
        raise ValueError(f"GaussianEnsemble bundle format {fmt!r} is not supported (this version reads "
                         f"{BUNDLE_FORMAT})")
    config = build(EnsembleConfig, bundle["config"], "model")
    model = GaussianEnsemble(int(bundle["obs_dim"]), int(bundle["act_dim"]), config)
    if device is not None:
        model = model.to(device)
    model.load_state_dict(bundle["state_dict"])
    return model
