"""Batched rollouts: many worlds stepped at once, each with its own decision interval and task
(docs/ARCHITECTURE.md, "Batched worlds")."""

from cadence.envs.batched.backends import BACKENDS
from cadence.envs.batched.env import BatchedEnv

__all__ = ["BACKENDS", "BatchedEnv"]
