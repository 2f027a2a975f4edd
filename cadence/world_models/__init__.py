"""World models: learned dynamics shared by planners and model-based agents."""

from cadence.world_models.ensemble import EnsembleConfig, GaussianEnsemble
from cadence.world_models.trainer import EnsembleTrainer, buffer_transitions

__all__ = ["EnsembleConfig", "EnsembleTrainer", "GaussianEnsemble", "buffer_transitions"]
