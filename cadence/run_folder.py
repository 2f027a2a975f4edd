"""The files of a run folder: ``config.toml``, ``metrics.json``, the trainer's lock and the closing hparams record.

A run folder holds ``config.toml`` (the resolved config, with an ``[algo]`` section naming the recipe),
TensorBoard event files, ``checkpoints/`` (``last.pt`` to resume, ``agent.pt`` to deploy), ``metrics.json`` and
``trainer.lock`` (who trains in it: :func:`run_lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cadence.checkpoint import CheckpointError
from cadence.config import ConfigError, read_toml, to_dict, to_toml
from cadence.io import atomic_write_json, atomic_write_text
from cadence.logging import RunLogger
from cadence.loops.common import TrainState

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.json"
LOCK_FILE = "trainer.lock"
MODEL = "model.pt"  # the fitted dynamics model of offline model-based runs
DYNAMICS_REWARD = "dynamics_reward.pt"  # MOREC's fitted dynamics reward


@dataclass(frozen=True)
class _AlgoSection:
    name: str


def default_run_dir(algo: str, env_id: str, seed: int, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{algo}_{env_id}_s{seed}_{stamp}"


def write_config(run_dir: Path, algo: str, sections: dict[str, Any]) -> None:
    """Create the folder and write its ``config.toml`` (atomically)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, to_toml({"algo": _AlgoSection(algo), **sections}))


def read_config_file(run_dir: str | Path) -> tuple[str, dict[str, Any]]:
    """The algo and the raw config sections of an existing run folder."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a cadence run folder: {path} is missing")
    raw = read_toml(path)
    algo = raw.pop("algo", {}).get("name")
    if algo is None:
        raise CheckpointError(f"{path} does not name the run's algo ([algo] name = ...)")
    return algo, raw


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_metrics(run_dir: str | Path, update: dict[str, Any]) -> None:
    """Merge ``update`` into the run's metrics.json (atomically)."""
    atomic_write_json(Path(run_dir) / METRICS_FILE, {**read_metrics(run_dir), **update})


def close_run(algo: str, sections: dict[str, Any], run_dir: Path, state: TrainState, env_id: str,
              extra: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> TrainState:
    """metrics.json and the hparams record of a finished (or early-stopped) run; ``labels`` lead the HParams
    columns (a sweep's ``Method``)."""
    train_cfg = sections["train"]
    metrics = {"algo": algo, "env": env_id, "seed": train_cfg.seed, "steps": state.step, **(extra or {}),
               "episodes": state.episodes, "final_eval_return": state.evals[-1][1], "evals": state.evals,
               "stopped_early": state.step < train_cfg.total_steps}
    write_metrics(run_dir, metrics)
    _set_aside_stale_sweeps(run_dir, state.step)
    agent_cfg = sections["agent"]
    interval = getattr(agent_cfg, "sequence_length", getattr(agent_cfg, "action_repeat", 1))
    # TensorBoard orders HParams columns by name: capitals put the four a reader compares first ahead of the
    # settings that differ from their defaults (config.toml keeps the whole config)
    leading = {**(labels or {}), "Algo": algo, "Env": env_id, "Seed": train_cfg.seed, "J (decision interval)": interval}
    flat = {f"{name}.{k}": v for name, cfg in sections.items() for k, v in to_dict(cfg).items()
            if k not in ("env", "seed") and to_dict(type(cfg)()).get(k) != v}
    tags = ["eval/return", *state.last_evaluation.keys(), "eval/fas"]
    logger = RunLogger(run_dir)
    logger.hparams({**leading, **flat}, list(dict.fromkeys(tags)))
    logger.close()
    return state


def _set_aside_stale_sweeps(run_dir: Path, step: int) -> None:
    """A run extended past the step its FAS sweeps were made at no longer has that policy: rename the sweeps'
    files to ``<name>_at_<steps>_steps.*`` and drop their values from metrics.json (``cadence eval fas`` again)."""
    stale: list[str] = []
    for path in sorted(run_dir.glob("fas*.json")):
        swept = json.loads(path.read_text()).get("trained_steps")
        if swept is None or swept == step or "_at_" in path.stem:
            continue
        stem, at = path.stem, f"_at_{swept}_steps"
        # the files, and the TensorBoard sub-run of the curve
        moves = {f"{stem}.json": f"{stem}{at}.json", f"{stem}.png": f"{stem}{at}.png",
                 f"{stem}_by_asl": f"{stem}_by_asl{at}"}
        for old, new in moves.items():
            if (run_dir / old).exists():
                (run_dir / old).replace(run_dir / new)
        stale.append(path.stem)
    if stale:
        metrics = read_metrics(run_dir)
        for name in stale:
            metrics.pop(name, None)
            metrics.pop(f"{name}_logged_step", None)
        atomic_write_json(run_dir / METRICS_FILE, metrics)


# --- one trainer per run folder ------------------------------------------------------------------------------------
class RunFolderBusy(ConfigError):
    """Another live process trains in this run folder (two trainers would interleave their curves and checkpoints)."""

    def __init__(self, run_dir: Path, holder: dict[str, Any]):
        self.run_dir, self.holder = run_dir, holder
        owner = holder.get("owner")
        by = f" (started by cadence sweep PID {owner})" if owner else ""
        super().__init__(f"{run_dir} is being trained by process {holder.get('pid', '?')} on "
                         f"{holder.get('host', '?')}{by}; wait for it to finish or stop it, then try again: two "
                         "trainers in one run folder would mix their curves and checkpoints")


#: locks this process holds: resolved folder -> [file descriptor, depth] (a sweep's worker locks the folder, then
#: :func:`cadence.runs.train` locks it again)
_HELD: dict[Path, list[int]] = {}


def lock_holder(run_dir: str | Path) -> dict[str, Any]:
    """What ``trainer.lock`` says of the process that last locked the folder (``{}`` if none did)."""
    try:
        return json.loads((Path(run_dir) / LOCK_FILE).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def is_locked(run_dir: str | Path) -> bool:
    """Whether a live process holds the folder's lock (this process's own locks included)."""
    run_dir = Path(run_dir)
    if run_dir.resolve() in _HELD:
        return True
    if not (run_dir / LOCK_FILE).is_file():
        return False
    try:
        with run_lock(run_dir):
            return False
    except RunFolderBusy:
        return True


@contextlib.contextmanager
def run_lock(run_dir: str | Path, owner: int | None = None) -> Iterator[None]:
    """Hold the run folder's ``trainer.lock`` (creating the folder); :class:`RunFolderBusy` names the holder when
    another live process has it.

    The lock is the kernel's ``flock``: taken atomically, and released when its process ends in any way (SIGKILL
    included), so a dead trainer never leaves a stale lock; the file's PID, host and ``owner`` (the sweep that
    started the trainer) only name the holder. Re-entrant within a process. Where ``flock`` is missing (some
    network file systems) the PID in the file is checked for liveness instead (on the same host)."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, run_dir)
    except BaseException:
        os.close(fd)
        raise
    record = {"pid": os.getpid(), "host": socket.gethostname(), "owner": owner, "since": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            # nothing was written (validation failed): leave the folder as it was. A folder that holds a run keeps
            # its lock file, since deleting one races a process that has just opened it
            if [p.name for p in run_dir.iterdir()] == [LOCK_FILE]:
                path.unlink()
                if created:
                    run_dir.rmdir()
        os.close(fd)  # releases the flock


def _acquire(fd: int, run_dir: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        raise RunFolderBusy(run_dir, lock_holder(run_dir)) from None
    except OSError:  # no flock here (some network file systems): fall back to the recorded PID
        pass
    holder = lock_holder(run_dir)
    pid = holder.get("pid")
    if pid and pid != os.getpid() and holder.get("host") == socket.gethostname() and process_alive(int(pid)):
        raise RunFolderBusy(run_dir, holder)
