"""Physics backends of BatchedEnv: each resets and steps any subset of its worlds by one primitive step."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch

from cadence.envs.batched.physics import STATE_SPEC, get_state, read_data, same_sizes, step_data
from cadence.envs.batched.resets import initial_states, reset_noise
from cadence.envs.rewards import PhysicsStep, task_physics
from cadence.envs.tasks import TaskFamily, TaskWrapper, base_env_id


def cached(cache: dict, key: Hashable, build: Callable[[], Any], limit: int) -> Any:
    """``cache[key]``, built first if missing; past ``limit`` entries the oldest goes (the cache keeps insertion
    order). Entries keyed by ``id(model)`` must hold the model, so that the id stays its own."""
    if key not in cache:
        if len(cache) >= limit:
            cache.pop(next(iter(cache)))
        cache[key] = build()
    return cache[key]


#: what a reset world is made of, per world: the physics state mujoco.rollout carries, then the MjData fields the
#: warp backend carries
RESET_FIELDS = ("state", "qpos", "qvel", "act", "time", "qacc_warmstart")


class Backend(ABC):
    """``n`` worlds of one env (a task family's run in its base env); ``reset``/``step`` take the indices of the
    worlds they act on, ``set_task`` puts one world in a task of the family."""

    name: str

    def __init__(self, env_id: str, n_worlds: int, env_kwargs: dict | None = None, family: TaskFamily | None = None):
        self.env_id, self.n, self.family = env_id, n_worlds, family
        self.env = gym.make(base_env_id(env_id), disable_env_checker=True, **(env_kwargs or {})).unwrapped
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space

    @abstractmethod
    def set_task(self, world: int, params: np.ndarray) -> None:
        """Put world ``world`` in the family's task ``params`` from its next reset on."""

    def _require_family(self) -> TaskFamily:
        if self.family is None:
            raise ValueError(f"worlds of {self.env_id} take no task parameters: it is no task family")
        return self.family

    @abstractmethod
    def reset(self, idx: np.ndarray, seeds: Sequence[int]) -> torch.Tensor:
        """Reset worlds ``idx`` to Gymnasium's initial states for ``seeds``; returns their observations
        ``[m, obs_dim]``."""

    @abstractmethod
    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One primitive step of worlds ``idx``: ``(obs [m, obs_dim], reward [m], terminated [m])``, float64."""

    def physics_state(self) -> dict:
        """Every world's physics: what :meth:`load_physics_state` needs to continue exactly."""
        raise NotImplementedError(f"the {self.name} backend cannot snapshot its worlds; use rollout or warp")

    def load_physics_state(self, state: dict) -> None:
        raise NotImplementedError(f"the {self.name} backend cannot restore its worlds; use rollout or warp")

    def close(self) -> None:
        self.env.close()


class GymnasiumBackend(Backend):
    """One Gymnasium env per world, stepped in turn (what SyncVectorEnv does); works for every env."""

    name = "gymnasium"

    def __init__(self, env_id: str, n_worlds: int, env_kwargs: dict | None = None, family: TaskFamily | None = None):
        super().__init__(env_id, n_worlds, env_kwargs, family)

        def make() -> gym.Env:
            # the spec's TimeLimit stays on but never fires first: BatchedEnv counts the same steps and resets
            env = gym.make(base_env_id(env_id), disable_env_checker=True, **(env_kwargs or {}))
            return TaskWrapper(env, family) if family is not None else env

        self.vector = gym.vector.SyncVectorEnv([make for _ in range(n_worlds)])

    def set_task(self, world: int, params: np.ndarray) -> None:
        self._require_family()
        self.vector.envs[world].set_task(params)

    def reset(self, idx: np.ndarray, seeds: Sequence[int]) -> torch.Tensor:
        obs = [self.vector.envs[i].reset(seed=int(s))[0] for i, s in zip(idx, seeds, strict=True)]
        return torch.as_tensor(np.stack(obs), dtype=torch.float64)

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = [self.vector.envs[i].step(a)[:3] for i, a in zip(idx, actions, strict=True)]
        obs, reward, terminated = zip(*out, strict=True)
        return (torch.as_tensor(np.stack(obs), dtype=torch.float64), torch.as_tensor(reward, dtype=torch.float64),
                torch.as_tensor(terminated, dtype=torch.bool))

    def close(self) -> None:
        self.vector.close()
        super().close()


class ModelBackend(Backend):
    """Worlds that step MuJoCo models themselves (rollout, warp): per-world models and tasks, Gymnasium's initial
    states.

    With a task ``family`` every world starts in the family's default task; ``set_task`` gives a world the model
    built for its params (models are cached by params, so worlds in one task share one) and, for reward-target
    families, the params the torch reward reads (:attr:`PhysicsStep.task`). Explicit ``models`` win over the
    default task's model. A reset gives a world the initial state Gymnasium's ``reset(seed=...)`` gives, bit for bit
    (``reset_model``'s noise is drawn outside Gymnasium from the same seeded generator, about half the cost); a world
    with its own model is reset in that model (its ``qpos0``, and reads such as body positions), as an env built
    from it would be.
    """

    #: task models kept for reuse; more distinct tasks than this (a continuous curriculum) rebuild models
    MODEL_CACHE = 256

    def __init__(self, env_id: str, n_worlds: int, env_kwargs: dict | None = None,
                 models: Sequence[mujoco.MjModel] | None = None, family: TaskFamily | None = None):
        super().__init__(env_id, n_worlds, env_kwargs, family)
        self.physics = task_physics(env_id, self.env, family)
        base = self.env.model
        if models is not None and len(models) != n_worlds:
            raise ValueError(f"got {len(models)} models for {n_worlds} worlds")
        for i, model in enumerate(models or ()):
            self._check_sizes(model, f"model of world {i}")
        self._task_models: dict[bytes, mujoco.MjModel] = {}
        default = family.default_task if family is not None else None
        self.tasks: np.ndarray | None = None  # [n, n_params] per-world task params, with a family
        if family is not None:
            fill = default if default is not None else np.nan
            self.tasks = np.broadcast_to(fill, (n_worlds, *family.param_space.shape)).astype(np.float64)
        if models is None and default is not None:
            models = [self._model_for(default)] * n_worlds
        self.models = list(models) if models is not None else [base] * n_worlds
        # one MjData evaluates every reset world's reads: per-world models share the base model's sizes
        self._reset_data = mujoco.MjData(base)
        self._noise = reset_noise(base_env_id(env_id), self.env)
        self._templates: dict[int, tuple[mujoco.MjModel, dict[str, np.ndarray]]] = {}
        self.read_size = len(read_data(self.physics, base, self._reset_data, after_step=False))
        self.timestep = base.opt.timestep
        self.dt = self.physics.frame_skip * base.opt.timestep

    def _check_sizes(self, model: mujoco.MjModel, what: str) -> None:
        base = self.env.model
        if not same_sizes(model, base):
            raise ValueError(f"{what} differs in size from {self.env_id}'s (nq {model.nq} vs {base.nq}, "
                             f"nv {model.nv} vs {base.nv}, nbody {model.nbody} vs {base.nbody}); per-world models "
                             "may change parameters such as masses and friction, not structure")

    def _model_for(self, params: np.ndarray) -> mujoco.MjModel:
        """The family's model for ``params``, from the cache when an earlier world had the same task (worlds using
        an evicted one keep their copy)."""

        def build() -> mujoco.MjModel:
            model = self.family.model_for(self.env.model, params)
            self._check_sizes(model, f"the model of task {params.tolist()}")
            return model

        return cached(self._task_models, np.asarray(params, np.float64).tobytes(), build, self.MODEL_CACHE)

    def set_task(self, world: int, params: np.ndarray) -> None:
        params = self._require_family().resolve(params)
        self.models[world] = self._model_for(params)
        self.tasks[world] = params

    def _initial_states(self, idx: np.ndarray, seeds: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Worlds ``idx`` just after Gymnasium's ``reset(seed=seeds[j])`` in each world's own model (as an env built
        from it), as rows ``[m, ...]`` of :data:`RESET_FIELDS`, and the task's reads ``[m, k]``.

        Each row starts as the world's model after ``mj_resetData`` (so ``qpos`` is its ``qpos0``, Gymnasium's
        ``init_qpos``); ``reset_model``'s noise is then drawn from the same seeded generator
        (:mod:`cadence.envs.batched.resets`), bit for bit Gymnasium's. ``mj_forward`` runs only for the task's reads
        (it changes nothing else a backend carries), so most tasks skip it.
        """
        if len(seeds) != len(idx):
            raise ValueError(f"need one seed per reset world ({len(idx)}), got {len(seeds)}")
        rows = self._template_rows(idx)
        rows["qpos"], rows["qvel"] = initial_states(self._noise, seeds, rows["qpos"], rows["qvel"])
        reads = np.zeros((len(idx), self.read_size))
        if self.physics.reads:
            data = self._reset_data
            for j, i in enumerate(idx):
                model = self.models[i]
                mujoco.mj_resetData(model, data)
                data.qpos[:], data.qvel[:] = rows["qpos"][j], rows["qvel"][j]
                mujoco.mj_forward(model, data)
                reads[j] = read_data(self.physics, model, data, after_step=False)
        return rows, reads

    def _template_rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """:data:`RESET_FIELDS` of each world's model just after ``mj_resetData``, as float64 rows ``[m, ...]``: one
        template per distinct model (cached, with the model, so its id stays its own), so a large batch costs little
        per world."""

        def template(model: mujoco.MjModel) -> tuple[mujoco.MjModel, dict[str, np.ndarray]]:
            data = mujoco.MjData(model)
            fields = {name: np.asarray(getattr(data, name), np.float64).copy() for name in RESET_FIELDS[1:]}
            return model, {"state": get_state(model, data), **fields}

        keys = [id(self.models[i]) for i in idx]
        values: dict[int, dict[str, np.ndarray]] = {}
        for i, key in zip(idx, keys, strict=True):
            if key not in values:
                values[key] = cached(self._templates, key, lambda i=i: template(self.models[i]), self.MODEL_CACHE)[1]
        if len(values) == 1:
            (only,) = values.values()
            return {name: np.repeat(value[None], len(idx), axis=0) for name, value in only.items()}
        return {name: np.stack([values[key][name] for key in keys]) for name in RESET_FIELDS}


class RolloutBackend(ModelBackend):
    """Native multi-threaded stepping with ``mujoco.rollout``; observations and rewards by torch functions.

    The full physics state is carried between steps, and each world's solver warm start beside it, so
    worlds follow Gymnasium's trajectories step for step. mujoco.rollout does not return the warm start it
    ends with; the next step starts from an estimate, the last substep's velocity change over the timestep.
    The solver then converges to the same answer to within its tolerance, so worlds match Gymnasium to
    float32 precision for hundreds of steps but can drift apart later in chaotic, contact-rich tasks.
    Tasks that read ``MjData`` after a step (Reacher, InvertedDoublePendulum, Ant) run their last
    substep with ``mj_step`` in Python, because those values come from MuJoCo's internal evaluations; that
    substep's warm start is exact. Per-world models and tasks: :class:`ModelBackend`.
    """

    name = "rollout"

    def __init__(self, env_id: str, n_worlds: int, env_kwargs: dict | None = None, threads: int | None = None,
                 models: Sequence[mujoco.MjModel] | None = None, family: TaskFamily | None = None):
        super().__init__(env_id, n_worlds, env_kwargs, models, family)
        from mujoco import rollout

        base = self.env.model
        self.threads = threads or min(os.cpu_count() or 1, 8)
        self.datas = [mujoco.MjData(base) for _ in range(self.threads)]
        self.runner = rollout.Rollout(nthread=self.threads)
        self.state = np.zeros((n_worlds, mujoco.mj_stateSize(base, STATE_SPEC)))
        self.warmstart = np.zeros((n_worlds, base.nv))
        self.reads = np.zeros((n_worlds, self.read_size))
        self._qpos = slice(1, 1 + base.nq)  # FULLPHYSICS layout: time, qpos, qvel, ...
        self._qvel = slice(1 + base.nq, 1 + base.nq + base.nv)

    def physics_state(self) -> dict:
        return {"physics": self.state.copy(), "warmstart": self.warmstart.copy(), "reads": self.reads.copy()}

    def load_physics_state(self, state: dict) -> None:
        if state.get("backend", self.name) != self.name:
            raise ValueError(f"this env state was saved by the {state['backend']} backend; the rollout backend "
                             "restores only its own")
        if state["physics"].shape != self.state.shape:
            raise ValueError(f"env state holds {state['physics'].shape[0]} worlds, this env has {self.n}")
        self.state[:], self.reads[:] = state["physics"], state["reads"]
        self.warmstart[:] = state["warmstart"]

    def _physics_step(self, idx: np.ndarray, before: np.ndarray, reads_before: np.ndarray,
                      action: np.ndarray) -> PhysicsStep:
        t = lambda x: torch.as_tensor(x, dtype=torch.float64)
        sel = slice(None) if len(idx) == self.n else idx  # every world: views, not copies
        return PhysicsStep(qpos_before=t(before[:, self._qpos]), qpos=t(self.state[sel, self._qpos]),
                           qvel=t(self.state[sel, self._qvel]), action=t(action), reads=t(self.reads[sel]),
                           reads_before=t(reads_before), dt=self.dt,
                           task=t(self.tasks[sel]) if self.tasks is not None else None)

    def reset(self, idx: np.ndarray, seeds: Sequence[int]) -> torch.Tensor:
        rows, reads = self._initial_states(idx, seeds)
        state = rows["state"]
        state[:, self._qpos], state[:, self._qvel] = rows["qpos"], rows["qvel"]
        self.state[idx], self.reads[idx], self.warmstart[idx] = state, reads, rows["qacc_warmstart"]
        nu = self.action_space.shape[0]
        return self.physics.observe(self._physics_step(idx, self.state[idx], self.reads[idx], np.zeros((len(idx), nu))))

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        full = len(idx) == self.n  # every world: slices where a copy is not needed
        sel = slice(None) if full else idx
        before, reads_before = self.state[idx], self.reads[idx]  # copies: the state is overwritten below
        fs = self.physics.frame_skip
        in_python = 1 if self.physics.reads else 0  # substeps whose MjData the task reads
        states = before
        if fs > in_python:
            nstep = fs - in_python
            control = np.repeat(np.asarray(actions, np.float64)[:, None, :], nstep, axis=1)
            out = np.empty((len(idx), nstep, self.state.shape[1]))
            sensordata = np.empty((len(idx), nstep, 0))
            # shapes are right by construction (model sizes are checked at construction); the wrapper's
            # per-call checks cost ~100 us
            models = self.models if full else [self.models[i] for i in idx]
            self.runner.rollout(models, self.datas, before, control, nstep=nstep,
                                initial_warmstart=self.warmstart[sel], state=out, sensordata=sensordata,
                                skip_checks=True)
            states = out[:, -1]
            previous_qvel = out[:, -2, self._qvel] if nstep > 1 else before[:, self._qvel]
            self.warmstart[sel] = (states[:, self._qvel] - previous_qvel) / self.timestep
        self.state[sel] = states
        if in_python:
            data = self.datas[0]
            for j, i in enumerate(idx):
                self.state[i], self.reads[i], self.warmstart[i] = step_data(
                    self.physics, self.models[i], data, states[j], self.warmstart[i], actions[j], 1)
        step = self._physics_step(idx, before, reads_before, actions)
        return self.physics.observe(step), self.physics.reward(step), self.physics.terminated(step)

    def close(self) -> None:
        self.runner.__exit__(None, None, None) if hasattr(self.runner, "__exit__") else None
        super().close()


class ExtraMissing(ImportError, ValueError):
    """A backend's optional dependencies are not installed; the message names the install command (a ValueError
    too, so the CLI shows it as a one-line error rather than a traceback)."""


class DeviceUnavailable(RuntimeError, ValueError):
    """The device asked for is not on this machine; the message names what to use instead (a ValueError too, for
    the CLI's one-line errors)."""


def warp_backend(env_id: str, n_worlds: int, **kwargs) -> Backend:
    """MuJoCo Warp on Warp's CPU device or a CUDA GPU (extra ``gpu``); see
    :class:`cadence.envs.batched.warp_backend.WarpBackend`. Imported here, so a missing extra says what to install
    and the rest of cadence never loads Warp."""
    try:
        import mujoco_warp  # noqa: F401
        import warp  # noqa: F401
    except ImportError:
        raise ExtraMissing("the warp backend needs MuJoCo Warp: pip install 'cadence-rl[gpu]' "
                          "(mujoco-warp at the version matching mujoco); CPU backends: rollout, gymnasium") from None
    from cadence.envs.batched.warp_backend import WarpBackend

    return WarpBackend(env_id, n_worlds, **kwargs)


BACKENDS = ("rollout", "gymnasium", "warp")
