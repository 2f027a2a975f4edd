"""Sweeps: the grid file's expansion and its errors, the local and Ray executors, resuming a killed sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cadence.cli import main
from cadence.sweeps import (
    LocalExecutor,
    RayExecutor,
    SweepError,
    check_ray_address,
    execute_run,
    expand,
    load_sweep,
    read_status,
    run_sweep,
)

TINY = """
[sweep]
name = "tiny"

[base]
train.env = "InvertedPendulum-v5"
train.total_steps = {steps}
train.eval_every = {steps}
train.eval_episodes = 1
agent.learning_starts = 50
agent.batch_size = 16
agent.hidden_sizes = [16, 16]

[methods.SAC-1]
algo = "sac"

[methods.SAC-2]
algo = "sac"
agent.action_repeat = 2

[axes]
"train.seed" = [1, 2]
"""


def tiny_grid(tmp_path: Path, steps: int = 200, extra: str = "") -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(steps=steps) + extra)
    return path


def grid(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def test_the_documented_example_grid_expands():
    from cadence.sweeps import GRID_EXAMPLE

    sweep = expand(grid(GRID_EXAMPLE))
    # SRL-8 on 2 envs x 3 seeds, SAC-1 on InvertedPendulum only (the exclude) x 3 seeds, and the include
    assert len(sweep.runs) == 10 and sweep.compare == ("SRL-8", "SAC-1")
    assert sweep.runs[-1].name == "SRL-8/env=InvertedPendulum-v5,seed=4" and sweep.runs[0].mpc["label"] == "MPC"
    assert sweep.runs[-1].settings["train.env"] == "InvertedPendulum-v5"  # named, not the default Hopper-v5


def test_expand_names_excludes_and_includes():
    sweep = expand(grid(TINY.format(steps=200) + """
"train.env" = ["InvertedPendulum-v5", "Reacher-v5"]

[[exclude]]
method = "SAC-2"
"train.env" = "Reacher-v5"

[[include]]
method = "SAC-1"
"train.seed" = 7
"""))
    names = [r.name for r in sweep.runs]
    # 2 methods x 2 seeds x 2 envs, less SAC-2 on Reacher (2 runs), plus the include
    assert len(names) == 7 and len(set(names)) == 7
    assert "SAC-1/env=InvertedPendulum-v5,seed=1" in names  # the seed goes last whatever the axes' order
    assert not any(n.startswith("SAC-2/env=Reacher") for n in names)
    assert names[-1] == "SAC-1/seed=7"
    run = next(r for r in sweep.runs if r.name == "SAC-2/env=InvertedPendulum-v5,seed=2")
    assert run.algo == "sac" and run.settings["agent.action_repeat"] == 2 and run.settings["train.seed"] == 2
    assert run.settings["train.total_steps"] == 200  # from [base]
    sections = run.sections(torch_threads=3)
    assert sections["train"].torch_threads == 3 and sections["train"].progress is False
    assert sections["agent"].action_repeat == 2


def test_a_table_valued_setting_stays_a_table_in_methods_and_axes():
    sweep = expand(grid("""
[base]
"train.env" = "HopperPhysics-v0"
"train.teacher" = "alp-gmm"

[methods.often]
algo = "sac"
train.teacher_settings = { fit_every = 50, random_share = 0.5 }

[methods.axis]
algo = "sac"

[axes]
method = ["axis"]
"train.teacher_settings" = [{ fit_every = 100 }, { criterion = "bic" }]
"train.seed" = [1]

[[include]]
method = "often"
"train.seed" = 2
"""))
    by_name = {r.name: r for r in sweep.runs}
    assert set(by_name) == {"axis/teacher_settings=fit_every-100,seed=1",
                            "axis/teacher_settings=criterion-bic,seed=1", "often/seed=2"}
    assert by_name["often/seed=2"].settings["train.teacher_settings"] == {"fit_every": 50, "random_share": 0.5}
    sections = by_name["axis/teacher_settings=criterion-bic,seed=1"].sections()
    assert sections["train"].teacher_settings == {"criterion": "bic"}
    with pytest.raises(SweepError, match="fit_evry"):  # the table's own keys are still checked
        expand(grid('[base]\n"train.env" = "HopperPhysics-v0"\n"train.teacher" = "alp-gmm"\n[methods.m]\n'
                    'algo = "sac"\ntrain.teacher_settings = { fit_evry = 5 }\n'))


@pytest.mark.parametrize("extra, message", [
    ('\n[axis]\n"train.seed" = [1]\n', "did you mean 'axes'"),
    ('\n[methods.bad]\nalgo = "sac"\ntrain.sead = 3\n', "did you mean train.seed"),
    ('\n[methods.bad]\nalgo = "sack"\n', "did you mean 'sac'"),
    ('\n[[exclude]]\nmethod = "SAC-3"\n', "'SAC-3' is not among"),
    ('\n[[exclude]]\n"train.sed" = 1\n', "is no axis; did you mean 'train.seed'"),
    ('\n[[include]]\nmethod = "SAC-1"\n"train.seed" = 1\n', "same folder 'SAC-1/seed=1'"),
    ('\n[methods.bad]\nalgo = "sac"\nagent.gamma = 1.5\n', "agent.gamma"),
    ('\n[methods.bad]\nalgo = "sac"\nagent.learning_starts = 500\n', "not above agent.learning_starts"),
    ('\n[methods.bad]\nalgo = "sac"\ntrain.env = "Hoper-v5"\n', "close matches: Hopper-v5"),
    ('\n[methods.bad]\nalgo = "mopo"\ntrain.dataset = "no-such-data"\n', "no data set named 'no-such-data'"),
    # checked before any run: MPC needs a learned model, FAS a single-task recipe, an online run its env
    ('\n[methods.bad]\nalgo = "sac"\nmpc = { episodes = 1 }\n', "sac learns none; MPC works with srl"),
])
def test_bad_grids_fail_before_any_run(tmp_path, extra, message):
    path = tiny_grid(tmp_path, extra=extra)
    with pytest.raises(SweepError, match=message):
        load_sweep(path)


def test_an_online_run_without_an_env_and_fas_of_a_continual_recipe_are_refused():
    text = TINY.format(steps=200).replace('train.env = "InvertedPendulum-v5"\n', "")
    with pytest.raises(SweepError, match=r"run SAC-1/seed=1: no train.env.*default Hopper-v5"):
        expand(grid(text))
    with pytest.raises(SweepError, match="fas_episodes asks for a FAS sweep after training, but oer learns a task"):
        expand(grid('[sweep]\nfas_episodes = 2\n\n[methods.OER]\nalgo = "oer"\n'))


def test_empty_axis_and_no_methods_are_refused(tmp_path):
    with pytest.raises(SweepError, match="axis 'train.seed' is empty"):
        expand(grid(TINY.format(steps=200).replace('[1, 2]', '[]')))
    with pytest.raises(SweepError, match="no methods"):
        expand(grid('[axes]\n"train.seed" = [1]\n'))
    with pytest.raises(SweepError, match="does not exist"):
        load_sweep(tmp_path / "missing.toml")


def test_local_sweep_runs_skips_and_records_a_failure(tmp_path):
    sweep = load_sweep(tiny_grid(tmp_path))
    root = tmp_path / "sweep"
    # a run that fails only once it starts, which no check of the grid can see: its folder holds a corrupt checkpoint
    bad = "SAC-1/seed=2"
    (root / bad / "checkpoints").mkdir(parents=True)
    (root / bad / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    events = []
    outcome = run_sweep(sweep, root, LocalExecutor(workers=2), lambda kind, run, status: events.append(kind))
    good = [r for r in sweep.runs if r.name != bad]
    assert sorted(outcome.done) == sorted(r.name for r in good)
    assert list(outcome.failed) == [bad] and "CheckpointError" in outcome.failed[bad]
    assert read_status(root / bad)["status"] == "failed" and "Traceback" in read_status(root / bad)["traceback"]
    assert events.count("start") == events.count("end") == 4
    for run in good:
        metrics = json.loads((root / run.name / "metrics.json").read_text())
        assert metrics["steps"] == 200 and metrics["seed"] == run.settings["train.seed"]
        assert read_status(root / run.name)["status"] == "done"
    assert json.loads((root / "sweep.json").read_text())["name"] == "tiny"
    # again: the finished runs are skipped, the failed one is tried again (and fails again)
    again = run_sweep(sweep, root, LocalExecutor(workers=2))
    assert len(again.skipped) == 3 and not again.done and list(again.failed) == [bad]


def _slowness() -> float:
    """How much slower than an idle machine this one runs now (>= 1): the load per core, or a short fixed loop's
    time against its idle time. Timeouts of the tests that train in subprocesses scale with it."""
    start = time.perf_counter()
    sum(i * i for i in range(300_000))
    measured = (time.perf_counter() - start) / 0.02  # about 0.02 s on an idle 2-core machine
    load = os.getloadavg()[0] / max(1, len(os.sched_getaffinity(0))) if hasattr(os, "getloadavg") else 1.0
    return min(10.0, max(1.0, measured, load))


SLOW = _slowness()


class InProcess:
    """An executor running each run in this process, one after another (no worker processes: quick)."""

    slots, torch_threads = 1, 1

    def run(self, runs, root, on_event):
        for run in runs:
            on_event("start", run, None)
            on_event("end", run, execute_run(run, root, torch_threads=1))


ONE_RUN = """
[sweep]
name = "one"

[base]
train.env = "InvertedPendulum-v5"
train.total_steps = {steps}
train.eval_every = {eval_every}
train.eval_episodes = 1
agent.learning_starts = 20
agent.batch_size = 8
agent.hidden_sizes = [8]

[methods.SAC-1]
algo = "sac"
{method}
[axes]
"train.seed" = [1]
"""


def test_an_edited_setting_is_refused_naming_its_keys_until_restart_changed(tmp_path):
    path = tmp_path / "one.toml"
    write = lambda steps=60, method="": path.write_text(ONE_RUN.format(steps=steps, eval_every=20, method=method))
    root, name = tmp_path / "sweep", "SAC-1/seed=1"
    write()
    assert run_sweep(load_sweep(path), root, InProcess()).done == [name]
    # the method's settings edited: the finished run is not reported under them ("done in 0s"), nor resumed
    write(method="agent.actor_lr = 0.1\nagent.hidden_sizes = [4]\n")
    sweep = load_sweep(path)
    with pytest.raises(SweepError, match=r"(?s)SAC-1/seed=1: agent.actor_lr 0.0003 -> 0.1, agent.hidden_sizes \[8\] "
                                         r"-> \[4\].*--restart-changed"):
        run_sweep(sweep, root, InProcess())
    assert json.loads((root / "sweep.json").read_text())["runs"][0]["settings"].get("agent.actor_lr") is None
    assert main(["sweep", str(path), "--runs-dir", str(root), "--dry-run"]) == 0  # the dry run says so too
    assert main(["sweep", str(path), "--runs-dir", str(root)]) == 2
    outcome = run_sweep(sweep, root, InProcess(), restart_changed=True)
    assert outcome.restarted == outcome.done == [name]
    assert grid((root / name / "config.toml").read_text())["agent"]["hidden_sizes"] == [4]
    assert read_status(root / name)["settings"]["agent.actor_lr"] == 0.1
    # a larger budget is no change: the run resumes; a smaller one than it trained is refused
    write(steps=80, method="agent.actor_lr = 0.1\nagent.hidden_sizes = [4]\n")
    assert run_sweep(load_sweep(path), root, InProcess()).done == [name]
    assert json.loads((root / name / "metrics.json").read_text())["steps"] == 80
    write(steps=60, method="agent.actor_lr = 0.1\nagent.hidden_sizes = [4]\n")
    with pytest.raises(SweepError, match="train.total_steps 80 -> 60"):
        run_sweep(load_sweep(path), root, InProcess())


HOLD_LOCK = """
import sys, time
from cadence.run_folder import run_lock
with run_lock(sys.argv[1], owner=int(sys.argv[2])):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_one_trainer_per_run_folder(tmp_path):
    from cadence.run_folder import is_locked
    from cadence.sweeps import wait_for_trainers

    sweep = load_sweep(tiny_grid(tmp_path))
    root, run = tmp_path / "sweep", sweep.runs[0]
    # another live process trains in the folder, started by a sweep that is still running (this test's process)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root / run.name), str(os.getpid())],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert is_locked(root / run.name)
        with pytest.raises(SweepError, match=f"being trained by process {holder.pid}.*earlier sweep still running"):
            run_sweep(sweep, root, InProcess())
        status = execute_run(run, root, torch_threads=1)  # a worker that got there anyway records nothing
        assert status["status"] == "busy" and not (root / run.name / "sweep_run.json").exists()
        from cadence.runs import train

        with pytest.raises(ValueError, match=f"being trained by process {holder.pid}"):
            train("sac", run.sections(1), root / run.name, resume=True)
    finally:
        holder.kill()
        holder.wait()
    assert not is_locked(root / run.name)  # the kernel released it with the process: no stale lock
    wait_for_trainers(sweep, root)


def _descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is no zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.mark.timeout(int(240 * SLOW))
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists the sweep's processes through /proc")
def test_killing_the_sweep_alone_stops_its_workers_and_a_rerun_trains_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = tmp_path / "one.toml"
    # a quick first run, then a longer one that the kill interrupts
    path.write_text(ONE_RUN.format(steps=60, eval_every=20, method="") + """
[[include]]
method = "SAC-1"
"train.seed" = 2
"train.total_steps" = 600
"train.eval_every" = 100
""")
    root = tmp_path / "sweep"
    command = [sys.executable, "-m", "cadence.cli", "sweep", str(path), "--workers", "1", "--runs-dir", str(root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    first, second = root / "SAC-1/seed=1", root / "SAC-1/total_steps=600,eval_every=100,seed=2"
    deadline = time.time() + 120 * SLOW
    while read_status(first).get("status") != "done" or not list(second.glob("events.out.tfevents.*")):
        assert process.poll() is None and time.time() < deadline, process.stdout.read().decode()
        time.sleep(0.05)
    finished_at = read_status(first)["started"]
    workers = _descendants(process.pid)  # the forkserver, the second run's worker, the resource tracker
    process.send_signal(signal.SIGKILL)  # the sweep's PID alone, mid-way through the second run
    process.wait()
    # at once: the second run's worker, left by its sweep, writes its checkpoint and stops; the re-run waits for that
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120 * SLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 of 2 runs finished earlier: skipped" in result.stderr
    assert read_status(first)["started"] == finished_at  # not run again
    assert workers and not [pid for pid in workers if _running(pid)]  # no orphan went on training
    events = EventAccumulator(str(second))
    events.Reload()
    for tag in ("eval/return", "train/episode_return"):
        steps = [e.step for e in events.Scalars(tag)]
        assert len(steps) == len(set(steps)), f"{tag} holds duplicate steps: {steps}"
    assert [e.step for e in events.Scalars("eval/return")] == list(range(100, 601, 100))
    assert json.loads((second / "metrics.json").read_text())["steps"] == 600


def test_cli_dry_run_and_bad_workers(tmp_path, capsys):
    path = tiny_grid(tmp_path)
    assert main(["sweep", str(path), "--dry-run", "--runs-dir", str(tmp_path / "s"), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "SAC-2/seed=2" in out and "4 runs" in out and "2 at once, 1 torch thread(s) each" in out
    assert not (tmp_path / "s").exists()  # a dry run writes nothing
    assert main(["sweep", str(path), "--workers", "0", "--runs-dir", str(tmp_path / "s")]) == 2
    assert "workers must be >= 1" in capsys.readouterr().err


def test_unreachable_ray_address_fails_fast():
    start = time.time()
    with pytest.raises(SweepError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        check_ray_address("127.0.0.1:9", timeout=3)  # the discard port: nothing listens on loopback
    with pytest.raises(SweepError, match="HOST:PORT"):
        check_ray_address("not-an-address")
    assert time.time() - start < 10


@pytest.mark.timeout(900)  # four Ray workers each import torch: 4 min on a loaded 2-core machine
def test_ray_sweep_runs_four_runs_locally(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'cadence-rl[ray]'")
    sweep = load_sweep(tiny_grid(tmp_path))
    outcome = run_sweep(sweep, tmp_path / "sweep", RayExecutor(workers=2))
    assert sorted(outcome.done) == sorted(r.name for r in sweep.runs) and not outcome.failed
    for run in sweep.runs:
        assert json.loads((tmp_path / "sweep" / run.name / "metrics.json").read_text())["steps"] == 200


def test_cli_refuses_an_unreachable_ray_cluster_before_any_run(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'cadence-rl[ray]'")
    start = time.time()
    root = tmp_path / "s"
    code = main(["sweep", str(tiny_grid(tmp_path)), "--executor", "ray", "--ray-address", "127.0.0.1:9",
                 "--runs-dir", str(root)])
    assert code == 2 and "cannot reach the Ray cluster at 127.0.0.1:9" in capsys.readouterr().err
    assert time.time() - start < 30 and not any(root.rglob("sweep_run.json"))


def test_a_run_killed_before_its_first_checkpoint_starts_afresh_keeping_other_files(tmp_path):
    run = load_sweep(tiny_grid(tmp_path)).runs[0]
    folder = tmp_path / "sweep" / run.name
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "events.out.tfevents.1.dead").write_bytes(b"")  # what a run killed at its start leaves
    (folder / "checkpoints" / "model.pt").write_bytes(b"shared")  # e.g. a fitted model another run shares
    status = execute_run(run, tmp_path / "sweep", torch_threads=1)
    assert status["status"] == "done", status.get("traceback")
    assert not (folder / "events.out.tfevents.1.dead").exists()
    assert (folder / "checkpoints" / "model.pt").read_bytes() == b"shared"


@pytest.mark.timeout(int(240 * SLOW))
def test_ctrl_c_checkpoints_the_running_runs_and_the_sweep_resumes(tmp_path):
    path = tmp_path / "one.toml"
    path.write_text(ONE_RUN.format(steps=800, eval_every=400, method="").replace("[1]", "[1, 2]"))
    root = tmp_path / "sweep"
    command = [sys.executable, "-m", "cadence.cli", "sweep", str(path), "--workers", "2", "--runs-dir", str(root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a shell ignores SIGINT in the commands it starts in the background, and children inherit that: restore the
    # terminal's default so the test behaves alike from a terminal and from a backgrounded CI job
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120 * SLOW
    while len(list(root.glob("*/*/events.out.tfevents.*"))) < 2:  # both workers are training
        assert process.poll() is None and time.time() < deadline, process.stdout.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # what Ctrl-C does to the sweep
    out = process.communicate(timeout=120 * SLOW)[0]
    assert process.returncode == 130, out
    assert "running run(s) wrote a checkpoint" in out and "Traceback" not in out
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120 * SLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [json.loads(p.read_text())["steps"] for p in root.glob("*/*/metrics.json")] == [800, 800]


@pytest.mark.timeout(int(120 * SLOW))
def test_sigterm_stops_the_sweep_as_ctrl_c_does_with_status_143(tmp_path):
    path = tmp_path / "one.toml"
    path.write_text(ONE_RUN.format(steps=800, eval_every=400, method=""))
    root = tmp_path / "sweep"
    command = [sys.executable, "-m", "cadence.cli", "sweep", str(path), "--workers", "1", "--runs-dir", str(root)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 100 * SLOW
    while not list(root.glob("*/*/events.out.tfevents.*")):
        assert process.poll() is None and time.time() < deadline, process.stdout.read()
        time.sleep(0.05)
    process.terminate()
    out = process.communicate(timeout=100 * SLOW)[0]
    assert process.returncode == 143 and "sweep interrupted" in out, out
