"""MOREC's dynamics reward (Luo et al., ICLR 2024, arXiv 2310.05422), learned adversarially.

The dynamics are read as an agent that maximises a hidden reward which stays the same across transitions.
MOREC recovers that reward from offline data by adversarial inverse RL: a discriminator ``D(s, a, s')`` learns
to tell data transitions from model transitions, and the reward is an ensemble of its historical checkpoints,

    r(s, a, s') = -log(1 - mean_k clip(D_k(s, a, s'), 0, 1)),

over every ``every``-th of the last ``history`` checkpoints (MOREC: 10th of 400). A transition as real as the data
(D = 1/2) scores log 2 = 0.69; MOREC's rollout filter keeps transitions scoring at least 0.6 (D >= 0.45).

The authors released trained rewards, not the code that learns them, so this is cadence's own version:
- positives are data transitions ``(s, a, s')``; negatives keep the same ``(s, a)`` and take ``s'`` from a fixed
  GaussianEnsemble: a uniformly drawn elite's Gaussian sample, plus (for a share of the rows) extra Gaussian noise
  of ``negative_noise`` times the data's per-dimension std of ``s' - s``. The fixed model stands in for the paper's
  generator; the noise scales stand in for the coarse errors of that generator early in its training, so D ranks
  candidates by how far they are from the data's dynamics instead of being flat wherever the model is right;
- D sees ``[s, a, s' - s]`` normalised with the data's statistics (set on the first fit and kept afterwards, as the
  stored checkpoints depend on them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadence.config import check, check_positive, check_widths
from cadence.nn import adam, mlp, optimizer_step
from cadence.replay import ReplayBuffer
from cadence.world_models.base import DynamicsModel
from cadence.world_models.trainer import buffer_transitions

Tensor = torch.Tensor
Data = dict[str, Tensor]
#: ``callback(step, metrics)``, called every ``log_interval`` steps of a fit and after its last step
ProgressCallback = Callable[[int, dict[str, float]], None]

KEYS = ("obs", "action", "next_obs")


@dataclass(frozen=True)
class DynamicsRewardConfig:
    """Discriminator architecture, adversarial training and checkpoint-ensemble settings."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden widths of the discriminator MLP (ReLU)."""
    lr: float = 3e-4
    """Adam learning rate of the discriminator."""
    batch_size: int = 256
    """Data transitions per step; each step also draws as many model transitions."""
    steps: int = 5000
    """Gradient steps per ``fit`` unless ``fit`` is told otherwise."""
    label_smoothing: float = 0.0
    """epsilon: targets are 1 - epsilon for data and epsilon for model transitions (keeps D off 0 and 1)."""
    negative_noise: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)
    """Extra noise on model transitions, in units of the data's per-dimension std of s' - s: each negative row draws
    one of these scales uniformly (0: the model's own sample)."""
    history: int = 400
    """Checkpoints the reward ensemble spans: the last ``history`` (MOREC: 400)."""
    every: int = 10
    """Of those, every ``every``-th enters the ensemble (MOREC: 10, so 40 discriminators)."""
    checkpoint_interval: int = 5
    """Gradient steps between two checkpoints (5: the 40 discriminators span the last 2000 steps, 50 apart)."""
    log_interval: int = 100
    """Steps between progress callbacks (and loss finiteness checks)."""

    def __post_init__(self) -> None:
        for name in ("lr", "batch_size", "steps", "history", "every", "checkpoint_interval", "log_interval"):
            check_positive(self, name)
        check_widths(self, "hidden_sizes")
        check(0.0 <= self.label_smoothing < 0.5, "label_smoothing", self.label_smoothing, "in [0, 0.5)")
        check(len(self.negative_noise) > 0 and all(s >= 0 and math.isfinite(s) for s in self.negative_noise),
              "negative_noise", self.negative_noise, "a non-empty list of finite scales >= 0")
        check(self.history % self.every == 0, "history", self.history, f"a multiple of every ({self.every})")

    @property
    def n_discriminators(self) -> int:
        """Size of the reward ensemble: history // every."""
        return self.history // self.every


class Discriminator(nn.Module):
    """D(s, a, s') = sigmoid(MLP([s, a, s' - s] normalised)) in (0, 1): the probability that a transition is data.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden_sizes: hidden widths of the MLP.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        in_dim = 2 * obs_dim + act_dim
        self.net = mlp(in_dim, hidden_sizes, 1, nn.ReLU)
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_std", torch.ones(in_dim))

    def raw_features(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        return torch.cat([obs, act, next_obs - obs], dim=-1)

    def set_normalizer(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> None:
        x = self.raw_features(obs, act, next_obs)
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(x.std(0).nan_to_num(1.0).clamp_min(1e-6))  # a constant input keeps a unit scale

    def features(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """Normalised ``[s, a, s' - s]``: ``[B, 2 obs_dim + act_dim]``."""
        return (self.raw_features(obs, act, next_obs) - self.in_mean) / self.in_std

    def logits(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """logit D(s, a, s'): ``[B]``."""
        return self.net(self.features(obs, act, next_obs)).squeeze(-1)

    def forward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """D(s, a, s') in (0, 1): ``[B]``."""
        return torch.sigmoid(self.logits(obs, act, next_obs))


class DynamicsReward:
    """MOREC's dynamics reward: a discriminator trained against a GaussianEnsemble, and its checkpoint ensemble.

    Only the checkpoints the reward uses are stored: checkpoint ``c`` (counted from 1 over all fits) is kept when
    ``c % every == 0``, in a ring of ``history // every`` slots, so the stored ones are exactly the multiples of
    ``every`` among the last ``history`` checkpoints.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        config: discriminator and training settings.
        device: where the discriminator and its checkpoints live.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: DynamicsRewardConfig = DynamicsRewardConfig(),
                 device: str | torch.device = "cpu"):
        self.config = config
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.device = torch.device(device)
        self.discriminator = Discriminator(obs_dim, act_dim, config.hidden_sizes).to(self.device)
        self.optimizer = adam(self.discriminator.parameters(), config.lr)
        slots = config.n_discriminators
        # one stacked tensor per discriminator parameter: [slots, *param.shape]
        self.snapshots = [torch.zeros(slots, *p.shape, device=self.device) for p in self.discriminator.parameters()]
        # the checkpoint number each slot holds (-1: empty)
        self.snapshot_ids = torch.full((slots,), -1, dtype=torch.long, device=self.device)
        self.n_checkpoints = 0
        self.n_steps = 0
        self.normalizer_set = False
        self.chunk_elements = 2**21  # see snapshot_logits

    # ----------------------------------------------------------------------------------------------- reward
    @property
    def n_stored(self) -> int:
        """Discriminators in the reward ensemble now (up to history // every)."""
        return int((self.snapshot_ids >= 0).sum())

    @torch.no_grad()
    def snapshot_logits(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """logit D_k(s, a, s') of every stored checkpoint: ``[n_stored, B]``, one batched pass over checkpoints.

        Rows go in chunks that keep each hidden activation ``[n_stored, rows, width]`` near ``chunk_elements`` numbers:
        on a busy 2-core CPU, chunks of 2^20-2^22 ran about 1.5x faster than chunks of 2^24 (noisy timings).
        """
        self._check_inputs(obs, act, next_obs)
        if self.n_stored == 0:
            raise RuntimeError("the dynamics reward has no checkpoints yet: call fit first")
        slots = self.snapshot_ids >= 0
        params = [p[slots] for p in self.snapshots]
        x = self.discriminator.features(obs, act, next_obs)
        rows = max(1, self.chunk_elements // (len(params[0]) * max(self.config.hidden_sizes)))
        return torch.cat([self._stacked_forward(params, chunk) for chunk in x.split(rows)], dim=1)

    def _stacked_forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        """The discriminator MLP with each Linear's weights stacked over checkpoints: ``[B, in] -> [K, B]``."""
        h, weights = x, iter(params)
        for module in self.discriminator.net:
            if not isinstance(module, nn.Linear):
                h = module(h)  # elementwise activation
                continue
            w, b = next(weights), next(weights)  # [K, out, in], [K, out]
            k, out, n_in = w.shape
            if h.dim() == 2:  # the first layer: every checkpoint sees the same rows, one [B, in] x [in, K out] matmul
                h = (h @ w.reshape(k * out, n_in).T).reshape(-1, k, out).transpose(0, 1) + b.unsqueeze(1)
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # [K, B, in] -> [K, B, out]
        return h.squeeze(-1)

    def probability(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """mean_k clip(D_k(s, a, s'), 0, 1): ``[B]`` (the sigmoid already lies in [0, 1])."""
        return torch.sigmoid(self.snapshot_logits(obs, act, next_obs)).mean(0)

    def reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """r(s, a, s') = -log(1 - mean_k D_k(s, a, s')): ``[B]``, in [0, inf).

        Computed in log space, -log(mean_k sigmoid(-l_k)) = log K - logsumexp_k logsigmoid(-l_k) with l_k the logits,
        which is the same number but stays finite where 1 - mean_k D_k rounds to 0 in float32 (every D_k near 1);
        no clamp of 1 - mean D is needed, and none biases the largest rewards.
        """
        logits = self.snapshot_logits(obs, act, next_obs)
        return math.log(logits.shape[0]) - torch.logsumexp(F.logsigmoid(-logits), dim=0)

    # ----------------------------------------------------------------------------------------------- training
    def loss(self, positives: Data, negatives: Data) -> tuple[Tensor, dict[str, float]]:
        """Binary cross-entropy of the current discriminator, data as 1 and model transitions as 0:

        L = -mean_data log D(s, a, s') - mean_model log(1 - D(s, a, s')), targets smoothed to 1 - eps and eps.
        """
        eps = self.config.label_smoothing
        pos = self.discriminator.logits(positives["obs"], positives["action"], positives["next_obs"])
        neg = self.discriminator.logits(negatives["obs"], negatives["action"], negatives["next_obs"])
        loss = (F.binary_cross_entropy_with_logits(pos, torch.full_like(pos, 1 - eps))
                + F.binary_cross_entropy_with_logits(neg, torch.full_like(neg, eps)))
        return loss, {"model/dr_loss": loss.item()}

    @torch.no_grad()
    def negatives(self, model: DynamicsModel, obs: Tensor, act: Tensor, noise_std: Tensor,
                  generator: torch.Generator | None = None, scales: Tensor | None = None) -> Tensor:
        """Model next states for ``(obs, act)``: a uniformly drawn elite's Gaussian sample per row, plus noise
        ``scale * noise_std * N(0, I)`` with ``scale`` drawn per row from ``scales`` (default: ``negative_noise``)."""
        n, dev = obs.shape[0], obs.device
        mean, logvar = model(obs, act)  # [members, B, out]: deltas (and reward)
        pick = model.elites.to(dev)[torch.randint(len(model.elites), (n,), generator=generator, device=dev)]
        rows = torch.arange(n, device=dev)
        mean, std = mean[pick, rows, : self.obs_dim], torch.exp(0.5 * logvar[pick, rows, : self.obs_dim])
        delta = mean + std * torch.randn(mean.shape, generator=generator, device=dev)
        if scales is None:
            scales = torch.tensor(self.config.negative_noise, device=dev)
        scale = scales[torch.randint(len(scales), (n,), generator=generator, device=dev)]
        delta = delta + scale.unsqueeze(-1) * noise_std * torch.randn(delta.shape, generator=generator, device=dev)
        return obs + delta

    def fit(self, data: Data | ReplayBuffer, model: DynamicsModel, steps: int | None = None,
            generator: torch.Generator | None = None, callback: ProgressCallback | None = None) -> dict[str, float]:
        """Train the discriminator for ``steps`` gradient steps (default ``config.steps``), checkpointing as it goes.

        Args:
            data: offline transitions, a dict with keys obs, action, next_obs (``[N, dim]`` each), or a ReplayBuffer.
            model: a trained GaussianEnsemble; it is not changed.
            steps: gradient steps of this fit.
            generator: random source for batches and negatives (on the data's device).
            callback: ``callback(step, metrics)`` every ``log_interval`` steps and after the last one.

        Returns:
            Metrics of the reward ensemble on up to 4096 data rows and as many model transitions:
            ``model/dr_acc_data`` (share of data with mean D > 1/2), ``model/dr_acc_model`` (share of the model's own
            samples with mean D < 1/2), ``model/dr_acc_negatives`` (the same on training negatives, noise included),
            ``model/dr_reward_data`` and ``model/dr_reward_model`` (mean rewards), and the last loss.
        """
        data = self._check_data(data, model)
        cfg = self.config
        steps = cfg.steps if steps is None else steps
        check(steps > 0, "steps", steps, "> 0")
        if (self.n_steps + steps) // cfg.checkpoint_interval < cfg.every:
            raise ValueError(f"{steps} steps make no stored checkpoint: the reward needs at least every * "
                             f"checkpoint_interval = {cfg.every * cfg.checkpoint_interval} steps in all")
        obs, act, next_obs = (data[k] for k in KEYS)
        if not self.normalizer_set:
            self.discriminator.set_normalizer(obs, act, next_obs)
            self.normalizer_set = True
        noise_std = (next_obs - obs).std(0).nan_to_num(0.0)  # a single transition has no spread: no extra noise
        n, dev = obs.shape[0], obs.device
        metrics: dict[str, float] = {}
        for step in range(1, steps + 1):
            idx = torch.randint(n, (cfg.batch_size,), generator=generator, device=dev)
            pos = {"obs": obs[idx], "action": act[idx], "next_obs": next_obs[idx]}
            neg = dict(pos, next_obs=self.negatives(model, pos["obs"], pos["action"], noise_std, generator))
            loss, metrics = self.loss(pos, neg)
            optimizer_step(self.optimizer, loss)
            self.n_steps += 1
            if self.n_steps % cfg.checkpoint_interval == 0:
                self._checkpoint()
            if step % cfg.log_interval == 0 or step == steps:
                if not math.isfinite(metrics["model/dr_loss"]):
                    raise FloatingPointError(f"model/dr_loss became {metrics['model/dr_loss']} at discriminator "
                                             f"step {self.n_steps}; the reward's checkpoints since the last check "
                                             "may be bad")
                if callback is not None:
                    callback(step, metrics)
        return {**metrics, **self.evaluate(data, model, noise_std, generator), "model/dr_steps": float(self.n_steps)}

    @torch.no_grad()
    def evaluate(self, data: Data, model: DynamicsModel, noise_std: Tensor,
                 generator: torch.Generator | None = None, rows: int = 4096) -> dict[str, float]:
        """Accuracy and mean reward of the reward ensemble on data, model samples and training negatives."""
        obs, act, next_obs = (data[k] for k in KEYS)
        idx = torch.randint(obs.shape[0], (min(rows, obs.shape[0]),), generator=generator, device=obs.device)
        obs, act, next_obs = obs[idx], act[idx], next_obs[idx]
        plain = self.negatives(model, obs, act, noise_std, generator, scales=torch.zeros(1, device=obs.device))
        noisy = self.negatives(model, obs, act, noise_std, generator)
        p_data, p_plain, p_noisy = (self.probability(obs, act, s) for s in (next_obs, plain, noisy))
        return {
            "model/dr_acc_data": (p_data > 0.5).float().mean().item(),
            "model/dr_acc_model": (p_plain < 0.5).float().mean().item(),
            "model/dr_acc_negatives": (p_noisy < 0.5).float().mean().item(),
            "model/dr_reward_data": self.reward(obs, act, next_obs).mean().item(),
            "model/dr_reward_model": self.reward(obs, act, plain).mean().item(),
        }

    @torch.no_grad()
    def _checkpoint(self) -> None:
        """Count a checkpoint of the current weights; store it when it is an ``every``-th one."""
        self.n_checkpoints += 1
        if self.n_checkpoints % self.config.every:
            return
        slot = (self.n_checkpoints // self.config.every - 1) % self.config.n_discriminators
        for stack, p in zip(self.snapshots, self.discriminator.parameters()):
            stack[slot].copy_(p)
        self.snapshot_ids[slot] = self.n_checkpoints

    # ----------------------------------------------------------------------------------------------- checks
    def _check_data(self, data: Data | ReplayBuffer, model: DynamicsModel) -> Data:
        if isinstance(data, ReplayBuffer):
            data = buffer_transitions(data)
        missing = [k for k in KEYS if k not in data]
        if missing:
            raise ValueError(f"dynamics reward data lacks key(s) {missing}; it needs {list(KEYS)}")
        if (model.obs_dim, model.act_dim) != (self.obs_dim, self.act_dim):
            raise ValueError(f"the model is for obs_dim={model.obs_dim}, act_dim={model.act_dim} but the dynamics "
                             f"reward for obs_dim={self.obs_dim}, act_dim={self.act_dim}")
        self._check_inputs(data["obs"], data["action"], data["next_obs"])
        if data["obs"].shape[0] < 1:
            raise ValueError("dynamics reward data is empty")
        return {k: data[k].to(self.device) for k in KEYS}

    def _check_inputs(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> None:
        """Shapes ``[B, obs_dim], [B, act_dim], [B, obs_dim]`` and finite values, or a ValueError naming the input."""
        for name, x, dim in (("obs", obs, self.obs_dim), ("action", act, self.act_dim),
                             ("next_obs", next_obs, self.obs_dim)):
            if x.dim() != 2 or x.shape[1] != dim:
                raise ValueError(f"{name} must have shape [batch, {dim}], got {list(x.shape)}")
            if x.shape[0] != obs.shape[0]:
                raise ValueError(f"{name} has {x.shape[0]} rows but obs has {obs.shape[0]}")
            if not torch.isfinite(x).all():
                row = int(torch.nonzero(~torch.isfinite(x))[0, 0])
                raise ValueError(f"{name} contains NaN or inf (first in row {row})")

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Discriminator, optimiser, stored checkpoints and counters: everything to resume or reuse the reward."""
        return {
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "snapshots": [s.clone() for s in self.snapshots],
            "snapshot_ids": self.snapshot_ids.clone(),
            "n_checkpoints": self.n_checkpoints,
            "n_steps": self.n_steps,
            "normalizer_set": self.normalizer_set,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["snapshots"]) != len(self.snapshots) or any(
                a.shape != b.shape for a, b in zip(state["snapshots"], self.snapshots)):
            raise ValueError("stored dynamics-reward checkpoints do not match this config (hidden sizes, history, "
                             f"every): expected shapes {[tuple(s.shape) for s in self.snapshots]}")
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        for dst, src in zip(self.snapshots, state["snapshots"]):
            dst.copy_(src)
        self.snapshot_ids.copy_(state["snapshot_ids"])
        self.n_checkpoints = int(state["n_checkpoints"])
        self.n_steps = int(state["n_steps"])
        self.normalizer_set = bool(state["normalizer_set"])
