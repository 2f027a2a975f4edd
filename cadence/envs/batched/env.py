"""BatchedEnv: many worlds of one env stepped together, each with its own decision interval
(docs/ARCHITECTURE.md, "Batched worlds")."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import mujoco
import numpy as np
import torch

from cadence.envs.batched.backends import BACKENDS, Backend, GymnasiumBackend, RolloutBackend, warp_backend
from cadence.envs.registry import check_env_id, spec
from cadence.envs.rewards import supported_envs, supports
from cadence.envs.tasks import TaskFamily, base_env_id, family_of


class BatchedEnv:
    """``n_worlds`` copies of ``env_id`` stepped as one batch of torch tensors.

    Every world decides every ``decision_interval[i]`` primitive steps, as
    :class:`cadence.envs.control.DecisionIntervalWrapper` does for one env: in repeat mode ``step`` takes
    ``[n, act_dim]`` and repeats each action; with ``sequence=True`` it takes ``[n, J_max, act_dim]`` and
    world ``i`` runs its first ``J_i`` actions open loop. Rewards are summed over the primitive steps; a
    termination or the time limit inside a decision ends that world's episode there.

    With ``autoreset`` (the default), a world whose episode ended is reset at once and ``info["final_obs"]``
    holds its last observation. Episode ``k`` of world ``i`` is reset with seed ``seeds[i] + k * n_worlds``.

    A task family's id (``"HalfCheetahBody-v0"``) runs its base env with the family's tasks: every world starts in
    the family's default task, and ``reset(tasks=...)`` / ``reset_worlds(idx, tasks)`` take params or preset names
    per world. Reward-target families (``CheetahVel-v0``) compute each world's reward with its own params.

    Args:
        env_id: a Gymnasium MuJoCo v5 id or a task family's id.
        n_worlds: number of worlds.
        backend: ``rollout`` (mujoco.rollout, CPU threads), ``gymnasium`` (one env per world), ``warp`` (MuJoCo
            Warp: on a CUDA GPU with ``device="cuda"``, on Warp's CPU device with ``device="cpu"``; extra ``gpu``).
        device: where returned tensors live (and, without ``physics_device``, where warp's physics runs).
        decision_interval: one J for all worlds, or one per world.
        sequence: open-loop action sequences instead of repeated actions.
        threads: physics threads of the rollout backend (default: the CPU count, at most 8).
        models: one MjModel per world (rollout and warp backends), e.g. body variants; the same size signature is
            needed (warp: and only fields MuJoCo Warp batches may differ).
        family: a :class:`cadence.envs.tasks.TaskFamily` of ``env_id``'s base env (default: the family ``env_id``
            names, if any): ``reset`` and ``reset_worlds`` then take per-world tasks and rebuild those worlds' models
            (rollout backend), batched model rows (warp) or envs (gymnasium backend).
        max_episode_steps: the time limit in primitive steps (default: the env's Gymnasium spec's).
        physics_device: warp only: where the physics runs when it is not ``device`` (a GPU stepping worlds for a
            NumPy consumer on the CPU: ``device="cpu", physics_device="cuda"``).
    """

    def __init__(self, env_id: str, n_worlds: int, backend: str = "rollout", device: str | torch.device = "cpu",
                 decision_interval: int | Sequence[int] = 1, sequence: bool = False, autoreset: bool = True,
                 threads: int | None = None, models: Sequence[mujoco.MjModel] | None = None,
                 env_kwargs: dict | None = None, family: TaskFamily | None = None,
                 max_episode_steps: int | None = None, physics_device: str | torch.device | None = None):
        check_env_id(env_id)
        family = _check_family(env_id, family)
        if n_worlds < 1:
            raise ValueError(f"n_worlds must be >= 1, got {n_worlds}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if backend != "gymnasium" and not supports(env_id):
            raise ValueError(f"backend {backend!r} cannot run {env_id}: it has no torch reward functions. Backends "
                             f"that support it: gymnasium. rollout and warp support {', '.join(supported_envs())}")
        intervals = np.asarray(decision_interval)
        if intervals.ndim > 1 or (intervals.ndim == 1 and len(intervals) != n_worlds):
            raise ValueError(f"decision_interval must be one int or one per world ({n_worlds}), "
                             f"got {len(np.atleast_1d(intervals))} values")
        intervals = np.broadcast_to(intervals, (n_worlds,)).copy()
        if intervals.dtype.kind not in "iu" or (intervals < 1).any():
            raise ValueError(f"decision intervals must be integers >= 1, got {decision_interval!r}")
        if physics_device is not None and backend != "warp":
            raise ValueError(f"physics_device is the warp backend's; the {backend} backend runs on the CPU")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if backend == "rollout":
            self.backend: Backend = RolloutBackend(env_id, n_worlds, env_kwargs, threads, models, family)
        elif backend == "gymnasium":
            if models is not None:
                raise ValueError("per-world models need the rollout or warp backend")
            self.backend = GymnasiumBackend(env_id, n_worlds, env_kwargs, family)
        else:
            self.backend = warp_backend(env_id, n_worlds, env_kwargs=env_kwargs, models=models, family=family,
                                        device=physics_device if physics_device is not None else device)
        self.env_id, self.n, self.device, self.sequence, self.autoreset = env_id, n_worlds, device, sequence, autoreset
        self.intervals = intervals
        self.family = family
        default = family.default_task if family is not None else None
        self._tasks: list[np.ndarray | None] = [default] * n_worlds  # the backends start every world in it
        self.max_episode_steps = max_episode_steps or spec(env_id).max_episode_steps or np.iinfo(np.int64).max
        self.single_observation_space = self.backend.observation_space
        self.single_action_space = self.backend.action_space
        # where the backend's tensors live (warp on a GPU: the GPU), so stepping moves no data between devices
        self._store = getattr(self.backend, "device", torch.device("cpu"))
        self._obs = torch.zeros((n_worlds, *self.single_observation_space.shape), dtype=torch.float64,
                                device=self._store)
        self._elapsed = np.zeros(n_worlds, np.int64)
        self._seeds = np.zeros(n_worlds, np.int64)
        self._episodes = np.zeros(n_worlds, np.int64)
        self._was_reset = False

    # --- episodes ---------------------------------------------------------------------------------------------
    def reset(self, seed: int | Sequence[int] = 0, tasks: Sequence | None = None) -> torch.Tensor:
        """Reset every world; world ``i`` gets ``seed + i`` (an int) or ``seed[i]`` (a sequence), and ``tasks[i]``
        (params or a preset name of the env's family, or None to keep the world's task) when given."""
        seeds = [operator.index(seed) + i for i in range(self.n)] if np.ndim(seed) == 0 else [
            operator.index(s) for s in seed]
        if len(seeds) != self.n:
            raise ValueError(f"need one seed per world ({self.n}), got {len(seeds)}")
        if not all(0 <= s < 2**63 for s in seeds):
            raise ValueError(f"seeds must be in [0, 2**63) (Gymnasium's are >= 0), got {min(seeds)}..{max(seeds)}")
        self._seeds, self._episodes[:] = np.asarray(seeds, np.int64), 0
        self._reset_worlds(np.arange(self.n), tasks)
        self._was_reset = True
        return self._out(self._obs)

    def reset_worlds(self, idx: Sequence[int] | np.ndarray, tasks: Sequence | None = None) -> torch.Tensor:
        """Start the next episode of the worlds ``idx`` (what autoreset does), with ``tasks[j]`` for world
        ``idx[j]`` when given. Returns every world's observation."""
        if not self._was_reset:
            raise RuntimeError("call reset() before reset_worlds()")
        idx = np.asarray(idx, np.int64)
        self._episodes[idx] += 1
        self._reset_worlds(idx, tasks)
        return self._out(self._obs)

    def observations(self) -> torch.Tensor:
        """The current observation of every world."""
        return self._out(self._obs)

    def _reset_worlds(self, idx: np.ndarray, tasks: Sequence | None = None) -> None:
        if tasks is not None:
            if len(tasks) != len(idx):
                raise ValueError(f"need one task per reset world ({len(idx)}), got {len(tasks)}")
            for i, task in zip(idx, tasks, strict=True):
                if task is not None:
                    self._set_task(int(i), task)
        if len(idx) == 0:
            return
        # Python ints: a large seed plus episode * n_worlds may pass int64's range (Gymnasium takes any size)
        seeds = [int(s) + int(k) * self.n for s, k in zip(self._seeds[idx], self._episodes[idx], strict=True)]
        self._obs[idx] = self.backend.reset(idx, seeds).to(self._obs.dtype)  # warp's are float32
        self._elapsed[idx] = 0

    @property
    def tasks(self) -> list[np.ndarray | None]:
        """Each world's current task params (None where no task was set)."""
        return list(self._tasks)

    def _set_task(self, world: int, task: Any) -> None:
        if self.family is None:
            raise ValueError(f"BatchedEnv of {self.env_id} takes no task parameters (got {task!r}); use a task "
                             "family's id or pass family=")
        params = self.family.resolve(task)
        self.backend.set_task(world, params)
        self._tasks[world] = params

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(device=self.device, dtype=torch.float32)

    # --- stepping ---------------------------------------------------------------------------------------------
    def step(self, actions: torch.Tensor | np.ndarray, active: np.ndarray | None = None,
             record_primitive: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """One decision of every world (or of the ``active`` ones; the others do not move and get reward 0).

        Returns ``obs, reward, terminated, truncated, info``. ``info["primitive_steps"]`` counts the primitive
        steps each world took; with autoreset, ``info["final_obs"]`` is the last observation of the worlds
        whose episode ended. ``record_primitive`` adds ``info["primitive"]``: every primitive transition
        (``world, obs, action, reward, next_obs, terminated, truncated``, NumPy), world by world in time order.
        """
        if not self._was_reset:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        n, j_max = self.n, int(self.intervals.max())
        stepping = np.ones(n, bool) if active is None else np.asarray(active, bool)
        if stepping.shape != (n,):
            raise ValueError(f"active must be a bool mask of shape ({n},), got {stepping.shape}")
        # episode flags are NumPy (the loop branches on them); few torch ops: each costs ~10 us after the physics
        reward = torch.zeros(n, dtype=torch.float64, device=self._store)
        terminated, truncated, done = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        steps = np.zeros(n, np.int64)
        records: list[tuple] = []
        for k in range(j_max):
            idx = np.flatnonzero((k < self.intervals) & ~done & stepping)
            if len(idx) == 0:
                break
            # every world stepping (the common case) indexes by a slice: no index conversions, views not copies
            sel = slice(None) if len(idx) == n else idx
            a = actions[sel, k] if self.sequence else actions[sel]
            before = self._obs[sel].clone() if record_primitive else None
            obs, r, term = self.backend.step(idx, a)
            self._obs[sel] = obs.to(self._obs.dtype)  # warp's are float32
            self._elapsed[sel] += 1
            steps[sel] += 1
            if len(idx) == n:
                reward += r  # one op; indexing by the slice would add a read and a write
            else:
                reward[sel] += r
            ended = term.cpu().numpy()  # a GPU's flags: the one sync per primitive step
            trunc = self._elapsed[sel] >= self.max_episode_steps  # as TimeLimit
            terminated[sel], truncated[sel], done[sel] = ended, trunc, ended | trunc
            if record_primitive:
                records.append((idx, before, a, r, obs, ended, trunc))
        info: dict = {"primitive_steps": torch.as_tensor(steps).to(self.device)}
        if record_primitive:
            info["primitive"] = _primitive_records(records)
        ended = np.flatnonzero(done)
        if self.autoreset and len(ended):
            info["final_obs"] = self._out(self._obs)  # rows of worlds that did not end are their current obs
            info["ended"] = torch.as_tensor(done).to(self.device)
            self.reset_worlds(ended)
        return (self._out(self._obs), self._out(reward), torch.as_tensor(terminated).to(self.device),
                torch.as_tensor(truncated).to(self.device), info)

    # --- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: physics states, observations, step and episode counters."""
        return {**self.backend.physics_state(), "obs": self._obs.cpu().clone(),
                "elapsed": self._elapsed.copy(), "seeds": self._seeds.copy(), "episodes": self._episodes.copy(),
                "tasks": list(self._tasks)}

    def load_state_dict(self, state: dict) -> None:
        self.backend.load_physics_state(state)
        self._was_reset = True
        self._obs = state["obs"].to(self._store, copy=True)
        self._elapsed[:], self._seeds[:], self._episodes[:] = state["elapsed"], state["seeds"], state["episodes"]
        for world, task in enumerate(state.get("tasks", [])):
            if task is not None:
                self._set_task(world, task)

    def _check_actions(self, actions: torch.Tensor | np.ndarray) -> np.ndarray:
        a = actions.detach().cpu().numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions)
        act_dim = self.single_action_space.shape[0]
        expected = (self.n, int(self.intervals.max()), act_dim) if self.sequence else (self.n, act_dim)
        if a.shape != expected:
            mode = "[n_worlds, max decision interval, act_dim]" if self.sequence else "[n_worlds, act_dim]"
            raise ValueError(f"actions must have shape {mode} = {expected}, got {a.shape}")
        if not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a.reshape(self.n, -1)))[0, 0]
            raise ValueError(f"actions contain NaN or inf (first in world {bad})")
        return a.astype(np.float64)

    def close(self) -> None:
        self.backend.close()


def _check_family(env_id: str, family: TaskFamily | None) -> TaskFamily | None:
    """The family the worlds run: the explicit one (of ``env_id``'s base env) or the one ``env_id`` names."""
    named = family_of(env_id)
    if family is None:
        return named
    if named is not None and named is not family:
        raise ValueError(f"{env_id} is task family {named.name}; family={family.name} cannot replace it")
    if family.base_env != base_env_id(env_id):
        raise ValueError(f"task family {family.name} varies {family.base_env}, not {env_id}")
    return family


def _primitive_records(records: list[tuple]) -> dict[str, np.ndarray]:
    """Per-k records of the stepped worlds -> flat arrays ordered by world, then time."""
    names = ("world", "obs", "action", "reward", "next_obs", "terminated", "truncated")
    host = lambda x: x.cpu().numpy() if isinstance(x, torch.Tensor) else x  # warp on a GPU: device tensors
    cols = [np.concatenate([np.asarray(host(r[i]), dtype=np.float32 if 0 < i < 5 else None) for r in records])
            for i in range(len(names))]
    order = np.argsort(cols[0], kind="stable")  # records were appended k by k; stable keeps time order per world
    return {name: col[order] for name, col in zip(names, cols, strict=True)}
