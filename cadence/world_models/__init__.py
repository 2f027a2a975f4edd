"""World models: learned dynamics shared by planners and model-based agents."""

from cadence.world_models.base import DynamicsModel
from cadence.world_models.dynamics_reward import DynamicsReward, DynamicsRewardConfig
from cadence.world_models.ensemble import EnsembleConfig, GaussianEnsemble, model_bundle, model_from_bundle
from cadence.world_models.filters import FilterConfig, TransitionFilter
from cadence.world_models.trainer import EnsembleTrainer, buffer_transitions

__all__ = ["DynamicsModel", "DynamicsReward", "DynamicsRewardConfig", "EnsembleConfig", "EnsembleTrainer",
           "FilterConfig", "GaussianEnsemble", "TransitionFilter", "buffer_transitions", "model_bundle",
           "model_from_bundle"]
