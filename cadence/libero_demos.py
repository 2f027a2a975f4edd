"""Scripted LIBERO demonstrations, saved as cadence offline data sets (one task id per task of the suite).

LIBERO's human demonstrations cannot be downloaded here, so cadence makes its own: for every task and init state,
:class:`~cadence.envs.libero_script.ScriptedPickPlace` runs from privileged object poses; a failed episode is
retried on the same init state with the next grasp candidate, and only successful episodes are kept. The
observations and actions are those of :class:`~cadence.envs.libero.LiberoEnv`, so a policy cloned from them acts in
the adapter directly.

``python scripts/libero_demos.py --suite object`` writes ``<data dir>/libero-object-scripted.hdf5``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cadence.envs.libero import SUITES, LiberoEnv, canonical_quaternions, check_task_index, suite_name
from cadence.replay.datasets import OfflineDataset, data_dir

#: tasks the environment itself makes impossible under the pinned MuJoCo, excluded from averages (with the cause).
#: None today: Spatial task 5's bowl falls off its ramekin under MuJoCo 3 (tests/test_libero_scripted.py measures it)
#: but the scripted expert still solves it from where it comes to rest.
EXCLUDED_TASKS: dict[tuple[str, int], str] = {}

GRASPS = 3  # grasp candidates tried per init state


@dataclass
class DemoReport:
    """Per task: successes with the first grasp, with retries, and the steps of the kept episodes."""

    suite: str
    tasks: list[int]
    inits: list[int]
    first_grasp: dict[int, list[bool]] = field(default_factory=dict)
    any_grasp: dict[int, list[bool]] = field(default_factory=dict)
    steps: dict[int, list[int]] = field(default_factory=dict)
    seconds: float = 0.0

    def rates(self) -> dict[str, Any]:
        """Success rates per task and their means, counted tasks only (see :data:`EXCLUDED_TASKS`)."""
        counted = [t for t in self.tasks if (self.suite, t) not in EXCLUDED_TASKS]
        per_task = {t: {"first_grasp": float(np.mean(self.first_grasp[t])),
                        "with_retries": float(np.mean(self.any_grasp[t])),
                        "mean_steps": float(np.mean(self.steps[t])) if self.steps[t] else None,
                        "excluded": EXCLUDED_TASKS.get((self.suite, t))} for t in self.tasks}
        mean = lambda key: float(np.mean([per_task[t][key] for t in counted])) if counted else float("nan")  # noqa: E731
        return {"suite": self.suite, "inits": self.inits, "per_task": per_task, "first_grasp": mean("first_grasp"),
                "with_retries": mean("with_retries"), "counted_tasks": counted, "seconds": self.seconds}


def scripted_episode(env: LiberoEnv, init: int, grasp: int, rng: np.random.Generator) -> dict[str, np.ndarray] | None:
    """One scripted episode from init state ``init`` with grasp candidate ``grasp``: its transitions if it succeeded
    within the suite's step cap, else None."""
    from cadence.envs.libero_script import ScriptedPickPlace

    obs, _ = env.reset(options={"init_state": init})
    policy = ScriptedPickPlace(env.raw, rng, grasp=grasp)
    rows: dict[str, list] = {"observations": [], "actions": [], "next_observations": []}
    while True:
        action = policy.act(env.raw_obs)  # already in [-1, 1]
        next_obs, _, terminated, truncated, _ = env.step(action)
        rows["observations"].append(obs)
        rows["actions"].append(action.astype(np.float32))
        rows["next_observations"].append(next_obs)
        obs = next_obs
        if terminated:
            return {k: np.stack(v) for k, v in rows.items()}
        if truncated:
            return None


def collect_demos(suite: str, tasks: Sequence[int] | None = None, inits: Sequence[int] = range(10), seed: int = 0,
                  on_episode: Callable[[int, int, bool], None] | None = None) -> tuple[OfflineDataset, DemoReport]:
    """Scripted demonstrations of ``tasks`` (default: the whole suite) from ``inits``; see the module docstring.

    Returns the data set (task id = task index in the suite; reward 1 and terminal at each success) and the report.
    """
    suite = suite_name(suite)
    tasks = [check_task_index(suite, t) for t in (range(SUITES[suite][1]) if tasks is None else tasks)]
    inits = [int(i) for i in inits]
    rng = np.random.default_rng(seed)
    report = DemoReport(suite, tasks, inits)
    parts: list[OfflineDataset] = []
    start = time.perf_counter()
    env = LiberoEnv(suite, tasks[0])
    try:
        for i, task in enumerate(tasks):
            # the first reset seeds the env: its generator places the fixtures, so the demonstrations follow ``seed``
            env.reset(seed=seed if i == 0 else None, options={"task": task, "init_state": inits[0]})
            report.first_grasp[task], report.any_grasp[task], report.steps[task] = [], [], []
            for init in inits:
                episode = None
                for grasp in range(GRASPS):
                    episode = scripted_episode(env, init, grasp, rng)
                    if grasp == 0:
                        report.first_grasp[task].append(episode is not None)
                    if episode is not None:
                        break
                report.any_grasp[task].append(episode is not None)
                if on_episode is not None:
                    on_episode(task, init, episode is not None)
                if episode is None:
                    continue
                n = len(episode["actions"])
                report.steps[task].append(n)
                terminals = np.zeros(n, bool)
                terminals[-1] = True
                parts.append(OfflineDataset(episode["observations"], episode["actions"],
                                            terminals.astype(np.float32), terminals, np.zeros(n, bool),
                                            next_observations=episode["next_observations"],
                                            task_ids=np.full(n, task)))
    finally:
        env.close()
    report.seconds = time.perf_counter() - start
    if not parts:
        raise RuntimeError(f"no scripted episode of LIBERO {suite} tasks {tasks} succeeded")
    data = OfflineDataset.concatenate(parts)
    data.metadata = {"suite": suite, "tasks": tasks, "inits": inits, "kind": "scripted", "seed": seed}
    return data, report


def demo_file(suite: str) -> Path:
    """Where a suite's scripted demonstrations live: ``<data dir>/libero-<suite>-scripted.hdf5``."""
    return data_dir() / f"libero-{suite_name(suite)}-scripted.hdf5"


def load_demos(path: str | Path, suite: str, tasks: Sequence[int] | None = None,
               canonical: bool = True) -> OfflineDataset:
    """A demonstration file, checked to be of ``suite`` and to hold every task of ``tasks``; ``ValueError`` naming
    what the file holds otherwise. With ``canonical`` its quaternions are signed as :class:`LiberoEnv` signs them
    (:func:`~cadence.envs.libero.canonical_quaternions`; files recorded before it did hold the package's signs, and
    signing is idempotent)."""
    suite = suite_name(suite)
    data = OfflineDataset.load_hdf5(path)
    meta = data.metadata
    if meta.get("kind") != "scripted" or "suite" not in meta:
        raise ValueError(f"{path} is not a cadence LIBERO demonstration file (no suite in its metadata)")
    if meta["suite"] != suite:
        raise ValueError(f"{path} holds demonstrations of LIBERO suite {meta['suite']!r}, not {suite!r}; "
                         f"make them with: python scripts/libero_demos.py --suite {suite}")
    have = sorted(set(np.unique(data.task_ids).tolist()))
    missing = sorted(set(tasks or []) - set(have))
    if missing:
        raise ValueError(f"{path} has no demonstrations of {suite} task(s) {missing}; it holds tasks {have}")
    if not canonical:
        return data
    nxt = data.next_observations
    return replace(data, observations=canonical_quaternions(data.observations),
                   next_observations=None if nxt is None else canonical_quaternions(nxt))
