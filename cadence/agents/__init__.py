"""Agents: learners that act, update from batches and save their state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cadence.agents.mobile import MOBILE, MOBILEConfig
from cadence.agents.mopo import MOPO, MOPOConfig
from cadence.agents.offline import OfflineTrainConfig
from cadence.agents.sac import SAC, SACConfig
from cadence.agents.srl import SRL, SequenceActor, SRLConfig
from cadence.agents.training import TrainConfig


@dataclass(frozen=True)
class AgentSpec:
    """How the CLI builds an agent: its class, its config dataclass, and how its env is made."""

    name: str
    agent_cls: type
    config_cls: type
    train_config_cls: type = TrainConfig
    """The [train] section: TrainConfig (online) or OfflineTrainConfig."""

    @property
    def offline(self) -> bool:
        return self.train_config_cls is OfflineTrainConfig

    def env_kwargs(self, config: Any) -> dict[str, Any]:
        """Keyword arguments for ``cadence.envs.make`` when training this agent.

        SAC-J repeats each action J times; SRL-J emits J actions that run open loop.
        """
        if hasattr(config, "sequence_length"):
            return {"decision_interval": config.sequence_length, "sequence": True}
        return {"decision_interval": getattr(config, "action_repeat", 1)}


AGENTS: dict[str, AgentSpec] = {
    "sac": AgentSpec("sac", SAC, SACConfig),
    "srl": AgentSpec("srl", SRL, SRLConfig),
    "mopo": AgentSpec("mopo", MOPO, MOPOConfig, OfflineTrainConfig),
    "mobile": AgentSpec("mobile", MOBILE, MOBILEConfig, OfflineTrainConfig),
}


def agent_spec(name: str) -> AgentSpec:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; available: {', '.join(AGENTS)}")
    return AGENTS[name]


__all__ = ["AGENTS", "MOBILE", "MOPO", "SAC", "SRL", "AgentSpec", "MOBILEConfig", "MOPOConfig", "SACConfig",
           "SRLConfig", "SequenceActor", "agent_spec"]
