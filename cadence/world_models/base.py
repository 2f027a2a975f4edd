"""The ``DynamicsModel`` protocol: what planners, model rollouts, MOREC's filter and MOBILE's penalty use of a model.

A dynamics model is a set of ``M`` members (an ensemble, or ``M`` draws of a hypernetwork), each predicting a
diagonal Gaussian over the change in state and, when ``predicts_reward``, the reward: ``(s' - s[, r]) | s, a``.
Consumers see only the members below, so any class with them works with
:class:`~cadence.agents.planning.CEMPlanner`, :func:`~cadence.world_models.rollout.model_rollout` and its
``random_elite_sample`` / ``mopo_penalty``, :class:`~cadence.world_models.filters.TransitionFilter`,
:class:`~cadence.world_models.dynamics_reward.DynamicsReward` and MOBILE's ``bellman_inconsistency``.
:class:`~cadence.world_models.ensemble.GaussianEnsemble` is the reference implementation.

Shapes: ``obs [B, obs_dim]``, ``act [B, act_dim]``; ``out_dim = obs_dim + predicts_reward``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, runtime_checkable

import torch

Tensor = torch.Tensor


@runtime_checkable
class DynamicsModel(Protocol):
    """A probabilistic dynamics model with ``M`` members; see the module docstring.

    ``isinstance(x, DynamicsModel)`` checks that every member below exists (not their signatures).
    """

    obs_dim: int
    """Observation size."""
    act_dim: int
    """Action size."""
    elites: Tensor
    """Indices (``long``, ``[n_elites]``) of the members used for prediction; rollouts and penalties draw from these."""

    @property
    def predicts_reward(self) -> bool:
        """Whether the last output column is the reward (CEM planning and model rollouts need it)."""
        ...

    def __call__(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of ``(s' - s[, r])`` for every member: each ``[M, B, out_dim]``.

        Differentiable; callers that do not train wrap it in ``torch.no_grad``.
        """
        ...

    def predict(self, obs: Tensor, act: Tensor) -> torch.distributions.Normal:
        """Each member's distribution over ``(s'[, r])`` (next states, not deltas): batch shape ``[M, B, out_dim]``."""
        ...

    def elite_mean(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor | None]:
        """Next state ``[B, obs_dim]`` and reward ``[B]`` (None without a reward) averaged over the elites."""
        ...

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Training loss on ``batch`` (keys ``obs, action, next_obs, reward``) and metrics named ``model/*``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything to restore the model's parameters (as ``nn.Module.state_dict``)."""
        ...


def frozen_weights(model: Any) -> AbstractContextManager:
    """``model.frozen_weights()`` where the model has one, else a block that does nothing.

    A model that generates its weights (HyperCRL's hypernetwork) may reuse them inside the block, for the many no-grad
    calls of one plan; its parameters must not change there. Outside it, every call reflects the current parameters.
    """
    block = getattr(model, "frozen_weights", None)
    return block() if block is not None else nullcontext()
