"""Replay: transition storage shared by every learner."""

from cadence.replay.buffer import Batch, ReplayBuffer

__all__ = ["Batch", "ReplayBuffer"]

from cadence.replay.datasets import DatasetError, OfflineDataset  # noqa: E402

__all__ += ["DatasetError", "OfflineDataset"]
