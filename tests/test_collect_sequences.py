"""Data-set sequences (one data set per task of a task sequence) and ``train.task`` (a run fixed on one task)."""

import json
import tomllib
from types import SimpleNamespace

import pytest
from rich.console import Console

from cadence import cli
from cadence.cli import main
from cadence.collection import CollectConfig, collect, sequence_datasets
from cadence.config import ConfigError, to_toml
from cadence.envs import tasks
from cadence.loops.hooks import Hook
from cadence.replay import DatasetError, OfflineDataset, load_dataset
from cadence.runs import read_run_config, resolve_config, train

#: what keeps every SAC run tiny (the SAC runs are shared by the tests of this module)
SMALL_SAC = ("agent.learning_starts=100", "agent.batch_size=16", "agent.hidden_sizes=[16, 16]",
             "train.eval_episodes=1")
#: cheetah-vel-3's first two tasks: a two-task sequence whose SAC runs cheetah-vel-3's first two tasks share
TWO = ("CheetahVel-v0", [[0.5], [1.5]])


def small(**kw):
    return CollectConfig(**{"size": 200, "policy_steps": 300, "eval_every": 100, "threads": 1, "progress": False,
                            "reference_episodes": 1, **kw})


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """``cheetah-vel-2`` (medium) collected into a fresh data folder, the default one while the tests run."""
    root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(tasks.SEQUENCES, "cheetah-vel-2", TWO)
        mp.setenv("CADENCE_DATA_DIR", str(root))
        paths = collect(small(sequence="cheetah-vel-2"), SMALL_SAC)
        yield root, paths


def test_a_sequence_makes_one_data_set_per_task_with_its_task_id(collected):
    root, paths = collected
    assert paths == [root / "cheetah-vel-2-0-medium-v5.hdf5", root / "cheetah-vel-2-1-medium-v5.hdf5"]
    runs = []
    for index, (path, target) in enumerate(zip(paths, (0.5, 1.5), strict=True)):
        data = load_dataset(path.name.removesuffix("-v5.hdf5"))  # the name load_dataset resolves in data_dir()
        assert len(data) == 200 and data.task_ids.tolist() == [index] * 200
        meta = data.metadata
        assert meta["env_id"] == "CheetahVel-v0" and meta["kind"] == "medium"
        assert meta["sequence"] == "cheetah-vel-2" and meta["task_index"] == index
        assert meta["task_label"] == f"velocity={target:g}" and json.loads(meta["task_params"]) == [target]
        assert json.loads(meta["sequence_labels"]) == ["velocity=0.5", "velocity=1.5"]
        run = root / "policies" / f"sac_CheetahVel-v0_{target:g}_s1"  # one SAC run per task, trained on it
        assert str(run) in meta["policy"] and read_run_config(run)[1]["train"].task == (target,)
        runs.append(run)
        assert (data.rewards <= 0).all()  # cheetah-vel's reward, -|velocity - target| - control cost
    # rewards are measured against each task's own target: 1.5 is farther from what tiny policies reach
    first, second = (OfflineDataset.load_hdf5(p) for p in paths)
    assert second.rewards.mean() < first.rewards.mean()


def test_medium_replay_per_task_keeps_its_task_id(collected):
    root, paths = collected
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(tasks.SEQUENCES, "cheetah-vel-2", TWO)
        replays = collect(small(sequence="cheetah-vel-2", kind="medium-replay", out=str(root)))  # no training
    for index, (replay, medium) in enumerate(zip(replays, paths, strict=True)):
        assert replay == root / f"cheetah-vel-2-{index}-medium-replay-v5.hdf5"
        data, step = OfflineDataset.load_hdf5(replay), OfflineDataset.load_hdf5(medium).metadata["policy_steps"]
        assert len(data) == step and (data.task_ids == index).all()  # its run's buffer up to the medium snapshot
        assert data.metadata["task_index"] == index and "replay buffer" in data.metadata["policy"]


def test_sequence_datasets_lists_what_is_missing_and_how_to_make_it(collected, monkeypatch):
    root, paths = collected
    monkeypatch.setitem(tasks.SEQUENCES, "cheetah-vel-2", TWO)
    monkeypatch.setenv("CADENCE_DATA_DIR", str(root))
    assert sequence_datasets("cheetah-vel-2", "medium") == paths
    # cheetah-vel-3's task 0 is cheetah-vel-2's: its SAC run is reused, not trained again
    first = collect(small(sequence="cheetah-vel-3", task_index=0))
    assert OfflineDataset.load_hdf5(first).metadata["policy"] == OfflineDataset.load_hdf5(paths[0]).metadata["policy"]
    with pytest.raises(DatasetError) as err:
        sequence_datasets("CheetahVel", "medium")  # the family's name stands for its default sequence, cheetah-vel-3
    message = str(err.value)
    assert ("missing cheetah-vel-3-1-medium-v5.hdf5 (task 1: velocity=1.5), cheetah-vel-3-2-medium-v5.hdf5 "
            "(task 2: velocity=2.5); present: cheetah-vel-3-0-medium-v5.hdf5 (task 0: velocity=0.5)") in message
    assert "`cadence collect --sequence cheetah-vel-3 --kind medium`" in message
    with pytest.raises(DatasetError, match=r"present: none\. Make the rest with `cadence collect --sequence "
                                           r"cheetah-vel-3 --kind expert --out \S+`"):
        sequence_datasets("cheetah-vel-3", "expert", folder=root / "elsewhere")
    with pytest.raises(ValueError, match="unknown task sequence 'cheetah-vel-4'; close matches: .*sequences: "):
        sequence_datasets("cheetah-vel-4", "medium")
    with pytest.raises(ValueError, match="unknown data set kind 'mediocre'"):
        sequence_datasets("cheetah-vel-3", "mediocre")


def test_collect_on_the_command_line(collected, capsys):
    root, _ = collected
    cli.console = Console(width=1000)  # no wrapped paths (restored below)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(tasks.SEQUENCES, "cheetah-vel-2", TWO)
            assert main(["collect", "--sequence", "cheetah-vel-2", "--kind", "medium", "--out", str(root),
                         "--no-progress"]) == 0  # both files exist: nothing to do but report them
        out = capsys.readouterr().out
        assert "cheetah-vel-2-0-medium-v5.hdf5 (task 0: velocity=0.5): 200 transitions" in out
        assert "cheetah-vel-2-1-medium-v5.hdf5 (task 1: velocity=1.5): 200 transitions" in out
        # one task of a family env: task 1.5's SAC run exists already, its replay buffer makes the data set
        assert main(["collect", "--env", "CheetahVel-v0", "--task", "1.5", "--kind", "medium-replay", "--out",
                     str(root), "--policy-steps", "300", "--eval-every", "100", "--no-progress"]) == 0
        data = load_dataset(root / "cheetahvel-1.5-medium-replay-v5.hdf5")
        assert data.task_ids is None and data.metadata["task_label"] == "velocity=1.5"
        assert "sac_CheetahVel-v0_1.5_s1" in data.metadata["policy"]
    finally:
        cli.console = Console()
    assert main(["collect", "--task", "1.5", "--out", str(root)]) == 2
    assert "Hopper-v5 is a plain env without tasks" in capsys.readouterr().err
    assert main(["collect", "--sequence", "cheetah-vel-3", "--task", "1.5", "--out", str(root)]) == 2
    assert "the sequence sets every task" in capsys.readouterr().err
    assert main(["collect", "--sequence", "cheetah-vel-3", "--env", "Hopper-v5", "--out", str(root)]) == 2
    assert "must be CheetahVel-v0 or unset" in capsys.readouterr().err


def test_collect_config_checks_tasks_and_sequences():
    with pytest.raises(ConfigError, match="unknown task sequence 'cheeta-vel-3'; close matches: cheetah-vel-3"):
        CollectConfig(sequence="cheeta-vel-3")
    with pytest.raises(ConfigError, match="task_index=3: must be a task of sequence cheetah-vel-3: 0..2"):
        CollectConfig(sequence="cheetah-vel-3", task_index=3)
    with pytest.raises(ConfigError, match=r"outside its range: velocity=9 not in \[0, 3\]"):
        CollectConfig(env="CheetahVel-v0", task=[9.0])
    with pytest.raises(ConfigError, match="record_reference=True: must be false with a task or sequence"):
        CollectConfig(sequence="ant-dir-2", kind="expert", record_reference=True)
    cfg = CollectConfig(sequence="HopperPhysics", out="/data")  # a family's name: its default sequence
    assert cfg.env == "HopperPhysics-v0" and cfg.sequence == "hopper-physics-3"
    assert [f.name for f in cfg.files()] == [f"hopper-physics-3-{i}-medium-v5.hdf5" for i in range(3)]
    second = cfg.for_task(1)
    assert second.task == "low-gravity"
    assert str(second.policy_run) == "/data/policies/sac_HopperPhysics-v0_low-gravity_s1"
    params = CollectConfig(env="HopperPhysics-v0", task=(0.6, 1, 1.3))
    assert params.file().name == "hopperphysics-0.6_1_1.3-medium-v5.hdf5"
    assert CollectConfig().file().name == "hopper-medium-v5.hdf5"  # a plain env's names are unchanged


def test_medium_is_defined_for_returns_that_are_never_positive():
    from cadence.collection import _medium_step

    assert _medium_step([(1, 30.0), (2, 90.0), (3, 240.0)], 1 / 3, None) == 2  # 80 of 240: unchanged
    # cheetah-vel's returns are <= 0: a third of the way from the worst (-1500) to the final (-600) is -1200
    assert _medium_step([(1, -1500.0), (2, -1300.0), (3, -1100.0), (4, -600.0)], 1 / 3, None) == 3


# --- train.task ------------------------------------------------------------------------------------------------------
class GravityProbe(Hook):
    """The gravity every env of the run steps with: the training env at each episode end, the evaluation envs at
    each evaluation."""

    def __init__(self):
        self.seen = []

    def on_episode_end(self, ctx, world, episode_return, task):
        self.seen.append(ctx.env.unwrapped.model.opt.gravity[2])

    def on_eval(self, ctx, mean_return):
        interval_env = ctx.eval_at_interval[1]  # the agent's own decision interval (action_repeat=2)
        self.seen += [ctx.eval_env.unwrapped.model.opt.gravity[2], interval_env.unwrapped.model.opt.gravity[2]]


def tiny_run(env="HopperPhysics-v0", task="low-gravity", *extra):
    return resolve_config("sac", {"train": {"env": env, "task": task, "total_steps": 300, "seed": 2}}, None,
                          [*SMALL_SAC, "agent.action_repeat=2", "train.eval_every=150", "train.torch_threads=1",
                           "train.progress=false", *extra])


def test_train_task_fixes_the_physics_of_every_env_of_the_run(tmp_path):
    probe = GravityProbe()
    state = train("sac", tiny_run(), tmp_path, hooks=[probe])
    low_gravity = tasks.PHYSICS_PRESETS["low-gravity"][0]
    assert state.episodes >= 2 and len(probe.seen) > state.episodes  # training episodes and evaluations
    assert probe.seen == pytest.approx([-9.81 * low_gravity] * len(probe.seen))
    assert read_run_config(tmp_path)[1]["train"].task == "low-gravity"  # config.toml keeps it
    from cadence.runs import evaluate_fas

    with pytest.raises(ConfigError, match="trained on task 'low-gravity'.*default task"):
        evaluate_fas(tmp_path, asl_grid=(1,), episodes=1)  # FAS sweeps run the family's default task


def test_train_task_round_trips_through_toml_and_the_flags(tmp_path, monkeypatch):
    for task in ((0.6, 1.0, 1.3), "heavy-torso"):
        sections = tiny_run(task=task)
        back = resolve_config("sac", tomllib.loads(to_toml(sections)))
        assert back == sections and back["train"].task == task
    assert resolve_config("sac", None, None, ["train.task=1.5"])["train"].task == (1.5,)  # one param, no brackets
    assert resolve_config("sac", None, None, ["train.task="])["train"].task is None  # empty: the default task
    assert cli._parse_task("0.6, 1,1") == (0.6, 1.0, 1.0) and cli._parse_task("low-gravity") == "low-gravity"
    seen = []

    def fake_train(algo, sections, run_dir, **kw):
        seen.append(sections)
        return SimpleNamespace(step=1, episodes=1, evals=[(1, 0.0)])

    monkeypatch.setattr("cadence.runs.train", fake_train)
    for flag, task in (("2.5", (2.5,)), ("normal", "normal")):
        assert main(["train", "sac", "--env", "HopperPhysics-v0" if task == "normal" else "CheetahVel-v0", "--task",
                     flag, "--run-dir", str(tmp_path / flag)]) == 0
        assert seen[-1]["train"].task == task


def test_train_task_is_refused_where_it_cannot_apply(tmp_path, capsys):
    with pytest.raises(ConfigError, match="Hopper-v5 is a plain env without tasks; use a task-family env"):
        train("sac", tiny_run("Hopper-v5", [1.0]), tmp_path / "plain")
    assert not (tmp_path / "plain").exists()  # refused before the run folder is written
    with pytest.raises(ConfigError, match="train.task: unknown task 'moon' of HopperPhysics-v0"):
        train("sac", tiny_run("HopperPhysics-v0", "moon"), tmp_path / "moon")
    with pytest.raises(ConfigError, match="train.task=.*must be unset with a teacher: teacher='random'"):
        tiny_run("HopperPhysics-v0", "low-gravity", "train.teacher=random")
    with pytest.raises(ConfigError, match="train.task=.*must be unset with num_envs=2"):
        tiny_run("HopperPhysics-v0", "low-gravity", "train.num_envs=2")
    assert main(["train", "sac", "--env", "Hopper-v5", "--task", "1", "--run-dir", str(tmp_path / "cli")]) == 2
    assert "Hopper-v5 is a plain env without tasks" in capsys.readouterr().err
    assert main(["train", "mopo", "--task", "1", "--dataset", "x", "--run-dir", str(tmp_path / "m")]) == 2
    assert "--task fixes the task of online agents (sac, srl), not mopo" in capsys.readouterr().err
