"""Sweeps: a grid of runs from one TOML file, run locally (a process pool) or on a Ray cluster, resumable.

A grid file (:data:`GRID_EXAMPLE`, which ``cadence sweep --help`` prints) has these tables: ``[sweep]`` (name,
fas_episodes, fas_seed, compare), ``[base]``, ``[methods.NAME]`` (algo, config keys, an optional ``mpc`` table),
``[axes]``, ``[[include]]`` and ``[[exclude]]``.

Each run's folder is ``<method>/<key>=<value>,...`` under the sweep folder, named from the axis values (the seed
last), so TensorBoard groups runs by method and a re-run of the sweep finds them again. A run folder is a normal
cadence run folder plus ``sweep_run.json`` (its settings, status, error and time). Everything is validated before
any folder is written: unknown keys (with the close match), empty axes, two runs sharing a folder, an online run
without ``train.env``, ``mpc`` on a recipe without a learned model, a FAS sweep of a continual recipe.

:class:`LocalExecutor` runs one run per worker process, with the CPU's torch threads split across workers;
:class:`RayExecutor` (extra ``ray``) sends each run to Ray as a task with its CPU/GPU request. Either way a
finished run is skipped, an interrupted one resumes from its checkpoint (:func:`cadence.runs.train_or_resume`),
and a failed run is recorded with its error without stopping the others.

A run folder whose stored config differs from what the grid now gives it (an edited setting) is never reported
under the new settings: the sweep is refused before any run starts, naming the runs and keys, unless
``restart_changed`` (``--restart-changed``) deletes those folders and trains them afresh. One trainer per run
folder: each holds the folder's lock (:func:`cadence.run_folder.run_lock`), and the local workers stop with the
sweep's own process, however it ends.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import socket
import time
import tomllib
import traceback
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cadence.config import ConfigError, config_key
from cadence.io import atomic_write_json, atomic_write_text

GRID_EXAMPLE = """\
[sweep]
name = "srl_fas"              # default: the file's stem; names the folder runs/sweeps/<name>
fas_episodes = 10             # after training, a FAS sweep with this many episodes per ASL (0: none)
compare = ["SRL-8", "SAC-1"]  # the report's probability of improvement (optional)

[base]                        # config keys shared by every run (section.key, as in --set)
train.total_steps = 20000

[methods.SRL-8]               # one entry per method: its recipe and its own keys
algo = "srl"
agent.sequence_length = 8
mpc = { horizon = 10, samples = 100, elites = 10, iterations = 3, episodes = 3, label = "MPC" }

[methods.SAC-1]
algo = "sac"

[axes]                        # the grid: every combination of the methods and these values
"train.env" = ["InvertedPendulum-v5", "Reacher-v5"]
"train.seed" = [1, 2, 3]

[[exclude]]                   # grid runs matching all the given axis values are left out
method = "SAC-1"
"train.env" = "Reacher-v5"

[[include]]                   # extra runs: a method and its keys (the rest from [base] and the method)
method = "SRL-8"
"train.env" = "InvertedPendulum-v5"   # every online run names its env (no silent Hopper-v5 default)
"train.seed" = 4
"""

SWEEP_FILE = "sweep.json"
GRID_COPY = "sweep.toml"
RUN_STATUS = "sweep_run.json"
TABLES = ("sweep", "base", "methods", "axes", "include", "exclude")
SWEEP_KEYS = ("name", "fas_episodes", "fas_seed", "compare")
MPC_KEYS = ("horizon", "samples", "elites", "iterations", "init_std", "gamma", "episodes", "label")


class SweepError(ConfigError):
    """A grid file, or a sweep's executor, that cannot run (raised before any run starts)."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its folder name (relative to the sweep folder), method, recipe and settings."""

    name: str
    method: str
    algo: str
    settings: dict[str, Any]
    """``section.key`` -> value: the base, the method's keys and the run's axis values, in that order."""
    fas_episodes: int = 0
    fas_seed: int = 0
    mpc: dict[str, Any] | None = None
    """CEM-MPC through the run's learned model after training: CEMConfig keys, ``episodes`` and ``label``."""

    def sections(self, torch_threads: int | None = None) -> dict[str, Any]:
        """The run's resolved config; ``torch_threads`` fills ``train.torch_threads`` unless the grid sets it."""
        from cadence.runs import resolve_config

        nested: dict[str, dict[str, Any]] = {}
        for key, value in self.settings.items():
            section, name = key.split(".", 1)
            nested.setdefault(section, {})[name] = value
        train = nested.setdefault("train", {})
        train.setdefault("progress", False)  # the sweep shows its own progress
        if torch_threads is not None:
            train.setdefault("torch_threads", torch_threads)
        return resolve_config(self.algo, nested)

    def record(self) -> dict[str, Any]:
        """What ``sweep_run.json`` and ``sweep.json`` store of the run (and what must match to skip it)."""
        return {"name": self.name, "method": self.method, "algo": self.algo, "settings": self.settings,
                "fas_episodes": self.fas_episodes, "fas_seed": self.fas_seed, "mpc": self.mpc}


@dataclass(frozen=True)
class Sweep:
    """An expanded grid: its name, its runs and the report's comparison."""

    name: str
    runs: tuple[RunSpec, ...]
    compare: tuple[str, str] | None = None
    source: str = ""
    """The grid file's text, copied into the sweep folder."""


# -- the grid file -------------------------------------------------------------------------------------------


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a grid file; raises :class:`SweepError` naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"grid file {path} does not exist")
    text = path.read_text()
    try:
        grid = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"grid file {path} is not valid TOML: {e}") from None
    try:
        return expand(grid, default_name=path.stem, source=text)
    except ConfigError as e:
        raise SweepError(f"{path}: {e}") from None


def _close(word: str, valid: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else f"; valid: {', '.join(valid)}"


def _check_keys(table: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    for key in table:
        if key not in valid:
            raise SweepError(f"unknown key {key!r} in {where}{_close(key, valid)}")


def _is_table(hint: Any) -> bool:
    """Whether a config field's type hint is a dict (or an optional one)."""
    return typing.get_origin(hint) is dict or hint is dict or any(_is_table(a) for a in typing.get_args(hint))


@cache
def table_keys() -> frozenset[str]:
    """Config keys whose value is a table in some recipe (``train.teacher_settings``), dotted and bare: a grid keeps
    their tables whole rather than reading them as sub-keys."""
    from cadence.recipes import RECIPES

    keys: set[str] = set()
    for spec in RECIPES.values():
        for section, cls in (("train", spec.train_config_cls), ("agent", spec.config_cls)):
            hints = typing.get_type_hints(cls)
            keys.update(k for f in dataclasses.fields(cls) if _is_table(hints[f.name])
                        for k in (f"{section}.{f.name}", f.name))
    return frozenset(keys)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"seed": 1}}`` -> ``{"train.seed": 1}`` (TOML dotted keys and sub-tables alike); the value of a
    table-valued key (:func:`table_keys`) stays a table."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and f"{prefix}{key}" not in table_keys():
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _config_keys(table: Mapping[str, Any], algo: str, where: str) -> dict[str, Any]:
    """Config keys of ``algo`` as ``section.key`` (a bare key that one section owns is accepted)."""
    from cadence.recipes import recipe

    spec = recipe(algo)
    schema = {"train": spec.train_config_cls, "agent": spec.config_cls}
    out = {}
    for key, value in table.items():
        try:
            section, name = config_key(schema, key)
        except ConfigError as e:
            raise SweepError(f"{where}: {e}") from None
        out[f"{section}.{name}"] = value
    return out


def _methods(grid: Mapping[str, Any]) -> dict[str, tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """``name -> (algo, raw config keys, mpc)`` of ``[methods.*]``."""
    from cadence.recipes import RECIPES

    methods = grid.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise SweepError("the grid has no methods: add at least one [methods.NAME] table with algo = \"...\"")
    out = {}
    for name, table in methods.items():
        if not isinstance(table, dict) or "algo" not in table:
            raise SweepError(f"[methods.{name}] must name its recipe: algo = one of {', '.join(RECIPES)}")
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise SweepError(f"method name {name!r} may hold only letters, digits and _ . + - (it names a folder)")
        algo = table["algo"]
        if algo not in RECIPES:
            raise SweepError(f"[methods.{name}] algo {algo!r} is unknown{_close(str(algo), list(RECIPES))}")
        mpc = table.get("mpc")
        if mpc is not None:
            if not supports_mpc(algo):
                raise SweepError(f"[methods.{name}] mpc plans through the run's learned world model, and {algo} learns "
                                 f"none; MPC works with {', '.join(a for a in RECIPES if supports_mpc(a))}")
            if not isinstance(mpc, dict):
                raise SweepError(f"[methods.{name}] mpc must be a table, e.g. {{ horizon = 10, episodes = 3 }}")
            _check_keys(mpc, MPC_KEYS, f"[methods.{name}].mpc")
            _cem_config(mpc)  # its values are checked now
            mpc = {"episodes": 3, "label": f"{name}+MPC", **mpc}
        keys = _flatten({k: v for k, v in table.items() if k not in ("algo", "mpc")})
        out[name] = (algo, _config_keys(keys, algo, f"[methods.{name}]"), mpc)
    return out


def supports_mpc(algo: str) -> bool:
    """Whether ``algo``'s runs hold a learned world model that CEM-MPC can plan through (srl): a single-task recipe
    whose agent checkpoints a ``model``."""
    from cadence.recipes import recipe

    spec = recipe(algo)
    return not spec.continual and "model" in getattr(spec.agent_cls, "PARTS", ())


def supports_fas(algo: str) -> bool:
    """Whether ``algo``'s runs can be FAS-swept: one policy in one env (a continual run is evaluated by its
    task-by-task matrices instead)."""
    from cadence.recipes import recipe

    return not recipe(algo).continual


def _check_run(spec: RunSpec) -> None:
    """What a run needs beyond a valid config: an online recipe names its env (the default Hopper-v5 is never
    chosen silently), and FAS only for recipes that have one."""
    from cadence.recipes import recipe

    r = recipe(spec.algo)
    if not (r.offline or r.continual) and "train.env" not in spec.settings:
        raise SweepError(f"run {spec.name}: no train.env; set it in [base], [methods.{spec.method}], an axis or the "
                         "[[include]] (an online run would otherwise train the default Hopper-v5)")
    if spec.fas_episodes and not supports_fas(spec.algo):
        raise SweepError(f"run {spec.name}: [sweep] fas_episodes asks for a FAS sweep after training, but {spec.algo} "
                         "learns a task sequence, evaluated task by task instead; set fas_episodes = 0 or sweep it "
                         "in a grid of its own")


def _cem_config(mpc: Mapping[str, Any]) -> Any:
    from cadence.agents.planning import CEMConfig

    return CEMConfig(**{k: v for k, v in mpc.items() if k not in ("episodes", "label")})


def _axes(grid: Mapping[str, Any], methods: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``[axes]``: each key's list of values (non-empty); ``method`` may pick a subset of the methods."""
    axes = _flatten(grid.get("axes", {}))
    for key, values in axes.items():
        if not isinstance(values, list):
            raise SweepError(f"axis {key!r} must be a list of values, got {values!r}")
        if not values:
            raise SweepError(f"axis {key!r} is empty: give it at least one value or remove it")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SweepError(f"axis {key!r} repeats a value: {values}")
    for name in axes.get("method", []):
        if name not in methods:
            raise SweepError(f"axis 'method' names {name!r}, which is no [methods] entry{_close(name, list(methods))}")
    return axes


def _value_text(value: Any) -> str:
    """An axis value as it appears in a folder name."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, list):
        text = "x".join(_value_text(v) for v in value)
    elif isinstance(value, dict):  # a table-valued setting: its keys and values, {regret = "pvl"} -> regret-pvl
        text = "+".join(f"{k}-{_value_text(v)}" for k, v in value.items()) or "none"
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text)


def _short_names(keys: Iterable[str]) -> dict[str, str]:
    """Each key's last part (``train.seed`` -> ``seed``), unless two keys share it."""
    keys = list(keys)
    last = [k.rpartition(".")[2] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def run_name(method: str, values: Mapping[str, Any]) -> str:
    """The folder of a run: ``<method>/<key>=<value>,...`` with the seed last (``<method>/default`` alone)."""
    keys = sorted(values, key=lambda k: k.endswith("seed"))  # stable: the seed goes last
    short = _short_names(keys)
    parts = [f"{short[k]}={_value_text(values[k])}" for k in keys]
    return f"{method}/{','.join(parts) or 'default'}"


def expand(grid: Mapping[str, Any], default_name: str = "sweep", source: str = "") -> Sweep:
    """A parsed grid file -> its runs, validated (every run's config resolves) before anything is written."""
    import itertools

    from cadence.recipes import recipe

    _check_keys(grid, TABLES, "the grid file (top-level tables)")
    options = grid.get("sweep", {})
    _check_keys(options, SWEEP_KEYS, "[sweep]")
    name = str(options.get("name", default_name))
    fas_episodes, fas_seed = options.get("fas_episodes", 0), options.get("fas_seed", 0)
    for key, value in (("fas_episodes", fas_episodes), ("fas_seed", fas_seed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SweepError(f"[sweep] {key} must be an integer >= 0, got {value!r}")
    methods = _methods(grid)
    axes = _axes(grid, methods)
    method_axis = axes.pop("method", list(methods))
    base = _flatten(grid.get("base", {}))

    def make(method: str, values: Mapping[str, Any]) -> RunSpec:
        algo, own, mpc = methods[method]
        settings = {**_config_keys(base, algo, "[base]"), **own,
                    **_config_keys(values, algo, f"run {run_name(method, values)}")}
        spec = RunSpec(run_name(method, values), method, algo, settings, fas_episodes, fas_seed, mpc)
        _check_run(spec)
        try:
            recipe(algo).check(spec.sections())
        except ConfigError as e:
            raise SweepError(f"run {spec.name}: {e}") from None
        return spec

    excluded = [_match(entry, axes, method_axis, "exclude") for entry in grid.get("exclude", [])]
    runs = []
    for method in method_axis:
        for combo in itertools.product(*axes.values()):
            values = dict(zip(axes, combo, strict=True))
            if not any(all(({**values, "method": method}).get(k) == v for k, v in ex.items()) for ex in excluded):
                runs.append(make(method, values))
    for entry in grid.get("include", []):
        entry = _flatten(entry)
        method = entry.pop("method", None)
        if method not in methods:
            raise SweepError(f"an [[include]] entry must name one of the methods (method = ...), got {method!r}")
        runs.append(make(method, entry))
    if not runs:
        raise SweepError("the grid expands to no runs: every combination is excluded")
    _check_unique(runs)
    compare = options.get("compare")
    if compare is not None:
        if not (isinstance(compare, list) and len(compare) == 2 and all(c in _labels(runs) for c in compare)):
            raise SweepError(f"[sweep] compare must name two methods of the grid ({', '.join(_labels(runs))}), "
                             f"got {compare!r}")
        compare = tuple(compare)
    return Sweep(name, tuple(runs), compare, source)


def _labels(runs: Sequence[RunSpec]) -> list[str]:
    """The report's methods: each method, and each MPC label."""
    out = [r.method for r in runs] + [r.mpc["label"] for r in runs if r.mpc]
    return list(dict.fromkeys(out))


def _match(entry: Mapping[str, Any], axes: Mapping[str, list], methods: list[str], where: str) -> dict[str, Any]:
    """An ``[[exclude]]`` entry, checked against the axes: its keys are axis keys, its values axis values."""
    entry = _flatten(entry)
    if not entry:
        raise SweepError(f"an [[{where}]] entry is empty")
    valid = {**axes, "method": methods}
    for key, value in entry.items():
        if key not in valid:
            raise SweepError(f"[[{where}]] key {key!r} is no axis{_close(key, list(valid))}")
        if value not in valid[key]:
            raise SweepError(f"[[{where}]] {key} = {value!r} is not among the axis's values {valid[key]}")
    return entry


def _check_unique(runs: Sequence[RunSpec]) -> None:
    seen: dict[str, RunSpec] = {}
    for run in runs:
        if run.name in seen:
            other = seen[run.name]
            raise SweepError(f"two runs would write the same folder {run.name!r}: {other.method} "
                             f"{other.settings} and {run.method} {run.settings}; remove the duplicate [[include]] "
                             "or give the values distinct names")
        seen[run.name] = run


# -- one run -------------------------------------------------------------------------------------------------


def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_STATUS
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def is_done(run: RunSpec, root: Path) -> bool:
    """A run finished earlier with these very settings (a changed budget or option runs it again: it resumes)."""
    status = read_status(root / run.name)
    return status.get("status") == "done" and {k: status.get(k) for k in run.record()} == run.record()


#: ``execute_run``'s status when another live process trains in the run's folder (not written to sweep_run.json,
#: which that process owns)
BUSY = "busy"


def execute_run(run: RunSpec, root: str | Path, torch_threads: int | None = None,
                owner: int | None = None) -> dict[str, Any]:
    """Train (or resume) one run in ``root/run.name``, then its FAS and MPC sweeps; record the outcome in
    ``sweep_run.json``. Errors are recorded, not raised: the returned status says ``done`` or ``failed``, or
    :data:`BUSY` (recorded nowhere) when another live process holds the folder's lock. ``owner``: the PID of the
    sweep that started this worker, named in the lock file."""
    from cadence.checkpoint import checkpoint_path
    from cadence.run_folder import RunFolderBusy, read_metrics, run_lock
    from cadence.runs import train_or_resume

    run_dir = Path(root) / run.name
    start = time.time()
    try:
        lock = run_lock(run_dir, owner=owner)
        lock.__enter__()
    except RunFolderBusy as e:
        return {**run.record(), "status": BUSY, "error": str(e), "seconds": 0.0}
    try:
        status = {**run.record(), "status": "running", "error": None, "started": start, "pid": os.getpid()}
        if not checkpoint_path(run_dir).is_file() and not read_metrics(run_dir):
            # killed before its first checkpoint: nothing to resume; its TensorBoard events would stop a fresh start
            # (files put there on purpose, such as a shared fitted model, stay)
            for events in run_dir.glob("events.out.tfevents.*"):
                events.unlink()
        atomic_write_json(run_dir / RUN_STATUS, status)
        try:
            train_or_resume(run.algo, run.sections(torch_threads), run_dir, labels={"Method": run.method})
            if run.fas_episodes:
                _fas(run_dir, run.fas_episodes, run.fas_seed)
            if run.mpc:
                _fas(run_dir, run.mpc["episodes"], run.fas_seed, run.mpc)
            status.update(status="done")
        except Exception as e:  # recorded for the sweep's summary; the other runs go on
            status.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        status["seconds"] = time.time() - start
        atomic_write_json(run_dir / RUN_STATUS, status)
        return status
    finally:
        lock.__exit__(None, None, None)


def _fas(run_dir: Path, episodes: int, seed: int, mpc: Mapping[str, Any] | None = None) -> None:
    """A FAS sweep (through CEM-MPC with ``mpc``) of the run's final policy, unless one was made already."""
    from cadence.evaluation.fas import ASL_GRID
    from cadence.run_folder import read_metrics
    from cadence.runs import evaluate_fas

    suffix = "_mpc" if mpc else ""
    metrics = read_metrics(run_dir)
    done = run_dir / f"fas{suffix}.json"
    planner = _cem_config(mpc) if mpc else None
    if metrics.get(f"fas{suffix}_logged_step") == metrics.get("steps") and done.is_file():
        stored = json.loads(done.read_text())
        same_planner = planner is None or stored.get("planner") == dataclasses.asdict(planner)
        if stored.get("episodes") == episodes and stored.get("seed") == seed and same_planner:
            return
    evaluate_fas(run_dir, ASL_GRID, episodes, seed=seed, planner=planner)


# -- executors -----------------------------------------------------------------------------------------------

#: ``on_event(kind, run, status)``: kind "start" (status None) or "end" (the run's sweep_run.json status)
Event = Callable[[str, RunSpec, "dict[str, Any] | None"], None]


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: a worker stopped by the sweep's Ctrl-C, after its run wrote a checkpoint (it resumes on the next sweep)
INTERRUPTED = 130
#: a worker that found its run folder locked by another live trainer (EX_TEMPFAIL)
BUSY_EXIT = 75
#: how long an interrupted sweep waits for its runs to checkpoint before it ends them
CHECKPOINT_GRACE_S = 120.0


def _worker(run: RunSpec, root: str, torch_threads: int, sweep_pid: int) -> None:
    """A worker process: runs one run; exits 0 if it finished, 1 if it failed, 130 if the sweep stopped it,
    :data:`BUSY_EXIT` if another trainer holds the run's folder.

    It leaves the terminal's process group, so a Ctrl-C reaches only the sweep, which passes one SIGINT on (a
    second would stop the run without its checkpoint); and it stops when the sweep process ``sweep_pid`` ends,
    however it ends (:func:`_stop_with`)."""
    import signal
    import sys

    os.setsid()
    # SIGINT is how the sweep asks for a checkpoint; a sweep started in the background by a shell ignores SIGINT and
    # its children inherit that, so the worker, in a session of its own (no terminal reaches it), listens again
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _stop_with(sweep_pid)
    os.environ["OMP_NUM_THREADS"] = str(torch_threads)
    try:
        status = execute_run(run, root, torch_threads, owner=sweep_pid)
    except KeyboardInterrupt:  # the run checkpointed (RunInterrupted); sweep_run.json stays "running"
        sys.exit(INTERRUPTED)
    sys.exit(0 if status["status"] == "done" else BUSY_EXIT if status["status"] == BUSY else 1)


def _stop_with(pid: int) -> None:
    """Stop this process when process ``pid`` (the sweep) ends, by SIGKILL as well as by a clean exit.

    A worker's parent is the forkserver, which outlives a killed sweep, so the kernel's parent-death signal cannot
    tie the worker to the sweep; a thread waits on the sweep's pidfd instead (Linux 5.3+; elsewhere it polls the
    PID each second). When the sweep is gone it interrupts the run as Ctrl-C does (SIGINT: the run writes a
    checkpoint and the next sweep resumes it), and ends the process if that takes over :data:`CHECKPOINT_GRACE_S`.
    """
    import select
    import signal
    import threading

    from cadence.run_folder import process_alive

    try:
        fd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:  # the sweep ended before this worker started
        os._exit(INTERRUPTED)
    except (AttributeError, OSError):
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])  # readable once the process has ended
        else:
            while process_alive(pid):
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(CHECKPOINT_GRACE_S)
        os._exit(INTERRUPTED)

    threading.Thread(target=watch, name="stop-with-sweep", daemon=True).start()


@dataclass
class LocalExecutor:
    """Runs on this machine: one process per run, at most ``workers`` at once (default: one per CPU core), each
    with ``cpus // workers`` torch threads unless the grid sets ``train.torch_threads``."""

    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise SweepError(f"workers must be >= 1, got {self.workers}")

    @property
    def slots(self) -> int:
        return self.workers or _cpus()

    @property
    def torch_threads(self) -> int:
        return max(1, _cpus() // self.slots)

    def start(self) -> Any:
        """The process context, its server started: a forkserver that imports cadence (and torch) once, so each run
        forks from it in milliseconds and starts clean, without the parent's threads. Once per sweep (a few
        seconds); :meth:`run` calls it."""
        import multiprocessing

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["cadence.sweeps", "cadence.runs"])
        warm = context.Process(target=os.getpid)  # returns once the server has imported the preload
        warm.start()
        warm.join()
        return context

    def run(self, runs: Sequence[RunSpec], root: Path, on_event: Event) -> None:
        from multiprocessing.connection import wait

        context = self.start()
        queue, live = list(runs), {}
        try:
            while queue or live:
                while queue and len(live) < self.slots:
                    run = queue.pop(0)
                    process = context.Process(target=_worker, args=(run, str(root), self.torch_threads, os.getpid()),
                                              name=f"cadence-sweep {run.name}")
                    process.start()
                    live[process.sentinel] = (process, run)
                    on_event("start", run, None)
                for sentinel in wait(list(live)):
                    process, run = live.pop(sentinel)
                    process.join()
                    on_event("end", run, _outcome(root / run.name, process.exitcode))
        except KeyboardInterrupt:
            stopped = _interrupt([process for process, _ in live.values()])
            live.clear()
            raise KeyboardInterrupt(f"sweep interrupted: {stopped} running run(s) wrote a checkpoint; run the same "
                                    "command again to resume them and run the rest") from None
        finally:
            for process, _ in live.values():  # an error in the sweep itself
                process.terminate()
                process.join()


def _interrupt(processes: Sequence[Any]) -> int:
    """Pass one SIGINT to each worker, wait for their checkpoints (up to :data:`CHECKPOINT_GRACE_S`), end the rest;
    returns how many stopped cleanly."""
    import signal

    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    deadline = time.time() + CHECKPOINT_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.time()))
        if process.is_alive():
            process.terminate()
            process.join()
    return sum(process.exitcode == INTERRUPTED for process in processes)


def _outcome(run_dir: Path, exitcode: int | None) -> dict[str, Any]:
    """The run's recorded status; a worker that died without recording one (killed, out of memory) is failed. A
    worker that found the folder busy recorded nothing, and nothing is recorded for it: the other trainer owns
    sweep_run.json."""
    if exitcode == BUSY_EXIT:
        from cadence.run_folder import RunFolderBusy, lock_holder

        return {"status": BUSY, "error": str(RunFolderBusy(run_dir, lock_holder(run_dir))), "seconds": 0.0}
    status = read_status(run_dir)
    if status.get("status") in ("done", "failed") and exitcode in (0, 1):
        return status
    cause = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
    status.update(status="failed", error=f"the worker process died ({cause}) before the run recorded its outcome")
    atomic_write_json(run_dir / RUN_STATUS, status)
    return status


def _ray_warm() -> int:
    import cadence.runs  # noqa: F401  (a worker's first task would import it)

    return os.getpid()


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail within ``timeout`` seconds when a Ray address's host does not answer (ray.init itself may hang)."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SweepError(f"Ray address {address!r} must look like HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise SweepError(f"cannot reach the Ray cluster at {address} ({e}); check RAY_ADDRESS or --ray-address, "
                         "or leave both unset to start Ray on this machine") from None


@dataclass
class RayExecutor:
    """Runs each run as a Ray task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs.

    ``address`` (else ``RAY_ADDRESS``) attaches to a running cluster; with neither, Ray starts on this machine with
    ``workers`` × ``cpus_per_run`` CPUs. On a cluster the sweep folder must be on storage every node sees.
    """

    workers: int | None = None
    address: str | None = None
    cpus_per_run: int = 1
    gpus_per_run: float = 0.0

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise SweepError(f"workers must be >= 1, got {self.workers}")
        if self.cpus_per_run < 1 or self.gpus_per_run < 0:
            raise SweepError(f"cpus_per_run must be >= 1 and gpus_per_run >= 0, got {self.cpus_per_run}, "
                             f"{self.gpus_per_run}")

    @property
    def slots(self) -> int:
        return self.workers or max(1, _cpus() // self.cpus_per_run)

    @property
    def torch_threads(self) -> int:
        return self.cpus_per_run

    @property
    def cluster(self) -> str | None:
        """The cluster to attach to: ``address``, else ``RAY_ADDRESS``; None starts Ray here."""
        return self.address or os.environ.get("RAY_ADDRESS")

    def check(self) -> None:
        """Ray is installed and the cluster named (if any) answers; before anything is written."""
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SweepError("the Ray executor needs Ray: pip install 'cadence-rl[ray]'") from None
        if self.cluster:
            check_ray_address(self.cluster)

    def connect(self) -> bool:
        """Attach to (or start) Ray; True when this call started it, so :meth:`run` shuts it down again."""
        self.check()
        import ray

        if ray.is_initialized():
            return False
        if self.cluster:
            ray.init(address=self.cluster, log_to_driver=False)
        else:  # "local": always a fresh instance here, never a `ray start` cluster that happens to run on this machine
            ray.init(address="local", num_cpus=self.slots * self.cpus_per_run,
                     num_gpus=math.ceil(self.slots * self.gpus_per_run), include_dashboard=False, log_to_driver=False)
        warm = ray.remote(_ray_warm).options(num_cpus=self.cpus_per_run, num_gpus=0)
        ray.get([warm.remote() for _ in range(self.slots)])  # the workers import cadence now, once
        return True

    def run(self, runs: Sequence[RunSpec], root: Path, on_event: Event) -> None:
        import ray

        started = self.connect()
        task = ray.remote(execute_run).options(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0)
        # at most as many in flight as the cluster can run at once, so "running" means running (and a
        # Ctrl-C leaves nothing queued)
        slots = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_run))
        queue, pending = list(runs), {}
        try:
            while queue or pending:
                while queue and len(pending) < slots:
                    run = queue.pop(0)
                    pending[task.remote(run, str(root.resolve()), self.torch_threads)] = run
                    on_event("start", run, None)
                ready, _ = ray.wait(list(pending), num_returns=1)
                run = pending.pop(ready[0])
                try:
                    status = ray.get(ready[0])
                except Exception as e:  # the task itself died (its node, its process)
                    status = _outcome(root / run.name, None)
                    status["error"] = f"the Ray task failed: {e}"
                on_event("end", run, status)
        except KeyboardInterrupt:
            stopped = _interrupt_ray(pending, root)
            pending.clear()
            raise KeyboardInterrupt(f"sweep interrupted: {stopped} running run(s) wrote a checkpoint; run the same "
                                    "command again to resume them and run the rest") from None
        finally:
            for ref in pending:  # an error in the sweep itself
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


def _interrupt_ray(pending: Mapping[Any, RunSpec], root: Path) -> int:
    """Ask each running Ray task to stop as Ctrl-C does (a KeyboardInterrupt in the task: its run writes a
    checkpoint), wait for them up to :data:`CHECKPOINT_GRACE_S`, force-cancel the rest; returns how many wrote a
    checkpoint since the interrupt."""
    import ray

    from cadence.checkpoint import checkpoint_path

    asked = time.time()
    for ref in pending:
        ray.cancel(ref, force=False)
    _, stuck = ray.wait(list(pending), num_returns=len(pending), timeout=CHECKPOINT_GRACE_S)
    for ref in stuck:
        ray.cancel(ref, force=True)
    written = [checkpoint_path(root / run.name) for run in pending.values()]
    return sum(path.is_file() and path.stat().st_mtime >= asked for path in written)


# -- the sweep -----------------------------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    """What a sweep did: runs skipped (finished before), done now, failed (with their errors)."""

    skipped: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    restarted: list[str] = field(default_factory=list)
    """Runs deleted and trained afresh because the grid changed their settings (``restart_changed``)."""


def prepare_folder(sweep: Sweep, root: str | Path) -> Path:
    """Write ``sweep.json`` and the grid's copy; refuse a folder that holds another sweep."""
    root = Path(root)
    existing = root / SWEEP_FILE
    if existing.is_file():
        other = json.loads(existing.read_text()).get("name")
        if other != sweep.name:
            raise SweepError(f"{root} holds sweep {other!r}, not {sweep.name!r}; choose another --runs-dir")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(existing, {"name": sweep.name, "compare": list(sweep.compare) if sweep.compare else None,
                                 "runs": [r.record() for r in sweep.runs]})
    if sweep.source:
        atomic_write_text(root / GRID_COPY, sweep.source)
    return root


def changed_runs(sweep: Sweep, root: str | Path, torch_threads: int | None = None) -> dict[str, dict[str, Any]]:
    """``run name -> {key: (stored, grid)}`` for each run whose folder holds a run trained with other settings than
    the grid now gives it (:func:`cadence.runs.run_changes`): resuming or skipping it would report its results
    under settings it was not trained with."""
    from cadence.runs import run_changes

    root = Path(root)
    out = {}
    for run in sweep.runs:
        if (root / run.name).is_dir():
            changes = run_changes(root / run.name, run.algo, run.sections(torch_threads))
            if changes:
                out[run.name] = changes
    return out


def changed_error(sweep: Sweep, changed: Mapping[str, Mapping[str, Any]]) -> SweepError:
    from cadence.runs import describe_changes

    lines = "\n".join(f"  {name}: {describe_changes(dict(keys))}" for name, keys in changed.items())
    return SweepError(f"sweep {sweep.name}: {len(changed)} run(s) were trained with other settings than the grid now "
                      f"gives them (stored -> grid), and would be reported under the new ones:\n{lines}\nPut the "
                      "stored values back, choose another --runs-dir, or pass --restart-changed to delete these runs "
                      "and train them again")


def wait_for_trainers(sweep: Sweep, root: str | Path, on_wait: Callable[[str, dict[str, Any]], None] | None = None,
                      timeout: float = CHECKPOINT_GRACE_S + 10.0) -> None:
    """Refuse (:class:`SweepError`) a sweep while a live trainer holds one of its run folders, started by a sweep
    still running or by ``cadence train``: two trainers in one folder would mix their curves. A trainer whose
    sweep has ended is stopping (it checkpoints, then exits: :func:`_stop_with`): wait up to ``timeout`` seconds
    for it, telling ``on_wait(run name, lock holder)`` once."""
    from cadence.run_folder import RunFolderBusy, is_locked, lock_holder, process_alive

    root = Path(root)
    for run in sweep.runs:
        run_dir = root / run.name
        if not run_dir.is_dir() or not is_locked(run_dir):
            continue
        holder = lock_holder(run_dir)
        owner, here = holder.get("owner"), holder.get("host") == socket.gethostname()
        if not (owner and here and not process_alive(int(owner))):
            raise SweepError(f"{RunFolderBusy(run_dir, holder)} (is an earlier sweep still running?)")
        if on_wait is not None:
            on_wait(run.name, holder)
        deadline = time.time() + timeout
        while is_locked(run_dir):
            if time.time() > deadline:
                raise SweepError(f"{RunFolderBusy(run_dir, lock_holder(run_dir))}; it outlived its sweep by "
                                 f"{timeout:.0f} s: stop it (kill {holder.get('pid')}) and run the sweep again")
            time.sleep(0.2)


def run_sweep(sweep: Sweep, root: str | Path, executor: LocalExecutor | RayExecutor | None = None,
              on_event: Event | None = None, *, restart_changed: bool = False,
              on_wait: Callable[[str, dict[str, Any]], None] | None = None) -> SweepOutcome:
    """Run the sweep's unfinished runs in ``root`` on ``executor`` (default: local); ``on_event`` sees each run
    start and end.

    Before anything is written: a run folder trained with other settings than the grid's is refused
    (:func:`changed_runs`), or with ``restart_changed`` deleted to be trained afresh; and a run folder another live
    trainer holds is refused (or waited for, if its sweep has died: :func:`wait_for_trainers`)."""
    import shutil

    executor = executor or LocalExecutor()
    if isinstance(executor, RayExecutor):
        executor.check()
    root = Path(root)
    wait_for_trainers(sweep, root, on_wait)
    changed = changed_runs(sweep, root, executor.torch_threads)
    if changed and not restart_changed:
        raise changed_error(sweep, changed)
    for name in changed:  # restart_changed: what they trained no longer matches the grid
        shutil.rmtree(root / name)
    root = prepare_folder(sweep, root)
    outcome = SweepOutcome(restarted=list(changed))
    outcome.skipped = [r.name for r in sweep.runs if is_done(r, root)]
    todo = [r for r in sweep.runs if r.name not in outcome.skipped]
    start = time.time()

    def record(kind: str, run: RunSpec, status: dict[str, Any] | None) -> None:
        if kind == "end" and status is not None:
            if status["status"] == "done":
                outcome.done.append(run.name)
            else:
                outcome.failed[run.name] = status.get("error") or "unknown error"
        if on_event is not None:
            on_event(kind, run, status)

    if todo:
        executor.run(todo, root, record)
    outcome.seconds = time.time() - start
    return outcome


class SweepProgress:
    """The sweep's progress on the terminal: runs done, running and failed, with an ETA from the mean time of the
    runs finished so far; a line per finished run (so logs of non-interactive sweeps show it too)."""

    def __init__(self, sweep: Sweep, root: Path, slots: int, console: Any = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.total, self.slots = len(sweep.runs), slots
        self.skipped = sum(is_done(r, root) for r in sweep.runs)
        self.done, self.failed, self.running, self.durations = self.skipped, 0, 0, []
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=self.console,
                                 transient=False)
        self.task = self.progress.add_task(f"sweep {sweep.name}", total=self.total, completed=self.skipped,
                                           status=self._status())
        self.started = False

    def _status(self) -> str:
        finished = len(self.durations)
        left = self.total - self.done - self.failed
        eta = ""
        if finished and left:
            seconds = sum(self.durations) / finished * left / max(1, min(self.slots, left))
            eta = f" · ETA {_duration(seconds)}"
        return f"{self.done} done · {self.running} running · {self.failed} failed{eta}"

    def __call__(self, kind: str, run: RunSpec, status: dict[str, Any] | None) -> None:
        if not self.started:  # shown once runs start: a sweep refused by its checks draws no bar
            self.started = True
            if self.skipped:
                self.console.print(f"{self.skipped} of {self.total} runs finished earlier: skipped")
            self.progress.start()
        if kind == "start":
            self.running += 1
        else:
            self.running -= 1
            assert status is not None
            self.durations.append(float(status.get("seconds", 0.0)))
            ok = status["status"] == "done"
            self.done += ok
            self.failed += not ok
            took = _duration(status.get("seconds", 0.0))
            line = (f"[green]done[/] {run.name} in {took}" if ok
                    else f"[red]failed[/] {run.name} after {took}: {status.get('error')}")
            self.progress.console.print(f"[{self.done + self.failed}/{self.total}] {line}", markup=True,
                                        highlight=False)
        self.progress.update(self.task, completed=self.done + self.failed, status=self._status())

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()
        elif self.skipped and exc[0] is None:  # nothing left to run
            self.console.print(f"{self.skipped} of {self.total} runs finished earlier: skipped")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")
