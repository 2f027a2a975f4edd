"""Decision-frequency control: an agent decides once every ``J`` primitive steps.

Two modes (docs/ARCHITECTURE.md, "Decision interval"):

* repeat: the agent's single action is applied ``J`` times;
* sequence: the action space is ``Box(J * act_dim)`` and the ``J`` actions run open loop.

The returned reward is the sum over the primitive steps actually taken, and
``info["primitive"]`` carries every primitive transition so that learners which
need primitive data never step the environment twice.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from cadence.envs.tasks import accepts_tasks


def check_decision_interval(decision_interval: Any) -> int:
    """Return ``decision_interval`` as an int, or raise if it is not an integer >= 1."""
    if isinstance(decision_interval, bool) or not isinstance(decision_interval, (int, np.integer)):
        raise ValueError(f"decision_interval must be an integer >= 1, got {decision_interval!r}")
    if decision_interval < 1:
        raise ValueError(f"decision_interval must be an integer >= 1, got {decision_interval}")
    return int(decision_interval)


class DecisionIntervalWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Run ``decision_interval`` primitive steps per agent decision.

    Args:
        env: an env with a continuous ``Box`` action space.
        decision_interval: number of primitive steps ``J`` per decision.
        sequence: if True the agent emits ``J`` actions (flattened) that run open loop;
            otherwise one action is repeated ``J`` times.
    """

    def __init__(self, env: gym.Env, decision_interval: int = 1, sequence: bool = False):
        gym.utils.RecordConstructorArgs.__init__(self, decision_interval=decision_interval, sequence=sequence)
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(f"decision-interval control needs a Box action space, got {env.action_space}")
        self.decision_interval = check_decision_interval(decision_interval)
        self.sequence = bool(sequence)
        self.primitive_action_space: spaces.Box = env.action_space
        if self.sequence:
            low = np.tile(env.action_space.low, self.decision_interval)
            high = np.tile(env.action_space.high, self.decision_interval)
            self.action_space = spaces.Box(low=low, high=high, dtype=env.action_space.dtype)

    def primitive_actions(self, action: np.ndarray) -> np.ndarray:
        """The ``[J, act_dim]`` primitive actions that one decision expands to."""
        action = np.asarray(action, dtype=self.primitive_action_space.dtype)
        act_dim = self.primitive_action_space.shape[0]
        if self.sequence:
            expected = (self.decision_interval * act_dim,)
            if action.shape not in (expected, (self.decision_interval, act_dim)):
                raise ValueError(
                    f"sequence action must have {self.decision_interval} x {act_dim} = {expected[0]} values "
                    f"(decision_interval x act_dim), got shape {action.shape}"
                )
            return action.reshape(self.decision_interval, act_dim)
        if action.shape != (act_dim,):
            raise ValueError(f"action must have shape ({act_dim},), got {action.shape}")
        return np.broadcast_to(action, (self.decision_interval, act_dim))

    def step(self, action):
        actions = self.primitive_actions(action)
        obs = self._last_obs
        records: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
        total_reward = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        for a in actions:
            next_obs, reward, terminated, truncated, info = self.env.step(a)
            total_reward += float(reward)
            for key, value in zip(records, (obs, a, reward, next_obs, terminated, truncated)):
                records[key].append(value)
            obs = next_obs
            if terminated or truncated:
                break  # a termination mid-sequence ends the decision early
        self._last_obs = obs
        info = dict(info)
        info["primitive"] = {
            "obs": np.stack(records["obs"]),
            "action": np.stack(records["action"]).astype(self.primitive_action_space.dtype),
            "reward": np.asarray(records["reward"], dtype=np.float64),
            "next_obs": np.stack(records["next_obs"]),
            "terminated": np.asarray(records["terminated"], dtype=bool),
            "truncated": np.asarray(records["truncated"], dtype=bool),
        }
        info["primitive_steps"] = len(records["reward"])
        return obs, total_reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if options and options.get("task") is not None and not accepts_tasks(self.env):
            # a plain Gymnasium env would ignore the task silently
            raise ValueError(f"{self.env.spec.id if self.env.spec else self.env} takes no task parameters "
                             f"(got task={options['task']!r}); use a task family's env")
        obs, info = self.env.reset(seed=seed, options=options)
        self._last_obs = obs
        return obs, info
