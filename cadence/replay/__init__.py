"""Replay: transition storage shared by every learner."""

from cadence.replay.buffer import Batch, ReplayBuffer

__all__ = ["Batch", "ReplayBuffer"]

from cadence.replay.datasets import OfflineDataset, data_dir, load_dataset  # noqa: E402
from cadence.replay.errors import DatasetError  # noqa: E402

__all__ += ["DatasetError", "OfflineDataset", "data_dir", "load_dataset"]

from cadence.replay.mixing import MixedSampler, ModelRolloutBuffer  # noqa: E402
from cadence.replay.selection import ContinualMemory, CoresetSelector, RandomSelector, ScoreSelector, Selector  # noqa: E402

__all__ += ["ContinualMemory", "CoresetSelector", "MixedSampler", "ModelRolloutBuffer", "RandomSelector", "ScoreSelector", "Selector"]  # noqa: E501
