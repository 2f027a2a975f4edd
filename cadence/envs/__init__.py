"""Environments: creation, decision-frequency control and episode rollouts."""

from cadence.envs.control import DecisionIntervalWrapper, check_decision_interval
from cadence.envs.episodes import run_episodes
from cadence.envs.registry import GYMNASIUM_IDS, check_env_id, known_env_ids, make

__all__ = [
    "GYMNASIUM_IDS",
    "DecisionIntervalWrapper",
    "check_decision_interval",
    "check_env_id",
    "known_env_ids",
    "make",
    "run_episodes",
]

from cadence.envs.state import env_rng_state, episode_state, set_env_rng_state, set_episode_state

__all__ += ["env_rng_state", "episode_state", "set_env_rng_state", "set_episode_state"]
