"""D4RL-style data sets from cadence's own SAC policies (DESIGN.md section 4).

One SAC run per env and seed serves every kind. It trains to ``policy_steps`` and keeps a policy snapshot
at every evaluation:
- ``expert``: the final policy;
- ``medium``: the first snapshot whose evaluation reached ``medium_fraction`` of the final policy's;
- ``medium-replay``: everything the run's replay buffer held up to that snapshot;
- ``medium-expert``: medium, then expert;
- ``random``: uniform actions, no training.

Policies act stochastically while collecting, as in D4RL. Each file records its provenance.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import cadence
from cadence.checkpoint import load_checkpoint
from cadence.config import check, check_positive
from cadence.envs import make
from cadence.envs.episodes import run_episodes
from cadence.evaluation import scores
from cadence.loops.common import snapshot_name
from cadence.replay.buffer import ReplayBuffer
from cadence.replay.collect import buffer_to_dataset, collect_transitions, provenance, uniform_policy
from cadence.replay.datasets import OfflineDataset, data_dir
from cadence.runs import load_agent, resolve_config, train_or_resume

KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
#: the envs D4RL's locomotion data sets cover; others work too, without a promise of sensible kinds
D4RL_ENVS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")


@dataclass(frozen=True)
class CollectConfig:
    """``cadence collect``: which data set to make and from how much training."""

    env: str = "Hopper-v5"
    """Env id (D4RL's kinds are defined for Hopper-v5, HalfCheetah-v5 and Walker2d-v5)."""
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
    """The medium policy is the first snapshot reaching this fraction of the expert's evaluation return."""
    reference_episodes: int = 100
    """Episodes used to measure a reference return (random and expert kinds)."""
    record_reference: bool = False
    """Write the measured random or expert return into cadence's reference-score table."""
    out: str = ""
    """Output folder (empty: CADENCE_DATA_DIR, else ~/.cadence/datasets)."""
    threads: int = 2
    """torch threads while training and collecting."""
    progress: bool = True

    def __post_init__(self) -> None:
        check(self.kind in KINDS, "kind", self.kind, f"one of {', '.join(KINDS)}")
        for name in ("size", "policy_steps", "eval_every", "reference_episodes"):
            check_positive(self, name)
        check(0 < self.medium_fraction < 1, "medium_fraction", self.medium_fraction, "in (0, 1)")
        check(self.eval_every <= self.policy_steps, "eval_every", self.eval_every, "<= policy_steps")

    @property
    def folder(self) -> Path:
        return Path(self.out) if self.out else data_dir()

    def file(self, kind: str | None = None) -> Path:
        """``hopper-medium-v5.hdf5`` style names, as :func:`cadence.replay.datasets.load_dataset` resolves them."""
        return self.folder / f"{self.env.split('-')[0].lower()}-{kind or self.kind}-v5.hdf5"

    @property
    def policy_run(self) -> Path:
        return self.folder / "policies" / f"sac_{self.env}_s{self.policy_seed}"


def collect(cfg: CollectConfig, policy_overrides: tuple[str, ...] = ()) -> Path:
    """Make the data set ``cfg`` describes (and whatever it is built from) unless its file exists; returns it."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    target = cfg.file()
    if target.is_file():
        return target
    if cfg.kind == "medium-expert":
        parts = [OfflineDataset.load_hdf5(collect(_with_kind(cfg, k), policy_overrides)) for k in ("medium", "expert")]
        data = OfflineDataset.concatenate(parts)
        data.metadata = provenance(cfg.env, "medium-expert", "medium then expert", cfg.policy_seed,
                                   int(parts[1].metadata.get("policy_steps", 0)), data,
                                   parts=json.dumps([p.metadata for p in parts], default=str))
        data.save_hdf5(target)
        return target

    env = make(cfg.env)
    if cfg.kind == "random":
        policy, label, steps = uniform_policy(env.action_space, cfg.seed), "uniform random", 0
    else:
        evals = _policy_run(cfg, policy_overrides)
        step = evals[-1][0] if cfg.kind == "expert" else _medium_step(evals, cfg.medium_fraction, cfg.policy_run)
        if cfg.kind == "medium-replay":
            data = _replay_rows(cfg.policy_run, step)
            data.metadata = provenance(cfg.env, cfg.kind, f"replay buffer of SAC run {cfg.policy_run} up to step "
                                       f"{step}", cfg.policy_seed, step, data)
            data.save_hdf5(target)
            return target
        agent, _ = load_agent(cfg.policy_run, None if cfg.kind == "expert" else snapshot_name(step))
        policy, label, steps = (lambda o: agent.act(o)), f"SAC run {cfg.policy_run}, policy at step {step}", step
    with torch.inference_mode():
        data = collect_transitions(env, policy, cfg.size, cfg.seed, cfg.progress, f"{cfg.env} {cfg.kind}")
        extra: dict[str, Any] = {}
        if cfg.kind in ("random", "expert"):
            extra = _measure_reference(cfg, env, policy, label)
    data.metadata = provenance(cfg.env, cfg.kind, label, cfg.seed if cfg.kind == "random" else cfg.policy_seed,
                               steps, data, **extra)
    data.save_hdf5(target)
    return target


def _with_kind(cfg: CollectConfig, kind: str) -> CollectConfig:
    return CollectConfig(**{**cfg.__dict__, "kind": kind})


def _policy_run(cfg: CollectConfig, overrides: tuple[str, ...]) -> list[tuple[int, float]]:
    """Train (or finish) the SAC run that provides the medium and expert policies."""
    base = {"train": {"env": cfg.env, "seed": cfg.policy_seed, "total_steps": cfg.policy_steps,
                      "eval_every": cfg.eval_every, "snapshots": True, "torch_threads": cfg.threads,
                      "progress": cfg.progress}}
    sections = resolve_config("sac", base, None, overrides)
    return train_or_resume("sac", sections, cfg.policy_run)


def _medium_step(evals: list[tuple[int, float]], fraction: float, run: Path) -> int:
    expert = evals[-1][1]
    for step, value in evals:
        if value >= fraction * expert:
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

