"""Training loops: plain functions sharing one skeleton (common), with hooks at named events.

- :func:`cadence.loops.online.train_online`: one env or many batched worlds;
- :func:`cadence.loops.offline.train_offline`: offline model-based RL from a data set.
"""

from cadence.loops.common import LoopConfig, RunInterrupted, TrainingDiverged, TrainState, check_precision, learn
from cadence.loops.hooks import Hook, HookError, Hooks, LoopContext, StopOnReturn
from cadence.loops.offline import OfflineTrainConfig, fit_model, train_offline
from cadence.loops.online import TrainConfig, train_online

__all__ = ["Hook", "HookError", "Hooks", "LoopConfig", "LoopContext", "OfflineTrainConfig", "RunInterrupted",
           "StopOnReturn", "TrainConfig", "TrainState", "TrainingDiverged", "check_precision", "fit_model", "learn",
           "train_offline", "train_online"]
