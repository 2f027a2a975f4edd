"""Environments: creation, decision-frequency control, task families and episode rollouts."""

from cadence.envs.control import DecisionIntervalWrapper, check_decision_interval
from cadence.envs.episodes import run_episodes
from cadence.envs.libero import LiberoEnv, libero_sequence
from cadence.envs.registry import GYMNASIUM_IDS, check_env_id, known_env_ids, make, spec
from cadence.envs.tasks import (
    FAMILIES,
    SEQUENCES,
    TaskFamily,
    TaskWrapper,
    base_env_id,
    family,
    family_of,
    resolve_sequence,
)

__all__ = [
    "FAMILIES",
    "GYMNASIUM_IDS",
    "SEQUENCES",
    "DecisionIntervalWrapper",
    "LiberoEnv",
    "TaskFamily",
    "TaskWrapper",
    "base_env_id",
    "check_decision_interval",
    "check_env_id",
    "family",
    "family_of",
    "known_env_ids",
    "libero_sequence",
    "make",
    "resolve_sequence",
    "run_episodes",
    "spec",
]

from cadence.envs.state import env_rng_state, episode_state, set_env_rng_state, set_episode_state

__all__ += ["env_rng_state", "episode_state", "set_env_rng_state", "set_episode_state"]
