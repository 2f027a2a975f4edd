"""Agents: learners that act, update from batches and save their state (see :mod:`cadence.agents.base`)."""

from __future__ import annotations

from cadence.agents.base import Agent, AgentBase, ModelBasedOffline
from cadence.agents.mobile import MOBILE, MOBILEConfig
from cadence.agents.mopo import MOPO, MOPOConfig
from cadence.agents.sac import SAC, SACConfig
from cadence.agents.srl import SRL, SequenceActor, SRLConfig
from cadence.agents.td3bc import TD3BC, TD3BCConfig

__all__ = ["MOBILE", "MOPO", "SAC", "SRL", "TD3BC", "Agent", "AgentBase", "MOBILEConfig", "MOPOConfig",
           "ModelBasedOffline", "SACConfig", "SRLConfig", "SequenceActor", "TD3BCConfig"]
