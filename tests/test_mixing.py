import math

import pytest
import torch

from cadence.replay import MixedSampler, ModelRolloutBuffer, ReplayBuffer


def filled(buffer, n, reward):
    buffer.add(torch.randn(n, 3), torch.randn(n, 2), torch.full((n,), reward), torch.randn(n, 3), torch.zeros(n))
    return buffer


def test_exact_real_and_model_counts():
    real = filled(ReplayBuffer(100, 3, 2), 50, reward=1.0)
    model = filled(ModelRolloutBuffer(100, 3, 2), 80, reward=-1.0)
    for ratio, n, n_real in [(0.05, 256, 13), (0.5, 10, 5), (0.3, 7, 2), (1.0, 9, 9), (0.0, 9, 0)]:
        batch = MixedSampler(real, model, ratio).sample(n, torch.Generator().manual_seed(0))
        assert n_real == round(n * ratio)
        assert batch["obs"].shape == (n, 3) and batch["is_real"].dtype == torch.bool
        assert batch["is_real"].tolist() == [True] * n_real + [False] * (n - n_real)  # real rows first
        assert torch.equal(batch["reward"] > 0, batch["is_real"])  # each row came from the buffer it claims


def test_same_generator_same_batch():
    sampler = MixedSampler(filled(ReplayBuffer(100, 3, 2), 50, 1.0), filled(ReplayBuffer(100, 3, 2), 50, -1.0), 0.4)
    a = sampler.sample(20, torch.Generator().manual_seed(7))
    b = sampler.sample(20, torch.Generator().manual_seed(7))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_empty_model_buffer_falls_back_to_real():
    real = filled(ReplayBuffer(100, 3, 2), 50, reward=1.0)
    batch = MixedSampler(real, ModelRolloutBuffer(10, 3, 2), 0.05).sample(32)
    assert batch["is_real"].all() and (batch["reward"] == 1.0).all() and len(batch["reward"]) == 32


def test_bad_ratios_and_batch_sizes():
    real, model = filled(ReplayBuffer(10, 3, 2), 5, 1.0), ModelRolloutBuffer(10, 3, 2)
    for ratio in [-0.1, 1.5, math.nan]:
        with pytest.raises(ValueError, match="real_ratio"):
            MixedSampler(real, model, ratio)
    with pytest.raises(ValueError, match="model buffer is empty"):
        MixedSampler(real, model, 0.0).sample(8)
    with pytest.raises(ValueError, match="batch size"):
        MixedSampler(real, model, 0.5).sample(0)


def test_rollout_capacity():
    assert ModelRolloutBuffer.rollout_capacity(2000, 5, 5) == 50_000  # MOPO: one rollout per epoch
    assert ModelRolloutBuffer.rollout_capacity(400, 1, 5, rollouts_per_epoch=4) == 8_000  # MBPO: 1000 / 250
    buffer = ModelRolloutBuffer.for_rollouts(4, 3, 2, obs_shape=3, act_shape=2)
    assert isinstance(buffer, ReplayBuffer) and buffer.capacity == 24
    for epoch in range(3):  # FIFO: the third epoch of rollouts overwrites the first
        filled(buffer, 12, reward=float(epoch))
    assert len(buffer) == 24 and sorted(set(buffer.storage["reward"].tolist())) == [1.0, 2.0]
    for bad in [(0, 3, 2), (4, 2.5, 2), (4, 3, -1)]:
        with pytest.raises(ValueError, match="integers >= 1"):
            ModelRolloutBuffer.rollout_capacity(*bad)
