"""The command line as a new user meets it: help, config files, errors, eval fas and plot."""

import argparse
import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

import cadence
from cadence import cli
from cadence.cli import main
from cadence.evaluation.fas import ASL_GRID, FASResult
from cadence.recipes import RECIPES
from cadence.replay import DatasetError, load_dataset
from cadence.run_folder import write_metrics
from cadence.runs import resolve_config


@pytest.fixture
def wide(monkeypatch):
    """A console wide enough that no printed path is wrapped."""
    monkeypatch.setattr(cli, "console", Console(width=1000))


@pytest.fixture
def fake_train(monkeypatch):
    """runs.train that starts (calls on_start) and returns at once; records its calls."""
    calls = []

    def train(algo, sections, run_dir, *, resume=False, on_start=None, on_resume=None):
        calls.append((algo, sections))
        on_start(Path(run_dir))
        return SimpleNamespace(step=10, episodes=1, evals=[(10, 1.0)])

    monkeypatch.setattr("cadence.runs.train", train)
    return calls


@pytest.fixture
def data_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("CADENCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    return tmp_path / "data", tmp_path / "d4rl"


def test_static_names_match_the_library():
    from cadence.collection import KINDS

    assert set(cli.ALGOS) == set(RECIPES)
    assert cli.COLLECT_KINDS == KINDS


# --- cadence config -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", sorted(RECIPES))
def test_config_prints_a_valid_toml_file_of_the_defaults(algo, tmp_path, capsys):
    assert main(["config", algo]) == 0
    text = capsys.readouterr().out
    tomllib.loads(text)
    path = tmp_path / "my.toml"
    path.write_text(text)
    assert resolve_config(algo, config_file=path) == resolve_config(algo)


@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_config_into_a_closed_pipe_is_quiet(reader):
    command = f"{shlex.quote(sys.executable)} -m cadence.cli config srl | {reader}"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert done.stderr == ""
    if reader.startswith("head"):
        assert done.stdout.startswith("# srl defaults")


# --- precedence: defaults (per-env ones included) <- --config file <- flags <- --set ---------------------------------
def test_flags_beat_the_config_file_and_set_beats_both(tmp_path, capsys, fake_train):
    assert main(["config", "sac"]) == 0
    config = tmp_path / "a.toml"
    config.write_text(capsys.readouterr().out)  # every key: env = "Hopper-v5", seed = 1, total_steps = 1000000
    assert main(["train", "sac", "--config", str(config), "--env", "InvertedPendulum-v5", "--total-steps", "2000",
                 "--run-dir", str(tmp_path / "r1")]) == 0
    train = fake_train[-1][1]["train"]
    assert (train.env, train.total_steps, train.seed) == ("InvertedPendulum-v5", 2000, 1)
    # the file leaves learning_starts to the env: InvertedPendulum's 1000, so a 2000-step budget is accepted
    assert fake_train[-1][1]["agent"].learning_starts == 1000
    err = capsys.readouterr().err
    assert 'note: --env InvertedPendulum-v5 is used, not train.env = "Hopper-v5"' in err
    assert "--total-steps 2000 is used, not train.total_steps = 1000000" in err
    assert main(["train", "sac", "--config", str(config), "--seed", "3", "--set", "train.seed=5",
                 "--run-dir", str(tmp_path / "r2")]) == 0
    assert fake_train[-1][1]["train"].seed == 5 and fake_train[-1][1]["train"].env == "Hopper-v5"
    assert "--set train.seed=5 is used, not --seed 3 (--set beats the flags)" in capsys.readouterr().err
    # a value the file pins stays pinned (per-env defaults are the lowest layer)
    config.write_text('[agent]\nlearning_starts = 500\n')
    assert main(["train", "sac", "--config", str(config), "--env", "InvertedPendulum-v5",
                 "--run-dir", str(tmp_path / "r3")]) == 0
    assert fake_train[-1][1]["agent"].learning_starts == 500


def test_help_and_config_show_the_per_env_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "sac", "--help"])
    out = capsys.readouterr().out
    assert "config precedence, lowest first" in out and "then --set KEY=VALUE" in " ".join(out.split())
    assert "agent.learning_starts = 10000" in out and "1000 on InvertedPendulum-v5" in out
    with pytest.raises(SystemExit):
        main(["train", "sac", "--env", "InvertedPendulum-v5", "--help"])
    out = capsys.readouterr().out
    assert "agent.learning_starts = 1000 " in out and 'train.env = "InvertedPendulum-v5"' in out
    assert main(["config", "sac", "--env", "InvertedPendulum-v5"]) == 0
    on_env = tomllib.loads(capsys.readouterr().out)
    assert on_env["agent"]["learning_starts"] == 1000 and on_env["train"]["env"] == "InvertedPendulum-v5"
    assert main(["config", "sac"]) == 0
    text = capsys.readouterr().out
    assert "learning_starts" not in tomllib.loads(text)["agent"] and "# learning_starts = 10000" in text
    assert main(["config", "hypercrl", "--env", "Hopper-v5"]) == 2
    assert "follows from train.sequence" in capsys.readouterr().err


def test_the_schema_cache_is_the_recipes_own(tmp_path, monkeypatch):
    from cadence import schema

    monkeypatch.setenv("CADENCE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(schema, "_MEMO", {})
    built = schema.schema()
    cached = list(tmp_path.glob("schema-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == built == schema.build()
    assert set(built["algos"]) == set(cli.ALGOS)
    assert built["algos"]["sac"]["env_defaults"]["InvertedPendulum-v5"] == {"agent": {"learning_starts": 1000}}
    # another version of the source is another cache file: a stale one is never read
    monkeypatch.setattr(schema, "_MEMO", {})
    monkeypatch.setattr(schema, "source_hash", lambda: "other")
    cached[0].rename(tmp_path / "schema-other.json")
    (tmp_path / "schema-other.json").write_text('{"algos": {}, "teachers": []}')
    assert schema.schema() == {"algos": {}, "teachers": []}


def test_the_cli_answers_help_config_and_argument_errors_without_torch(tmp_path):
    from cadence import schema

    env = {**__import__("os").environ, "CADENCE_CACHE_DIR": str(tmp_path)}
    (tmp_path / f"schema-{schema.source_hash()}.json").write_text(json.dumps(schema.build()))  # a warm cache
    code = """
import sys
import cadence.cli
heavy = lambda: [m for m in ("torch", "sklearn", "scipy", "matplotlib") if m in sys.modules]
print("after import:", heavy())
from cadence.cli import main
for argv in (["train", "sac", "--help"], ["train", "sac", "--env", "InvertedPendulum-v5", "--help"],
             ["config", "sac"], ["config", "srl", "--env", "Reacher-v5"], ["train", "sac", "--teacher", "alp-gmn"],
             ["train", "sac", "--set", "agent.batchsize=3"], ["train", "sac", "--dataset", "x"],
             ["train", "sac", "--bogus"], ["train", "sac", "--resume", "r", "--env", "X"], ["sweep", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
print("after commands:", heavy())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "after import: []" in done.stdout and "after commands: []" in done.stdout, done.stdout + done.stderr
    assert "did you mean alp-gmm" in done.stderr and "did you mean agent.batch_size" in done.stderr


# --- help ----------------------------------------------------------------------------------------------------------
def test_help_does_not_import_torch():
    code = ("import sys\nfrom cadence.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['eval', 'fas', '--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch imported:', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("torch imported: False")


def test_help_is_plain_text_and_there_is_a_version(capsys):
    assert "``" not in cli.build_parser().format_help()
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"cadence {cadence.__version__}"


def test_train_algo_help_lists_its_config_keys(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(algo in out for algo in RECIPES) and "agent.batch_size" not in out
    with pytest.raises(SystemExit):
        main(["train", "sac", "--help"])
    out = capsys.readouterr().out
    assert "--total-steps" in out and "agent.action_repeat = 1" in out
    assert "agent.batch_size = 256" in out and "Transitions per gradient step." in out
    assert "train.stop_return = inf" in out and "train.progress = true" in out
    with pytest.raises(SystemExit):
        main(["train", "mopo", "--help"])
    out = capsys.readouterr().out
    assert 'train.dataset = ""' in out and "agent.penalty_coef" in out
    assert "agent.sequence_length" not in out


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield parser.prog, action


def test_every_flag_has_help():
    missing = [f"{prog} {action.dest}" for prog, action in _actions(cli.build_parser()) if not action.help]
    assert not missing


# --- train errors ---------------------------------------------------------------------------------------------------
def test_run_folder_is_printed_once_the_run_starts(tmp_path, capsys, fake_train, wide):
    assert main(["train", "sac", "--run-dir", str(tmp_path / "r")]) == 0
    assert f"run folder {tmp_path / 'r'}" in capsys.readouterr().out


def test_no_run_folder_is_printed_before_an_error(tmp_path, capsys):
    assert main(["train", "sac", "--env", "Hoper-v5", "--run-dir", str(tmp_path / "x")]) == 2
    assert "run folder" not in capsys.readouterr().out and not (tmp_path / "x").exists()


def test_offline_algos_require_a_dataset(tmp_path, capsys, data_dirs, fake_train):
    own, d4rl = data_dirs
    assert main(["train", "mopo", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--dataset" in err and "cadence collect --env Hopper-v5 --kind medium" in err and not fake_train
    own.mkdir()
    d4rl.mkdir()
    (own / "walker-medium-v5.hdf5").touch()
    (d4rl / "hopper-medium-v2.hdf5").touch()
    assert main(["train", "mobile", "--run-dir", str(tmp_path / "r")]) == 2
    assert "available data sets: walker-medium, d4rl:hopper-medium-v2" in capsys.readouterr().err
    # named by --dataset, --set or the --config file: accepted
    assert main(["train", "mopo", "--dataset", "walker-medium", "--run-dir", str(tmp_path / "a")]) == 0
    assert main(["train", "mopo", "--set", "train.dataset=walker-medium", "--run-dir", str(tmp_path / "b")]) == 0
    config = tmp_path / "mopo.toml"
    config.write_text('[train]\ndataset = "walker-medium"\n')
    assert main(["train", "mopo", "--config", str(config), "--run-dir", str(tmp_path / "c")]) == 0
    assert [s["train"].dataset for _, s in fake_train] == ["walker-medium"] * 3


def test_a_missing_dataset_lists_the_ones_there_are(data_dirs):
    own, _ = data_dirs
    with pytest.raises(DatasetError, match=r"no data sets in .* yet; make one with `cadence collect --env Hopper-v5"):
        load_dataset("hopper-medium")
    own.mkdir()
    (own / "hopper-random-v5.hdf5").touch()
    with pytest.raises(DatasetError, match=r"no data set named 'hopper-medium'.*available data sets: hopper-random"):
        load_dataset("hopper-medium")


def test_set_errors_name_the_key(tmp_path, capsys):
    assert main(["train", "sac", "--set", "agent.batchsize=3", "--run-dir", str(tmp_path / "x")]) == 2
    assert "did you mean agent.batch_size?" in capsys.readouterr().err
    assert main(["train", "sac", "--set", "agent.gamma=1.5", "--run-dir", str(tmp_path / "x")]) == 2
    assert "invalid config value agent.gamma=1.5" in capsys.readouterr().err


def test_errors_print_brackets_literally(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[critic]\nx = 1\n")
    assert main(["train", "sac", "--config", str(bad)]) == 2
    assert "unknown config section [critic]" in capsys.readouterr().err


# --- eval fas -------------------------------------------------------------------------------------------------------
def _fake_result(grid) -> FASResult:
    return FASResult("InvertedPendulum-v5", list(grid), [[1.0, 2.0] for _ in grid], 0.5, 1000.0, 0.0)


@pytest.fixture
def fake_fas(monkeypatch):
    calls = []

    def evaluate_fas(run_dir, asl_grid, episodes, seed, planner=None, batched=None, on_asl=None):
        calls.append((tuple(asl_grid), planner))
        if tuple(asl_grid) == ASL_GRID:  # as the real sweep: a full grid is logged once per trained step
            write_metrics(run_dir, {"fas_mpc_logged_step" if planner else "fas_logged_step": 100})
        return _fake_result(asl_grid)

    monkeypatch.setattr("cadence.runs.evaluate_fas", evaluate_fas)
    return calls


def test_eval_fas_checks_its_arguments_first(tmp_path, capsys):
    for asl, message in (("1,40", "--asl 1,40: ASL 40 is outside FAS's grid 1..30"),
                         ("0,2", "--asl 0,2: ASL values must be integers >= 1"),
                         ("4,2", "--asl 4,2: the ASL grid must be strictly increasing")):
        assert main(["eval", "fas", str(tmp_path), "--asl", asl]) == 2
        assert message in capsys.readouterr().err
    assert main(["eval", "fas"]) == 2
    assert "exactly one of RUN_DIR" in capsys.readouterr().err
    assert main(["eval", "fas", str(tmp_path), "--sb3", "m.zip", "--env", "Hopper-v5"]) == 2
    assert "exactly one of RUN_DIR" in capsys.readouterr().err
    assert main(["eval", "fas", "--sb3", "m.zip"]) == 2
    assert "--sb3 needs --env" in capsys.readouterr().err


def test_eval_fas_names_the_files_it_wrote(tmp_path, capsys, fake_fas, wide):
    assert main(["eval", "fas", str(tmp_path), "--asl", "1,2,4"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'fas_partial.json'} and {tmp_path / 'fas_partial.png'}" in out
    assert "not a FAS comparable with the paper's" in out and "16-point grid" in out and "TensorBoard" not in out
    assert main(["eval", "fas", str(tmp_path), "--asl", "1,2", "--planner", "--samples", "20"]) == 0
    assert f"wrote {tmp_path / 'fas_partial_mpc.json'}" in capsys.readouterr().out
    assert fake_fas[-1][1].samples == 20 and fake_fas[-1][1].elites == 2
    assert main(["eval", "fas", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'fas.json'} and {tmp_path / 'fas.png'}" in out and "comparable" not in out
    assert "eval/fas logged to TensorBoard" in out
    assert fake_fas[-1] == (ASL_GRID, None)
    assert main(["eval", "fas", str(tmp_path)]) == 0  # the same trained step again: nothing new in TensorBoard
    assert "already holds this step's eval/fas, so nothing was logged again" in capsys.readouterr().out


def test_eval_fas_of_an_sb3_model(tmp_path, capsys, wide):
    import gymnasium as gym
    from stable_baselines3 import SAC

    model = tmp_path / "pendulum.zip"
    SAC("MlpPolicy", gym.make("InvertedPendulum-v5"), buffer_size=100, seed=0).save(model)
    assert main(["eval", "fas", "--sb3", str(model), "--env", "InvertedPendulum-v5", "--asl", "1,2",
                 "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "pendulum_fas" / "fas_partial.json"
    assert f"wrote {written}" in out and "SB3-SAC" in out
    assert json.loads(written.read_text())["label"] == "SB3-SAC"
    assert main(["eval", "fas", "--sb3", str(model), "--env", "Hopper-v5", "--asl", "1"]) == 2
    assert "does not fit Hopper-v5" in capsys.readouterr().err


# --- plot -----------------------------------------------------------------------------------------------------------
def test_plot_runs(tmp_path, capsys, wide):
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"sac_s{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"algo": "sac", "env": "InvertedPendulum-v5", "seed": seed,
                                                      "steps": 100, "evals": [[50, 1.0 + seed], [100, 5.0]]}))
        runs.append(str(run))
    out = tmp_path / "curves.png"
    assert main(["plot", *runs, "--group", "algo", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and f"wrote {out}" in capsys.readouterr().out
    assert main(["plot", *runs, "--what", "fas"]) == 2
    assert "no full FAS sweep yet" in capsys.readouterr().err
    assert main(["plot", *runs, "--group", "colour"]) == 2
    assert "group must be one of" in capsys.readouterr().err


def test_ctrl_c_during_training_saves_and_exits_130(tmp_path, monkeypatch, capsys):
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a shell, even under a CI job
    try:
        _ctrl_c_run(tmp_path, monkeypatch, capsys)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_run(tmp_path, monkeypatch, capsys):
    import os
    import signal

    from cadence.loops.common import PeriodicLog

    real_call, sent = PeriodicLog.__call__, []

    def send_sigint(self, state, metrics):  # Ctrl-C once, at step 120
        real_call(self, state, metrics)
        if state.step >= 120 and not sent:
            sent.append(state.step)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(PeriodicLog, "__call__", send_sigint)
    run = tmp_path / "run"
    code = main(["train", "sac", "--env", "InvertedPendulum-v5", "--total-steps", "400", "--run-dir", str(run),
                 "--no-progress", "--set", "agent.learning_starts=50", "--set", "agent.hidden_sizes=[16, 16]",
                 "--set", "agent.batch_size=16", "--set", "train.torch_threads=1"])
    assert code == 130
    err = capsys.readouterr().err
    assert "SIGINT at step" in err and f"--resume {run}" in err and "Traceback" not in err
    import re

    stopped = int(re.search(r"SIGINT at step ([\d,]+)", err)[1].replace(",", ""))
    # the interrupted run's FAS is labelled with the steps it trained, not its budget (400)
    assert main(["eval", "fas", str(run), "--episodes", "1"]) == 0
    assert json.loads((run / "fas.json").read_text())["trained_steps"] == stopped
    assert json.loads((run / "metrics.json").read_text())["fas_logged_step"] == stopped
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/fas")] == [stopped]
    capsys.readouterr()
    assert main(["train", "sac", "--resume", str(run), "--no-progress"]) == 0
    assert f"resumed at step {stopped:,} of 400" in capsys.readouterr().out
    assert (run / f"fas_at_{stopped}_steps.json").is_file()  # that sweep no longer describes the finished run


def test_a_signal_sets_the_exit_status_shells_expect():
    assert cli._interrupted_status("SIGTERM at step 2,087: checkpoint written") == 143
    assert cli._interrupted_status("SIGINT at step 2,087: checkpoint written") == 130
    assert cli._interrupted_status("interrupted before a checkpoint of the current step was written") == 130


@pytest.mark.parametrize("argv", [["train", "sac", "--seed", "-1"], ["collect", "--seed", "-3"],
                                  ["collect", "--policy-seed", "-2"], ["eval", "fas", "runs/x", "--seed", "-1"],
                                  ["task-gap", "halfcheetah-motor-3", "--seed", "-4"]])
def test_a_negative_seed_flag_is_refused_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and "seeds are >= 0" in capsys.readouterr().err


def test_an_unavailable_backend_is_a_one_line_error(capsys, monkeypatch):
    from cadence.envs.batched import backends

    def missing(*args, **kwargs):
        raise backends.ExtraMissing("the warp backend needs MuJoCo Warp: pip install 'cadence-rl[gpu]'")

    monkeypatch.setattr(backends, "warp_backend", missing)
    monkeypatch.setattr("cadence.envs.batched.env.warp_backend", missing)
    code = main(["collect", "--env", "Hopper-v5", "--kind", "random", "--worlds", "2", "--size", "20",
                 "--backend", "warp", "--out", "unused.hdf5", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'cadence-rl[gpu]'" in err and "Traceback" not in err
