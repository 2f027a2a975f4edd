"""Task parameters: how a parameterised variant of a MuJoCo env is made from its base env.

A :class:`TaskFamily` names a base env, the box its parameters live in, and ``apply(model, params)``, which edits
a copy of the base ``MjModel`` (masses, friction, gravity, gear, ...). The same family drives one Gymnasium env
(:class:`TaskWrapper`, which takes ``reset(options={"task": params})``) and per-world models of a BatchedEnv, so
a hook or a teacher that chooses tasks works on both paths.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces


@dataclass(frozen=True)
class TaskFamily:
    """A base env and how task parameters change its physics."""

    name: str
    base_env: str
    """The Gymnasium id the family varies."""
    param_space: spaces.Box
    apply: Callable[[mujoco.MjModel, np.ndarray], None]
    """Edits the given model (a fresh copy of the base model) for ``params``."""
    sequences: dict[str, list[Any]] = field(default_factory=dict)
    """Named ordered lists of params, for continual learning."""

    def check(self, params: Any) -> np.ndarray:
        """``params`` as an array of the param space's shape; raises ``ValueError`` naming what is wrong."""
        try:
            p = np.asarray(params, dtype=self.param_space.dtype).reshape(self.param_space.shape)
        except (TypeError, ValueError):
            raise ValueError(f"task parameters of {self.name} must have shape {self.param_space.shape}, "
                             f"got {params!r}") from None
        if not np.isfinite(p).all():
            raise ValueError(f"task parameters of {self.name} contain NaN or inf: {params!r}")
        if not self.param_space.contains(p):
            raise ValueError(f"task parameters {p.tolist()} of {self.name} are outside its range "
                             f"[{self.param_space.low.tolist()}, {self.param_space.high.tolist()}]")
        return p

    def model_for(self, base: mujoco.MjModel, params: Any) -> mujoco.MjModel:
        """A copy of ``base`` with ``params`` applied."""
        model = copy.copy(base)
        self.apply(model, self.check(params))
        return model


class TaskWrapper(gym.Wrapper):
    """Sets a family's task at reset: ``reset(options={"task": params})`` rebuilds the physics from the base model
    with ``params`` applied; a reset without a task keeps the current one."""

    accepts_tasks = True

    def __init__(self, env: gym.Env, family: TaskFamily):
        super().__init__(env)
        self.family = family
        self._base_model = copy.copy(env.unwrapped.model)
        self.task: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        options = dict(options or {})
        task = options.pop("task", None)
        if task is not None:
            self.task = self.family.check(task)
            self.env.unwrapped.model = self.family.model_for(self._base_model, self.task)
        obs, info = self.env.reset(seed=seed, options=options or None)
        info["task"] = self.task
        return obs, info


def accepts_tasks(env: gym.Env) -> bool:
    """Whether some wrapper in ``env``'s chain takes ``options["task"]`` at reset."""
    while True:
        if getattr(type(env), "accepts_tasks", False):
            return True
        if not isinstance(env, gym.Wrapper):
            return False
        env = env.env
