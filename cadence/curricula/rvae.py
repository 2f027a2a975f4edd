"""CLUTR's stage 1: a recurrent VAE over maze-layout token sequences, trained unsupervised and then frozen.

Architecture as in CLUTR (Azad et al., ICML 2023; repository clutr/clutr; docs/ARCHITECTURE.md, "CLUTR"):

* token embedding -> bidirectional LSTM encoder (600 units per direction, as the authors' code) -> linear heads for
  the mean and log-variance of a 64-d Gaussian;
* the sample is squashed into ``[-bound, bound] = [-4, 4]`` by ``bound * tanh(z / bound)`` (identity near 0, so the
  KL term still shapes the code);
* decoder: a 2-layer LSTM (800 units) whose input at every step is the previous token's embedding concatenated
  with the squashed latent; trained with teacher forcing, used with greedy decoding.

The teacher acts in the squashed space, so every latent in the box ``[-4, 4]^64`` decodes to some sequence, and
:class:`~cadence.envs.mazes.LayoutCodec`'s repair turns it into a valid layout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cadence.envs.mazes import END, GO, PAD, LayoutCodec, MazeLayout, random_layouts
from cadence.io import atomic_torch_save


class LayoutRVAE(nn.Module):
    """Recurrent VAE over layout token sequences of one grid ``shape``.

    :param shape: interior grid ``(H, W)`` of the layouts.
    :param max_obstacles: the codec's obstacle cap (default a third of the cells).
    :param embed_dim: token embedding size.
    :param encoder_hidden: LSTM units per direction of the encoder (CLUTR: 600).
    :param latent_dim: latent size (CLUTR: 64).
    :param decoder_hidden: decoder LSTM units (CLUTR: 800).
    :param decoder_layers: decoder LSTM layers (CLUTR: 2).
    :param latent_bound: the squashed latent lies in ``[-latent_bound, latent_bound]`` (CLUTR: 4).
    """

    def __init__(self, shape: tuple[int, int] = (8, 8), max_obstacles: int | None = None, embed_dim: int = 300,
                 encoder_hidden: int = 600, latent_dim: int = 64, decoder_hidden: int = 800, decoder_layers: int = 2,
                 latent_bound: float = 4.0) -> None:
        super().__init__()
        self.codec = LayoutCodec(shape, max_obstacles)
        self.config = {"shape": tuple(self.codec.shape), "max_obstacles": self.codec.max_obstacles,
                       "embed_dim": embed_dim, "encoder_hidden": encoder_hidden, "latent_dim": latent_dim,
                       "decoder_hidden": decoder_hidden, "decoder_layers": decoder_layers,
                       "latent_bound": float(latent_bound)}
        self.latent_dim = latent_dim
        self.latent_bound = float(latent_bound)
        self.embedding = nn.Embedding(self.codec.vocab_size, embed_dim, padding_idx=PAD)
        self.encoder = nn.LSTM(embed_dim, encoder_hidden, batch_first=True, bidirectional=True)
        self.to_mean = nn.Linear(2 * encoder_hidden, latent_dim)
        self.to_logvar = nn.Linear(2 * encoder_hidden, latent_dim)
        self.decoder = nn.LSTM(embed_dim + latent_dim, decoder_hidden, num_layers=decoder_layers, batch_first=True)
        self.head = nn.Linear(decoder_hidden, self.codec.vocab_size)

    # ------------------------------------------------------------------------------------------------- encoding
    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mean, logvar)``, each ``[B, latent_dim]``, of ``[B, seq_len]`` tokens (pre-squash)."""
        lengths = (tokens != PAD).sum(1).clamp(min=1).cpu()
        # packing makes each direction's final state the one at the sequence's own END, not after the padding
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, (h, _) = self.encoder(packed)
        context = torch.cat([h[0], h[1]], dim=-1)
        return self.to_mean(context), self.to_logvar(context)

    def squash(self, z: torch.Tensor) -> torch.Tensor:
        """Map a real latent into the box ``[-bound, bound]``."""
        return self.latent_bound * torch.tanh(z / self.latent_bound)

    @torch.no_grad()
    def embed_layouts(self, layouts: Sequence[MazeLayout]) -> torch.Tensor:
        """The squashed posterior means ``[n, latent_dim]`` of ``layouts`` (where a teacher would find them)."""
        tokens = torch.from_numpy(self.codec.encode_many(layouts)).to(self._device)
        return self.squash(self.encode(tokens)[0])

    # ------------------------------------------------------------------------------------------------- decoding
    def decoder_logits(self, z: torch.Tensor, inputs: torch.Tensor,
                       state: tuple[torch.Tensor, torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Logits ``[B, T, vocab]`` for decoder ``inputs`` ``[B, T]`` given squashed latents ``z`` ``[B, latent]``."""
        x = torch.cat([self.embedding(inputs), z[:, None, :].expand(-1, inputs.shape[1], -1)], dim=-1)
        out, state = self.decoder(x, state)
        return self.head(out), state

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced ``(logits [B, seq_len, vocab], mean, logvar)`` with a reparameterised latent sample."""
        mean, logvar = self.encode(tokens)
        z = self.squash(mean + torch.randn_like(mean) * (0.5 * logvar).exp())
        inputs = torch.cat([torch.full_like(tokens[:, :1], GO), tokens[:, :-1]], dim=1)
        logits, _ = self.decoder_logits(z, inputs)
        return logits, mean, logvar

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Greedy decoding of squashed latents ``[B, latent_dim]`` into ``[B, seq_len]`` tokens (PAD after END);
        PAD and GO are never chosen, so the output is cells closed by END or by the length cap."""
        z = z.to(self._device, torch.float32)
        n, length = z.shape[0], self.codec.seq_len
        out = torch.full((n, length), PAD, dtype=torch.long, device=z.device)
        prev = torch.full((n, 1), GO, dtype=torch.long, device=z.device)
        done = torch.zeros(n, dtype=torch.bool, device=z.device)
        state = None
        for t in range(length):
            logits, state = self.decoder_logits(z, prev, state)
            logits = logits[:, -1]
            logits[:, [PAD, GO]] = -torch.inf
            token = logits.argmax(-1)
            out[:, t] = torch.where(done, torch.full_like(token, PAD), token)
            done |= token == END
            if done.all():
                break
            prev = token[:, None]
        return out

    def decode_layouts(self, z: torch.Tensor | np.ndarray) -> list[MazeLayout]:
        """The (repaired) layouts that squashed latents ``[B, latent_dim]`` or one ``[latent_dim]`` decode to."""
        z = torch.as_tensor(np.asarray(z, dtype=np.float32) if isinstance(z, np.ndarray) else z).reshape(
            -1, self.latent_dim)
        return [self.codec.decode(row, repair=True) for row in self.generate(z).cpu().numpy()]

    @property
    def _device(self) -> torch.device:
        return self.head.weight.device

    def freeze(self) -> LayoutRVAE:
        """Evaluation mode and no gradients: stage 2 only reads the decoder."""
        self.eval()
        self.requires_grad_(False)
        return self


def rvae_loss(model: LayoutRVAE, tokens: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean token cross-entropy (PAD ignored) + ``kl_weight`` x KL(q(z|x) || N(0, I)) summed over latent dims."""
    logits, mean, logvar = model(tokens)
    recon = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), ignore_index=PAD)
    kl = (-0.5 * (1 + logvar - mean.square() - logvar.exp()).sum(-1)).mean()
    return recon + kl_weight * kl, {"recon": recon.item(), "kl": kl.item()}


def fit_rvae(model: LayoutRVAE, n_layouts: int = 100_000, steps: int = 20_000, batch_size: int = 64,
             lr: float = 1e-3, seed: int = 0, kl_weight: float = 0.01, n_obstacles: tuple[int, int] | None = None,
             time_limit: float | None = None,
             on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``n_layouts`` random layouts (obstacle counts uniform in ``n_obstacles``, default
    ``(0, max_obstacles)``), then freeze it.

    The KL weight ramps linearly from 0 to ``kl_weight`` over the first quarter of the steps (as CLUTR anneals it)
    so the decoder learns to read the latent before the prior pulls codes together. ``time_limit`` (seconds) stops
    early; ``on_step(step, losses)`` is called after every step (progress display). Returns
    ``{"steps", "seconds", "recon", "kl"}`` (the last step's losses).
    """
    torch.manual_seed(seed)
    codec = model.codec
    data = torch.from_numpy(codec.encode_many(random_layouts(
        n_layouts, seed, codec.shape, n_obstacles or (0, codec.max_obstacles)))).to(model._device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start, info, step = time.monotonic(), {"recon": float("nan"), "kl": float("nan")}, 0
    warmup = max(1, steps // 4)
    for step in range(1, steps + 1):
        batch = data[torch.randint(len(data), (batch_size,), generator=gen)]
        loss, info = rvae_loss(model, batch, kl_weight * min(1.0, step / warmup))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # LSTM gradients spike early on
        opt.step()
        if on_step is not None:
            on_step(step, info)
        if time_limit is not None and time.monotonic() - start > time_limit:
            break
    model.freeze()
    return {"steps": step, "seconds": time.monotonic() - start, **info}


@torch.no_grad()
def token_accuracy(model: LayoutRVAE, layouts: Sequence[MazeLayout]) -> float:
    """Share of the non-PAD tokens (END included) that greedy decoding of each layout's posterior mean gets right."""
    tokens = torch.from_numpy(model.codec.encode_many(layouts)).to(model._device)
    decoded = model.generate(model.squash(model.encode(tokens)[0]))
    mask = tokens != PAD
    return float(((decoded == tokens) & mask).sum() / mask.sum())


#: a CPU-sized RVAE (the paper's latent size and bound, narrower LSTMs): what ``--teacher clutr`` trains on first use;
#: on 5x5 layouts it reconstructs 99% of held-out tokens after its 2000 steps (measured: benchmarks/curricula.py)
CPU_RVAE = {"embed_dim": 32, "encoder_hidden": 64, "decoder_hidden": 128, "decoder_layers": 1, "latent_dim": 64,
            "latent_bound": 4.0}
#: its training budget (about a minute on one core)
CPU_RVAE_FIT = {"n_layouts": 50_000, "steps": 2000, "batch_size": 64, "lr": 3e-3, "kl_weight": 1e-3, "seed": 0}


def save_rvae(model: LayoutRVAE, path: str | Path, fit: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (its config and weights, plus ``fit``'s numbers) atomically to ``path``."""
    return atomic_torch_save(path, {"config": {**model.config, "shape": list(model.config["shape"])},
                                    "state": model.state_dict(), "fit": dict(fit or {})})


def load_rvae(path: str | Path) -> LayoutRVAE:
    """A frozen :class:`LayoutRVAE` saved by :func:`save_rvae`; ``ValueError`` for a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no RVAE checkpoint at {path}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or not {"config", "state"} <= set(saved):
        raise ValueError(f"{path} is not an RVAE checkpoint written by cadence.curricula.rvae.save_rvae")
    config = dict(saved["config"])
    model = LayoutRVAE(tuple(config.pop("shape")), **config)
    model.load_state_dict(saved["state"])
    return model.freeze()


def default_rvae_path(shape: tuple[int, int], max_obstacles: int) -> Path:
    """Where the CPU-sized RVAE of ``shape`` layouts is cached (``$CADENCE_CACHE`` or ``~/.cache/cadence``)."""
    root = Path(os.environ.get("CADENCE_CACHE", Path.home() / ".cache" / "cadence"))
    return root / "rvae" / f"rvae_{shape[0]}x{shape[1]}_obs{max_obstacles}_cpu.pt"


def _say(message: str) -> None:
    print(message, flush=True)


def cached_rvae(shape: tuple[int, int], max_obstacles: int, log: Callable[[str], None] = _say) -> LayoutRVAE:
    """The CPU-sized RVAE for ``shape`` layouts: loaded from :func:`default_rvae_path`, or trained there first
    (seed 0, so every run shares one frozen model), with progress reported through ``log``."""
    path = default_rvae_path(shape, max_obstacles)
    if path.is_file():
        return load_rvae(path)
    log(f"training CLUTR's layout RVAE for {shape[0]}x{shape[1]} mazes once (cached at {path}) ...")
    model = LayoutRVAE(shape, max_obstacles, **CPU_RVAE)
    steps = CPU_RVAE_FIT["steps"]

    def report(step: int, losses: dict[str, float]) -> None:
        if step % max(1, steps // 6) == 0:
            log(f"  RVAE step {step:,}/{steps:,}: reconstruction {losses['recon']:.3f}, KL {losses['kl']:.2f}")

    fit = fit_rvae(model, **CPU_RVAE_FIT, on_step=report)
    fit["token_accuracy"] = token_accuracy(model, random_layouts(500, 99_999, shape, (0, max_obstacles)))
    log(f"RVAE trained in {fit['seconds']:.0f} s: held-out token accuracy {100 * fit['token_accuracy']:.1f}%")
    save_rvae(model, path, fit)
    return model
