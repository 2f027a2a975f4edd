"""What the training loops need from an agent: the ``Agent`` protocol and its typed capability flags.

A loop never probes an agent with ``getattr``: it reads the flags below, which every agent declares
(:class:`AgentBase` gives the defaults). Offline model-based agents add :class:`ModelBasedOffline`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from cadence.replay import Batch
from cadence.world_models.base import DynamicsModel

#: u(s, a) per row, subtracted (times a coefficient) from model-rollout rewards
Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class AgentConfig(Protocol):
    """The fields of an agent's config that the loops read."""

    buffer_size: int
    batch_size: int
    learning_starts: int
    gradient_steps: int


@runtime_checkable
class Agent(Protocol):
    """A learner the loops can train, checkpoint and deploy.

    Capability flags (class attributes):
        stores_primitive: the loop stores every primitive transition of a decision (``info["primitive"]``)
            instead of one transition per decision (SRL's critic and model learn at the fast rate).
        supports_bf16_mixed: the agent's networks cast their outputs to float32, so its gradient steps may run
            under bfloat16 autocast (``train.precision=bf16-mixed``).
    """

    algo: ClassVar[str]
    stores_primitive: ClassVar[bool]
    supports_bf16_mixed: ClassVar[bool]
    config: AgentConfig

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """One decision's action for a batch of (or one) observations."""

    def act_sequence(self, obs: np.ndarray, length: int, deterministic: bool = True) -> np.ndarray:
        """``length`` primitive actions to run open loop from ``obs`` (FAS sweeps)."""

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on ``batch``; returns named metrics."""

    def update_tensors(self, batch: Batch) -> dict[str, torch.Tensor | float]:
        """:meth:`update`, its metrics left as 0-dim device tensors where it can (no host sync per step)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training (networks, optimisers, counters)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` or a :meth:`deployment_state_dict`."""

    def deployment_state_dict(self) -> dict[str, Any]:
        """What acting needs, and nothing else."""


class AgentBase:
    """Defaults of the capability flags; agents inherit it and override what they support."""

    algo: ClassVar[str] = ""
    stores_primitive: ClassVar[bool] = False
    supports_bf16_mixed: ClassVar[bool] = False

    def update_tensors(self, batch: Batch) -> dict[str, torch.Tensor | float]:
        """Agents that keep no metrics on a device return :meth:`update`'s floats."""
        return self.update(batch)  # type: ignore[attr-defined]


@runtime_checkable
class ModelBasedOffline(Protocol):
    """An offline agent that learns from model rollouts: it is handed the fitted model and says how its rollout
    rewards are penalised (MOPO penalises there; MOBILE penalises inside its critic target instead)."""

    def use_model(self, model: DynamicsModel) -> None:
        """Take the fitted dynamics model the rollouts come from."""

    def rollout_penalty(self) -> tuple[Penalty, float] | None:
        """``(u, coefficient)`` for model-rollout rewards ``r - coefficient * u(s, a)``, or None."""
