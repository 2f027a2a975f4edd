"""World models: learned dynamics shared by planners and model-based agents."""

from cadence.world_models.base import DynamicsModel
from cadence.world_models.continual import EWC, SI, train_model_steps
from cadence.world_models.dynamics_reward import DynamicsReward, DynamicsRewardConfig
from cadence.world_models.ensemble import EnsembleConfig, GaussianEnsemble, model_bundle, model_from_bundle
from cadence.world_models.filters import FilterConfig, TransitionFilter
from cadence.world_models.hyper import HyperConfig, HyperDynamics, HyperTaskView
from cadence.world_models.trainer import EnsembleTrainer, buffer_transitions

__all__ = ["EWC", "SI", "DynamicsModel", "DynamicsReward", "DynamicsRewardConfig", "EnsembleConfig",
           "EnsembleTrainer", "FilterConfig", "GaussianEnsemble", "HyperConfig", "HyperDynamics", "HyperTaskView",
           "TransitionFilter", "buffer_transitions", "model_bundle", "model_from_bundle", "train_model_steps"]
