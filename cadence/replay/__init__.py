"""Replay: transition storage shared by every learner."""

from cadence.replay.buffer import Batch, ReplayBuffer

__all__ = ["Batch", "ReplayBuffer"]

from cadence.replay.datasets import OfflineDataset, data_dir, load_dataset  # noqa: E402
from cadence.replay.errors import DatasetError  # noqa: E402

__all__ += ["DatasetError", "OfflineDataset", "data_dir", "load_dataset"]

from cadence.replay.mixing import MixedSampler, ModelRolloutBuffer  # noqa: E402
from cadence.replay.selection import (  # noqa: E402
    ContinualMemory,
    CoresetSelector,
    NearestSelector,
    RandomSelector,
    ScoreSelector,
    Selector,
)

__all__ += ["ContinualMemory", "CoresetSelector", "MixedSampler", "ModelRolloutBuffer", "NearestSelector", "RandomSelector", "ScoreSelector", "Selector"]  # noqa: E501
