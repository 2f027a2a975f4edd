"""D4RL-style data sets from cadence's own SAC policies (docs/ARCHITECTURE.md, "Offline data sets").

One SAC run per env (and task) and seed serves every kind. It trains to ``policy_steps`` and keeps a policy snapshot
at every evaluation:
- ``expert``: the final policy;
- ``medium``: the first snapshot whose evaluation reached ``medium_fraction`` of the final policy's (where that is
  not positive, as on CheetahVel-v0, ``medium_fraction`` of the way from the worst evaluation to it);
- ``medium-replay``: everything the run's replay buffer held up to that snapshot;
- ``medium-expert``: medium, then expert;
- ``random``: uniform actions, no training.

Policies act stochastically while collecting, as in D4RL. Each file records its provenance.

A task family's env collects on one task (``task``: params or a preset name; its SAC run trains on that task), and
a task sequence (``sequence``, a name from :data:`cadence.envs.tasks.SEQUENCES`) makes one data set per task, each
from its own SAC run on that task: ``<sequence>-<task index>-<kind>-v5.hdf5`` (``cheetah-vel-3-0-medium-v5.hdf5``,
which ``load_dataset("cheetah-vel-3-0-medium")`` reads), with ``task_ids`` = the task's index in the sequence and
the sequence, task label and params in its metadata. :func:`sequence_datasets` finds a collected sequence's files.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cadence
from cadence.checkpoint import load_checkpoint
from cadence.config import ConfigError, check, check_positive
from cadence.envs import make
from cadence.envs.episodes import run_episodes
from cadence.envs.tasks import FAMILIES, SEQUENCES, TaskFamily, family_of, resolve_sequence
from cadence.evaluation import scores
from cadence.loops.common import snapshot_name
from cadence.replay.buffer import ReplayBuffer
from cadence.replay.collect import buffer_to_dataset, collect_transitions, provenance, uniform_policy
from cadence.replay.collect_batched import collect_batched, uniform_batch_policy
from cadence.replay.datasets import OfflineDataset, data_dir
from cadence.replay.sequences import KINDS, canonical_sequence, sequence_datasets, sequence_file
from cadence.runs import load_agent, read_run_config, resolve_config, run_changes, train_or_resume

__all__ = ["KINDS", "CollectConfig", "canonical_sequence", "collect", "sequence_datasets", "sequence_file"]

#: the envs D4RL's locomotion data sets cover; others work too, without a promise of sensible kinds
D4RL_ENVS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")


@dataclass(frozen=True)
class CollectConfig:
    """``cadence collect``: which data set to make and from how much training."""

    env: str = ""
    """Env id (D4RL's kinds are defined for Hopper-v5, HalfCheetah-v5 and Walker2d-v5); empty: the sequence's task
    family, else Hopper-v5."""
    kind: str = "medium"
    """One of random, medium, expert, medium-replay, medium-expert."""
    size: int = 1_000_000
    """Transitions to collect (medium-replay takes what the buffer holds; medium-expert is twice this)."""
    seed: int = 0
    """Seed of the collection episodes."""
    policy_seed: int = 1
    """Seed of the SAC run that provides the policies."""
    policy_steps: int = 1_000_000
    """Training budget of that SAC run, in env steps (its final policy is the expert)."""
    eval_every: int = 10_000
    """Evaluate and snapshot the policy every this many steps (the medium policy is one of these snapshots)."""
    medium_fraction: float = 1 / 3
    """The medium policy is the first snapshot reaching this fraction of the expert's evaluation return (where that
    is not positive: this fraction of the way from the worst evaluation to it)."""
    reference_episodes: int = 100
    """Episodes used to measure a reference return (random and expert kinds)."""
    record_reference: bool = False
    """Write the measured random or expert return into cadence's reference-score table."""
    out: str = ""
    """Output folder (empty: CADENCE_DATA_DIR, else ~/.cadence/datasets)."""
    threads: int = 2
    """torch threads while training and collecting."""
    progress: bool = True
    task: tuple[float, ...] | str | None = None
    """A task-family env's task: its params or a preset name (unset: the family's default task). Its SAC run
    trains on it, and the file name carries it: ``cheetahvel-1.5-medium-v5.hdf5``."""
    sequence: str = ""
    """A task sequence (cadence.envs.tasks.SEQUENCES, e.g. cheetah-vel-3): one data set per task, each from its own
    SAC run on that task, ``<sequence>-<task index>-<kind>-v5.hdf5`` with task_ids = the task's index."""
    task_index: int | None = None
    """With ``sequence``: only this task of it (None: every task, in order)."""
    worlds: int = 1
    """Worlds collecting at once; above 1 a BatchedEnv on ``backend`` (world i's episode k has seed
    ``seed + i + k * worlds``; episodes are stored whole, in the order they end)."""
    backend: str = "rollout"
    """Physics of the batched worlds: rollout (CPU threads) or warp (MuJoCo Warp on ``device``; the gpu extra)."""
    device: str = "cpu"
    """Where warp's physics runs: cpu (Warp's CPU device) or cuda."""

    def __post_init__(self) -> None:
        check(self.kind in KINDS, "kind", self.kind, f"one of {', '.join(KINDS)}")
        check_positive(self, "worlds")
        check(self.backend in ("rollout", "warp"), "backend", self.backend, "rollout or warp")
        check(self.device in ("cpu", "cuda") or self.device.startswith("cuda:"), "device", self.device, "cpu or cuda")
        for name in ("size", "policy_steps", "eval_every", "reference_episodes"):
            check_positive(self, name)
        check(0 < self.medium_fraction < 1, "medium_fraction", self.medium_fraction, "in (0, 1)")
        check(self.eval_every <= self.policy_steps, "eval_every", self.eval_every, "<= policy_steps")
        task = self.task
        if isinstance(task, (list, tuple)):
            task = tuple(float(v) for v in task) or None
        object.__setattr__(self, "task", task or None)  # "" or (): the family's default task
        if self.sequence:
            self._set_sequence_task()
        else:
            check(self.task_index is None, "task_index", self.task_index, "set only with a sequence")
            object.__setattr__(self, "env", self.env or "Hopper-v5")
        if self.task is not None:
            found = family_of(self.env)
            check(found is not None, "task", self.task, f"unset: {self.env} is a plain env without tasks (task "
                  f"families: {', '.join(FAMILIES)})")
            try:
                found.resolve(self.task)  # type: ignore[union-attr]
            except ValueError as e:
                raise ConfigError(f"invalid config value task={self.task!r}: {e}") from None
        check(not (self.record_reference and (self.task is not None or self.sequence)), "record_reference",
              self.record_reference, "false with a task or sequence: the reference table holds one return per env, "
              "not per task (each file's metadata keeps its own reference_return)")

    def _set_sequence_task(self) -> None:
        """The canonical sequence name, its family as the env, and with ``task_index`` that task."""
        try:
            name = canonical_sequence(self.sequence)
        except ValueError as e:  # resolve_sequence's message lists the valid names
            raise ConfigError(str(e)) from None
        fam, tasks = resolve_sequence(name)
        check(self.env in ("", fam.name), "env", self.env, f"{fam.name} or unset: sequence {name} runs {fam.name}")
        object.__setattr__(self, "sequence", name)
        object.__setattr__(self, "env", fam.name)
        if self.task_index is None:
            check(self.task is None, "task", self.task, "unset with a sequence: the sequence sets every task "
                  "(task_index picks one)")
            return
        check(0 <= self.task_index < len(tasks), "task_index", self.task_index,
              f"a task of sequence {name}: 0..{len(tasks) - 1}")
        entry = SEQUENCES[name][1][self.task_index]
        if self.task is not None:
            try:
                same = np.array_equal(fam.resolve(self.task), fam.resolve(entry))
            except ValueError:
                same = False
            check(same, "task", self.task, f"task {self.task_index} of sequence {name} ({tasks[self.task_index][0]}) "
                  "or unset")
        object.__setattr__(self, "task", entry if isinstance(entry, str) else tuple(float(v) for v in entry))

    @property
    def family(self) -> TaskFamily | None:
        """The env's task family (None for a plain env)."""
        return family_of(self.env)

    @property
    def folder(self) -> Path:
        return Path(self.out) if self.out else data_dir()

    @property
    def n_tasks(self) -> int:
        """Data sets this config makes: the sequence's tasks, else one."""
        return len(resolve_sequence(self.sequence)[1]) if self.sequence and self.task_index is None else 1

    def for_task(self, index: int) -> CollectConfig:
        """This sequence's config for its task ``index`` alone."""
        check(bool(self.sequence), "task_index", index, "set only with a sequence")
        return replace(self, task_index=index, task=None)

    def file(self, kind: str | None = None) -> Path:
        """``hopper-medium-v5.hdf5`` style names, as :func:`cadence.replay.datasets.load_dataset` resolves them: with a
        task ``cheetahvel-1.5-medium-v5.hdf5``, a sequence's task ``cheetah-vel-3-0-medium-v5.hdf5``."""
        kind = kind or self.kind
        if self.sequence:
            if self.task_index is None:
                raise ValueError(f"sequence {self.sequence} has one file per task: use files() or for_task(index)")
            return sequence_file(self.folder, self.sequence, self.task_index, kind)
        stem = self.env.split("-")[0].lower()
        if self.task is not None:
            stem += "-" + task_slug(self.family, self.task)  # type: ignore[arg-type]
        return self.folder / f"{stem}-{kind}-v5.hdf5"

    def files(self, kind: str | None = None) -> list[Path]:
        """The file of every data set this config makes, in task order."""
        if self.sequence and self.task_index is None:
            return [self.for_task(i).file(kind) for i in range(self.n_tasks)]
        return [self.file(kind)]

    @property
    def policy_run(self) -> Path:
        """The SAC run providing the policies: one per env, task and policy seed (sequences that share a task share
        its run)."""
        if self.sequence and self.task_index is None:
            raise ValueError(f"every task of sequence {self.sequence} has its own SAC run: use for_task(index)")
        slug = "" if self.task is None else "_" + task_slug(self.family, self.task)  # type: ignore[arg-type]
        return self.folder / "policies" / f"sac_{self.env}{slug}_s{self.policy_seed}"

    def task_metadata(self) -> dict[str, Any]:
        """What a file records of its task: label and params, and with a sequence its name, the task's index and
        every task's label (params as JSON text: HDF5 attributes hold scalars)."""
        if self.task is None:
            return {}
        fam = self.family
        meta: dict[str, Any] = {"task_label": fam.label(self.task),  # type: ignore[union-attr]
                                "task_params": json.dumps(fam.resolve(self.task).tolist())}  # type: ignore[union-attr]
        if self.sequence:
            labels = [label for label, _ in resolve_sequence(self.sequence)[1]]
            meta.update(sequence=self.sequence, task_index=int(self.task_index),  # type: ignore[arg-type]
                        sequence_labels=json.dumps(labels))
        return meta


def task_slug(family: TaskFamily, task: Any) -> str:
    """A task in file names: its preset name, else its params (``1.5``, ``0.6_1_1``)."""
    label = family.label(task)
    if label in family.presets:
        return label
    return "_".join(f"{v:g}" for v in family.resolve(task).ravel())


def collect(cfg: CollectConfig, policy_overrides: tuple[str, ...] = ()) -> Path | list[Path]:
    """Make the data set ``cfg`` describes (and whatever it is built from) unless its file exists; returns it. With a
    sequence (and no ``task_index``), makes every task's data set in order and returns their files."""
    if cfg.sequence and cfg.task_index is None:
        return [collect(cfg.for_task(i), policy_overrides) for i in range(cfg.n_tasks)]  # type: ignore[misc]
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    target = cfg.file()
    if target.is_file():
        return target
    described = " ".join(x for x in (cfg.sequence, cfg.env, cfg.task_metadata().get("task_label"), cfg.kind) if x)
    if cfg.kind == "medium-expert":
        parts = [OfflineDataset.load_hdf5(collect(_with_kind(cfg, k), policy_overrides))  # type: ignore[arg-type]
                 for k in ("medium", "expert")]
        data = OfflineDataset.concatenate(parts)  # a sequence's parts carry the task's id already
        return _save(cfg, data, target, "medium then expert", cfg.policy_seed,
                     int(parts[1].metadata.get("policy_steps", 0)),
                     parts=json.dumps([p.metadata for p in parts], default=str))

    env = make(cfg.env, **({} if cfg.task is None else {"task": cfg.task}))
    if cfg.kind == "random":
        policy, label, steps = uniform_policy(env.action_space, cfg.seed), "uniform random", 0
    else:
        evals = _policy_run(cfg, policy_overrides)
        step = evals[-1][0] if cfg.kind == "expert" else _medium_step(evals, cfg.medium_fraction, cfg.policy_run)
        if cfg.kind == "medium-replay":
            return _save(cfg, _replay_rows(cfg.policy_run, step), target,
                         f"replay buffer of SAC run {cfg.policy_run} up to step {step}", cfg.policy_seed, step)
        agent, _ = load_agent(cfg.policy_run, None if cfg.kind == "expert" else snapshot_name(step))
        policy, label, steps = (lambda o: agent.act(o)), f"SAC run {cfg.policy_run}, policy at step {step}", step
    with torch.inference_mode():
        if cfg.worlds > 1:  # the same policy on a batch of observations
            batch_policy = uniform_batch_policy(env.action_space, cfg.seed) if cfg.kind == "random" else policy
            data = collect_batched(cfg.env, batch_policy, cfg.size, cfg.seed, cfg.worlds, cfg.backend, cfg.device,
                                   cfg.task, cfg.progress, described)
        else:
            data = collect_transitions(env, policy, cfg.size, cfg.seed, cfg.progress, described)
        extra: dict[str, Any] = {}
        if cfg.worlds > 1:  # the episodes' seeds and order follow from these
            extra["batched"] = json.dumps({"worlds": cfg.worlds, "backend": cfg.backend, "device": cfg.device})
        if cfg.kind in ("random", "expert"):
            extra.update(_measure_reference(cfg, env, policy, label))
    return _save(cfg, data, target, label, cfg.seed if cfg.kind == "random" else cfg.policy_seed, steps, **extra)


def _save(cfg: CollectConfig, data: OfflineDataset, target: Path, policy: str, seed: int, steps: int,
          **extra: Any) -> Path:
    """Write ``data`` with its provenance and task; a sequence's task also gives every row its index as task id."""
    if cfg.sequence:
        data.task_ids = np.full(len(data), cfg.task_index, np.int64)
    data.metadata = provenance(cfg.env, cfg.kind, policy, seed, steps, data, **cfg.task_metadata(), **extra)
    data.save_hdf5(target)
    return target


def _with_kind(cfg: CollectConfig, kind: str) -> CollectConfig:
    return CollectConfig(**{**cfg.__dict__, "kind": kind})


def _policy_run(cfg: CollectConfig, overrides: tuple[str, ...]) -> list[tuple[int, float]]:
    """Train (or finish) the SAC run that provides the medium and expert policies."""
    base: dict[str, dict[str, Any]] = {
        "train": {"env": cfg.env, "seed": cfg.policy_seed, "total_steps": cfg.policy_steps,
                  "eval_every": cfg.eval_every, "snapshots": True, "torch_threads": cfg.threads,
                  "progress": cfg.progress}}
    if cfg.task is not None:  # the run trains, and evaluates its snapshots, on the task
        base["train"]["task"] = cfg.task if isinstance(cfg.task, str) else list(cfg.task)
    sections = resolve_config("sac", base, None, overrides)
    if not overrides and run_changes(cfg.policy_run, "sac", sections):
        # the run there was trained with --set overrides this call does not repeat (a later kind of the same
        # policy, e.g. medium-replay after medium): reuse it with its own settings rather than refuse it
        _, stored = read_run_config(cfg.policy_run)
        stored["train"] = dataclasses.replace(stored["train"], progress=cfg.progress, torch_threads=cfg.threads,
                                              total_steps=max(stored["train"].total_steps, cfg.policy_steps))
        sections = stored
    return train_or_resume("sac", sections, cfg.policy_run)


def _medium_step(evals: list[tuple[int, float]], fraction: float, run: Path) -> int:
    """The first evaluation reaching ``fraction`` of the final return. Where the final return is not positive
    (reward-target tasks such as CheetahVel-v0, whose rewards are all <= 0), the first reaching ``fraction`` of the
    way from the worst evaluation to the final one (the final one always does)."""
    expert = evals[-1][1]
    low = min(value for _, value in evals) if expert <= 0 else 0.0
    target = low + fraction * (expert - low)
    for step, value in evals:
        if value >= target:
            return step
    raise ValueError(f"no evaluation of {run} reached {fraction:.2f} of the final return {expert:.1f}")


def _replay_rows(run: Path, step: int) -> OfflineDataset:
    """The run's replay buffer up to env step ``step`` (the medium policy's training data)."""
    state = load_checkpoint(run, required=("buffer",))["buffer"]
    if state["size"] >= state["capacity"]:
        raise ValueError(f"the replay buffer of {run} wrapped around; its first {step} steps are no longer there")
    buffer = ReplayBuffer(state["capacity"], state["obs_shape"], state["act_shape"])
    buffer.load_state_dict(state)
    return buffer_to_dataset(buffer).select(slice(0, step), f":{step}")


def _measure_reference(cfg: CollectConfig, env: Any, policy: Any, label: str) -> dict[str, Any]:
    """Mean return of ``policy`` over fresh episodes; optionally recorded in the reference table."""
    seed = 1_000_000 + cfg.seed  # episodes the data set does not contain
    returns, _ = run_episodes(env, policy, cfg.reference_episodes, seed)
    how = {"policy": label, "episodes": cfg.reference_episodes, "first_episode_seed": seed,
           "std": float(returns.std()), "measured_by": "cadence collect", "cadence_version": cadence.__version__,
           "date": datetime.date.today().isoformat()}
    if cfg.record_reference:
        scores.record_reference(cfg.env, cfg.kind, float(returns.mean()), how, path=scores.REFERENCE_TABLE)
    return {"reference_return": float(returns.mean()), "reference_episodes": cfg.reference_episodes}

