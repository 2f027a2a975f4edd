"""Replay: transition storage shared by every learner."""

from cadence.replay.buffer import Batch, ReplayBuffer

__all__ = ["Batch", "ReplayBuffer"]
