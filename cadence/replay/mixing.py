"""Real and model-generated data for MBPO/MOPO-style training: a FIFO buffer for model rollouts and a sampler
that mixes it with real data at a fixed ratio."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cadence.replay.buffer import Batch, ReplayBuffer


class ModelRolloutBuffer(ReplayBuffer):
    """A plain :class:`ReplayBuffer` (FIFO overwrite) for model-generated transitions, sized by the rollout schedule.

    It adds nothing but :meth:`rollout_capacity` and :meth:`for_rollouts`: capacity is the number of transitions
    that ``retain_epochs`` epochs of rollouts produce, so the oldest epoch's rollouts are the first overwritten.
    """

    @staticmethod
    def rollout_capacity(
        rollout_batch_size: int, rollout_length: int, retain_epochs: int, rollouts_per_epoch: int = 1
    ) -> int:
        """``rollout_batch_size * rollout_length * rollouts_per_epoch * retain_epochs``.

        MOPO-style loops roll out once per epoch (the default); MBPO rolls out ``epoch_length / model_train_freq``
        times per epoch. Rollouts cut short (early termination) fill less, so this is an upper bound.
        """
        values = dict(rollout_batch_size=rollout_batch_size, rollout_length=rollout_length,
                      retain_epochs=retain_epochs, rollouts_per_epoch=rollouts_per_epoch)
        bad = {k: v for k, v in values.items() if int(v) != v or v < 1}
        if bad:
            raise ValueError(f"rollout sizes must be integers >= 1, got {bad}")
        return int(rollout_batch_size * rollout_length * rollouts_per_epoch * retain_epochs)

    @classmethod
    def for_rollouts(
        cls,
        rollout_batch_size: int,
        rollout_length: int,
        retain_epochs: int,
        obs_shape: int | Sequence[int],
        act_shape: int | Sequence[int],
        device: str | torch.device = "cpu",
        rollouts_per_epoch: int = 1,
    ) -> ModelRolloutBuffer:
        """A buffer holding the last ``retain_epochs`` epochs of model rollouts."""
        capacity = cls.rollout_capacity(rollout_batch_size, rollout_length, retain_epochs, rollouts_per_epoch)
        return cls(capacity, obs_shape, act_shape, device)


class MixedSampler:
    """Draws batches with a fixed share of real transitions, the rest model-generated.

    Args:
        real: buffer of real (environment or offline data set) transitions.
        model: buffer of model-generated transitions.
        real_ratio: share of each batch drawn from ``real``, in [0, 1] (MOPO/MOREC use 0.05, MBPO 0.05-0.1).
    """

    def __init__(self, real: ReplayBuffer, model: ReplayBuffer, real_ratio: float):
        if not 0.0 <= real_ratio <= 1.0:  # also rejects NaN
            raise ValueError(f"real_ratio must be in [0, 1], got {real_ratio}")
        self.real, self.model, self.real_ratio = real, model, float(real_ratio)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Batch:
        """One batch of ``n`` rows: ``round(n * real_ratio)`` real rows first, then model rows.

        ``is_real`` (bool, ``[n]``) marks the real rows. While the model buffer is empty every row is real,
        except with ``real_ratio == 0``, which has no real data to fall back on and raises ``ValueError``.
        """
        if n < 1:
            raise ValueError(f"batch size must be >= 1, got {n}")
        if len(self.model) == 0 and self.real_ratio == 0.0:
            raise ValueError("real_ratio is 0 but the model buffer is empty: nothing to sample")
        n_real = n if len(self.model) == 0 else round(n * self.real_ratio)
        parts = []
        if n_real > 0:
            parts.append(self.real.sample(n_real, generator))
        if n > n_real:
            parts.append(self.model.sample(n - n_real, generator))
        device = parts[0]["obs"].device
        batch = {k: torch.cat([p[k].to(device) for p in parts]) for k in parts[0]}
        batch["is_real"] = torch.arange(n, device=device) < n_real
        return batch
