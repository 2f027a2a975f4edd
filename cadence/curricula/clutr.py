"""CLUTR's stage 2: a PAIRED teacher whose actions are latents of the frozen RVAE, trained by PPO on regret.

CLUTR (Azad et al., ICML 2023; reference code clutr/clutr) replaces PAIRED's step-by-step level builder with a
one-step teacher acting in the latent space of a frozen recurrent VAE (:mod:`cadence.curricula.rvae`): it draws a
latent z, the decoder turns z into a maze layout, the student plays it, and the teacher is rewarded with the
regret of that layout. As in the reference (``MultigridNetworkTaskEmbedSingleStepContinuous`` trained by the
``AdversarialRunner`` with PPO):

* **Policy.** A noise vector ``u ~ U[0, 1]^noise_dim`` (the env's ``random_z``) -> a linear embedding of
  ``hidden`` units -> per latent dimension a Beta(1 + softplus(.), 1 + softplus(.)) over [0, 1], scaled onto the
  latent box; a linear value head on the same embedding is the PPO baseline.
* **Learning.** Every ``batch_size`` episodes (the reference: one per parallel env, 32) one PPO update on that
  batch: advantages ``regret - V(u)`` normalised over the batch, ``ppo_epochs`` epochs of one minibatch, clipped
  ratio and clipped value loss (``clip``), Adam, gradient norm clipped at ``max_grad_norm``.
* **Reward.** The regret of the episode, given by the caller: ``update(z, episode_return, regret=...)``. The
  teacher sees task parameters, returns and regrets only, never agents (the layering rule); the training loop's
  hook computes the regret (:mod:`cadence.loops.curriculum`). :data:`REGRETS` names the sources a hook knows:
  ``paired`` (the paper's: an antagonist student plays the same layout, regret = max(0, antagonist return -
  protagonist return), as the reference code clips it), ``pvl`` and ``maxmc`` (estimates from the student's own
  critic, Robust PLR's positive value loss and MaxMC, for when a second student is too dear).

Deviations from the reference, for a CPU budget of about a hundred episodes (a 30k-step maze run) rather than its
~30,000 teacher updates (docs/ARCHITECTURE.md lists them all): ``lr`` 1e-2 and ``batch_size`` 8, where the
reference has 1e-4 and 32 (on a synthetic regret over 128 episodes, 1e-4 left the Beta where it started, 32 at 1e-2
moved it a third as far as 8 at 1e-2); the Beta heads start near zero, so the first proposals are centred in the box
instead of skewed by a random initialisation.

Its params are latents, not a task family's box: :meth:`CLUTRTeacher.task` turns one into the layout code the maze
env takes (:mod:`cadence.envs.maze_tasks`). Build it by name with
:func:`~cadence.curricula.registry.make_layout_teacher` (``"clutr"``; ``cadence train sac --env PointMazeLayout-v0
--teacher clutr``), with :func:`make_clutr_teacher`, or directly.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Beta

from cadence.curricula.base import ArrayLike, Teacher, as_array, as_tensor
from cadence.curricula.rvae import LayoutRVAE, fit_rvae
from cadence.envs.maze_tasks import AGENT, FREE, layout_code
from cadence.envs.mazes import MazeLayout, shortest_path

#: where a CLUTR teacher's regret comes from (computed by the loop's hook, which sees the agents)
REGRETS: tuple[str, ...] = ("paired", "pvl", "maxmc")
#: decoded layouts kept per teacher so ``update`` does not decode the latent ``sample`` already decoded
_CACHE_SIZE = 1024
#: proposals remembered until their episode is reported (one per running world; more is a caller's bug)
_OPEN_PROPOSALS = 64
#: Beta samples are kept this far inside (0, 1): at 0 or 1 a Beta's log-density can be infinite
_EDGE = 1e-6


def rvae_digest(rvae: LayoutRVAE) -> str:
    """A short hash of the RVAE's weights: a teacher state only makes sense with the decoder it was saved with."""
    h = hashlib.sha1()
    for name, tensor in rvae.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class LatentPolicy(nn.Module):
    """The reference's one-step teacher: noise -> linear embedding -> a Beta per latent dimension, and a value.

    :param noise_dim: size of the noise input (the reference's ``random_z_dim``, 50).
    :param hidden: embedding width (the reference's ``scalar_fc``, 10).
    :param latent_dim: number of Beta-distributed outputs.
    """

    def __init__(self, noise_dim: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(noise_dim, hidden)
        self.value = nn.Linear(hidden, 1)
        self.alpha = nn.Linear(hidden, latent_dim)
        self.beta = nn.Linear(hidden, latent_dim)
        for layer in (self.embed, self.value, self.alpha, self.beta):
            nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(self.embed.weight)
        nn.init.orthogonal_(self.value.weight)
        # near-zero heads: every dimension starts at Beta(1.69, 1.69), centred in the box whatever the noise
        nn.init.orthogonal_(self.alpha.weight, gain=0.01)
        nn.init.orthogonal_(self.beta.weight, gain=0.01)

    def forward(self, noise: torch.Tensor) -> tuple[Beta, torch.Tensor]:
        """The Beta over [0, 1]^latent_dim and the value, for noise ``[B, noise_dim]``."""
        e = self.embed(noise)
        return Beta(1 + F.softplus(self.alpha(e)), 1 + F.softplus(self.beta(e))), self.value(e).squeeze(-1)


def ppo_update(policy: LatentPolicy, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], clip: float,
               epochs: int, value_coef: float, entropy_coef: float, max_grad_norm: float) -> dict[str, float]:
    """PPO on one batch of one-step episodes (``noise``, unit sample ``x``, old ``logp`` and ``value``,
    ``regret``), as the reference's PPO: the return is the regret itself, advantages are normalised over the batch,
    one minibatch per epoch, clipped ratio and clipped value loss. Returns the last epoch's losses."""
    regret, old_value, old_logp = batch["regret"], batch["value"], batch["logp"]
    advantage = regret - old_value
    advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-5)
    out: dict[str, float] = {}
    for _ in range(epochs):
        dist, value = policy(batch["noise"])
        ratio = (dist.log_prob(batch["x"]).sum(-1) - old_logp).exp()
        policy_loss = -torch.min(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage).mean()
        clipped = old_value + (value - old_value).clamp(-clip, clip)
        value_loss = 0.5 * torch.max((value - regret) ** 2, (clipped - regret) ** 2).mean()
        entropy = dist.entropy().sum(-1).mean()
        optimizer.zero_grad()
        (value_coef * value_loss + policy_loss - entropy_coef * entropy).backward()
        nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
        optimizer.step()
        out = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.item()}
    return out


class CLUTRTeacher(Teacher):
    """Proposes RVAE latents z in ``[low, high]^latent_dim``; :meth:`decode` gives the layout to train on.

    :param rvae: a trained, frozen :class:`~cadence.curricula.rvae.LayoutRVAE`.
    :param low: lower bound of the latent box, a scalar or one per dimension (default ``-rvae.latent_bound``).
    :param high: upper bound (default ``+rvae.latent_bound``, the squashed latents' range).
    :param seed: seed of the teacher's generator and of its network's initialisation.
    :param reward_range: optional ``(r_min, r_max)``; kept for the protocol (regrets come from the caller).
    :param regret: where the training loop takes each episode's regret from: one of :data:`REGRETS`.
    :param batch_size: episodes per PPO update (reference: 32, its number of parallel envs).
    :param lr: Adam learning rate (reference: 1e-4).
    :param ppo_epochs: PPO epochs per update, one minibatch each (reference: 5).
    :param clip: PPO's ratio and value clipping (reference: 0.2).
    :param noise_dim: size of the noise the policy is conditioned on (reference: 50).
    :param hidden: width of the noise embedding (reference: 10).
    :param value_coef: weight of the value loss (reference: 0.5).
    :param entropy_coef: weight of the entropy bonus (reference: 0).
    :param max_grad_norm: gradient norm clip (reference: 0.5).
    """

    name = "clutr"

    def __init__(self, rvae: LayoutRVAE, low: ArrayLike | None = None, high: ArrayLike | None = None, seed: int = 0,
                 reward_range: Sequence[float] | None = None, regret: str = "paired", batch_size: int = 8,
                 lr: float = 1e-2, ppo_epochs: int = 5, clip: float = 0.2, noise_dim: int = 50, hidden: int = 10,
                 value_coef: float = 0.5, entropy_coef: float = 0.0, max_grad_norm: float = 0.5) -> None:
        dim = rvae.latent_dim
        low = -rvae.latent_bound if low is None else low
        high = rvae.latent_bound if high is None else high
        # a scalar bound stands for every latent dimension
        low, high = (np.broadcast_to(np.asarray(b, dtype=np.float64), (dim,)) for b in (low, high))
        super().__init__(low, high, seed=seed, reward_range=reward_range)
        _check_settings(regret, batch_size, lr, ppo_epochs, clip, noise_dim, hidden, value_coef, entropy_coef,
                        max_grad_norm)
        self.rvae = rvae.freeze()
        self.regret_kind = regret
        self.batch_size, self.lr, self.ppo_epochs, self.clip = int(batch_size), float(lr), int(ppo_epochs), float(clip)
        self.noise_dim, self.hidden = int(noise_dim), int(hidden)
        self.value_coef, self.entropy_coef = float(value_coef), float(entropy_coef)
        self.max_grad_norm = float(max_grad_norm)
        self._digest = rvae_digest(rvae)
        with torch.random.fork_rng(devices=[]):  # seeded weights, and the run's global stream left untouched
            torch.manual_seed(self.seed)
            self.policy = LatentPolicy(self.noise_dim, self.hidden, dim)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr, eps=1e-5)
        self.generations = 0
        self.last_losses: dict[str, float] = {}
        self._open: OrderedDict[bytes, dict[str, np.ndarray]] = OrderedDict()  # proposals awaiting their episode
        self._batch: list[dict[str, np.ndarray]] = []  # reported proposals of the coming update
        self._regrets: list[float] = []
        self._solvable: list[bool] = []
        self._cache: OrderedDict[bytes, MazeLayout] = OrderedDict()

    # ----------------------------------------------------------------------------------------------- public API
    def decode(self, z: ArrayLike) -> MazeLayout:
        """The layout the latent ``z`` stands for (greedy decoding, repaired; the same z gives the same layout)."""
        if isinstance(z, torch.Tensor):
            z = z.detach().cpu().numpy()
        z32 = np.asarray(z, dtype=np.float32).reshape(-1)
        key = z32.tobytes()
        if key not in self._cache:
            self._cache[key] = self.rvae.decode_layouts(z32)[0]
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return self._cache[key]

    def task(self, params: ArrayLike) -> np.ndarray:
        """The code of the layout that latent ``params`` decodes to: what the maze env takes."""
        return layout_code(self.decode(params))

    @property
    def task_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.rvae.codec.n_cells
        return np.full(n, float(FREE)), np.full(n, float(AGENT))

    def update(self, params: ArrayLike, episode_return: float, regret: float | None = None) -> None:
        """Report the episode on latent ``params`` (one this teacher proposed) and its ``regret``, the PPO reward."""
        if regret is None:
            raise ValueError("the clutr teacher learns from regret: report update(z, episode_return, regret=...) "
                             f"with the regret its hook computes ({self.regret_kind}; see cadence.loops.curriculum)")
        if not math.isfinite(float(regret)):
            raise ValueError(f"clutr teacher: regret must be finite, got {regret}")
        key = self._check_params(params).tobytes()
        if key not in self._open:
            raise ValueError("clutr teacher: update() got a latent this teacher did not propose (or already heard "
                             "about); report each sample() once")
        super().update(params, episode_return)
        proposal = self._open.pop(key)
        self._batch.append({**proposal, "regret": np.array(float(regret))})
        self._regrets.append(float(regret))
        self._solvable.append(shortest_path(self.decode(params)) is not None)
        if len(self._batch) >= self.batch_size:
            self._learn()

    @property
    def regrets(self) -> np.ndarray:
        """The regret reported with every episode, in order."""
        return np.array(self._regrets, dtype=np.float64)

    def search(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std, in latent units, of the policy's proposals at the mean noise (0.5 everywhere)."""
        with torch.no_grad():
            dist, _ = self.policy(torch.full((1, self.noise_dim), 0.5))
        scale = self.high - self.low
        mean = self.low + scale * dist.mean[0].double().numpy()
        return mean, scale * dist.stddev[0].double().numpy()

    def metrics(self) -> dict[str, float]:
        recent = self._regrets[-self.batch_size:]
        solvable = self._solvable[-self.batch_size:]
        mean, std = self.search()
        centre = (self.low + self.high) / 2
        return {**super().metrics(), "regret_mean": float(np.mean(recent)) if recent else 0.0,
                "solvable": float(np.mean(solvable)) if solvable else 0.0, "search_std": float(std.mean()),
                "search_shift": float(np.linalg.norm(mean - centre) / math.sqrt(self.dim)),
                "generations": float(self.generations), **self.last_losses}

    def hparams(self) -> dict[str, Any]:
        return {"regret": self.regret_kind, "batch_size": self.batch_size, "lr": self.lr,
                "ppo_epochs": self.ppo_epochs, "clip": self.clip, "noise_dim": self.noise_dim, "hidden": self.hidden,
                "value_coef": self.value_coef, "entropy_coef": self.entropy_coef,
                "max_grad_norm": self.max_grad_norm, "rvae": self._digest}

    # ---------------------------------------------------------------------------------------------- internals
    def _sample(self) -> np.ndarray:
        noise = self.rng.random(self.noise_dim).astype(np.float32)
        with torch.no_grad():
            dist, value = self.policy(torch.from_numpy(noise)[None])
        # the draw comes from the teacher's own generator, so a restored teacher proposes the same latents
        x = np.clip(self.rng.beta(dist.concentration1[0].numpy(), dist.concentration0[0].numpy()), _EDGE, 1 - _EDGE)
        x = x.astype(np.float32)
        with torch.no_grad():
            logp = dist.log_prob(torch.from_numpy(x)[None]).sum(-1)
        z = np.clip(self.low + (self.high - self.low) * x.astype(np.float64), self.low, self.high)
        self._open[z.tobytes()] = {"z": z, "noise": noise, "x": x, "logp": logp[0].numpy(), "value": value[0].numpy()}
        if len(self._open) > _OPEN_PROPOSALS:
            self._open.popitem(last=False)
        return z

    def _learn(self) -> None:
        batch = {k: torch.from_numpy(np.stack([b[k] for b in self._batch])).float() for k in _BATCH_FIELDS[1:]}
        self._batch = []
        self.last_losses = ppo_update(self.policy, self.optimizer, batch, self.clip, self.ppo_epochs,
                                      self.value_coef, self.entropy_coef, self.max_grad_norm)
        self.generations += 1

    def _state(self) -> dict[str, Any]:
        return {"policy": {k: v.clone() for k, v in self.policy.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "generations": self.generations,
                "last_losses": dict(self.last_losses), "open": _stack(list(self._open.values()), _OPEN_FIELDS),
                "batch": _stack(self._batch, _BATCH_FIELDS), "regrets": as_tensor(self._regrets),
                "solvable": torch.tensor(self._solvable, dtype=torch.bool)}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generations = int(state["generations"])
        self.last_losses = {k: float(v) for k, v in state["last_losses"].items()}
        self._open = OrderedDict((p["z"].tobytes(), p) for p in _unstack(state["open"]))
        self._batch = _unstack(state["batch"])
        self._regrets = as_array(state["regrets"]).reshape(-1).tolist()
        self._solvable = [bool(s) for s in state["solvable"].tolist()]


def _check_settings(regret: str, batch_size: int, lr: float, ppo_epochs: int, clip: float, noise_dim: int,
                    hidden: int, value_coef: float, entropy_coef: float, max_grad_norm: float) -> None:
    """``ValueError`` naming every CLUTR teacher setting out of range."""
    bad = []
    if regret not in REGRETS:
        bad.append(f"regret must be one of {', '.join(REGRETS)}, got {regret!r}")
    for name, value, ok in (("batch_size", batch_size, batch_size >= 2), ("lr", lr, lr > 0),
                            ("ppo_epochs", ppo_epochs, ppo_epochs >= 1), ("clip", clip, 0 < clip < 1),
                            ("noise_dim", noise_dim, noise_dim >= 1), ("hidden", hidden, hidden >= 1),
                            ("value_coef", value_coef, value_coef >= 0),
                            ("entropy_coef", entropy_coef, entropy_coef >= 0),
                            ("max_grad_norm", max_grad_norm, max_grad_norm > 0)):
        if not ok:
            bad.append(f"{name} out of range, got {value}")
    if bad:
        raise ValueError("CLUTR teacher: " + "; ".join(bad) + " (batch_size >= 2: PPO normalises advantages over "
                         "the batch; 0 < clip < 1; lr, max_grad_norm > 0)")


#: what a proposal keeps until its episode is reported, and what a reported one adds
_OPEN_FIELDS = ("z", "noise", "x", "logp", "value")
_BATCH_FIELDS = (*_OPEN_FIELDS, "regret")


def _stack(proposals: list[dict[str, np.ndarray]], fields: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Proposals as one tensor per field, rows in order (what a checkpoint holds); ``z`` stays float64."""
    return {k: torch.from_numpy(np.array([p[k] for p in proposals], dtype=np.float64 if k == "z" else np.float32))
            for k in fields}


def _unstack(rows: dict[str, torch.Tensor]) -> list[dict[str, np.ndarray]]:
    """Inverse of :func:`_stack`."""
    return [{k: v[i].numpy().copy() for k, v in rows.items()} for i in range(len(rows["z"]))]


def make_clutr_teacher(rvae: LayoutRVAE | None = None, seed: int = 0, reward_range: Sequence[float] | None = None,
                       shape: tuple[int, int] = (8, 8), rvae_kwargs: dict[str, Any] | None = None,
                       fit_kwargs: dict[str, Any] | None = None, **teacher_kwargs: Any) -> CLUTRTeacher:
    """A :class:`CLUTRTeacher` on ``rvae``; without one, first builds a :class:`LayoutRVAE` on ``shape`` grids
    (``rvae_kwargs``, the paper's sizes by default) and trains it with :func:`fit_rvae` (``fit_kwargs``, seeded with
    ``seed``) -- minutes at the paper's sizes on a CPU, so train once and pass the frozen model where possible."""
    if rvae is None:
        rvae = LayoutRVAE(shape, **(rvae_kwargs or {}))
        fit_rvae(rvae, **{"seed": seed, **(fit_kwargs or {})})
    return CLUTRTeacher(rvae, seed=seed, reward_range=reward_range, **teacher_kwargs)
