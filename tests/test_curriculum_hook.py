"""A curriculum teacher inside the training loop: tasks reach the physics, resume continues the curriculum."""

import tomllib

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cadence.checkpoint import load_checkpoint
from cadence.cli import main as cli_main
from cadence.config import ConfigError, to_toml
from cadence.curricula import make_teacher
from cadence.envs.tasks import FAMILIES, family
from cadence.evaluation.fas import R_MAX
from cadence.loops import HookError
from cadence.loops.curriculum import TeacherHook
from cadence.recipes import teacher_hook
from cadence.runs import resolve_config, train


def tiny(teacher="random", total=400, **train_extra):
    train_section = {"env": "HopperPhysics-v0", "seed": 3, "total_steps": total, "teacher": teacher, **train_extra}
    return resolve_config("sac", {"train": train_section}, None,
                          ["agent.hidden_sizes=[16, 16]", "agent.batch_size=16", "agent.learning_starts=50",
                           "train.eval_every=200", "train.eval_episodes=1", "train.torch_threads=1",
                           "train.checkpoint_every=50", "train.progress=false"])


def teacher_history(run_dir):
    return load_checkpoint(run_dir)["hooks"]["teacher"]["teacher"]


class GravityProbe(TeacherHook):
    """Records, at each episode end, the task the teacher chose and the gravity the env actually ran with."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen = []

    def on_episode_end(self, ctx, world, episode_return, task):
        self.seen.append((np.asarray(task).copy(), ctx.env.unwrapped.model.opt.gravity[2]))
        super().on_episode_end(ctx, world, episode_return, task)


def test_the_teacher_chooses_every_episodes_physics_and_learns_from_its_return(tmp_path):
    hopper = family("HopperPhysics-v0")
    probe = GravityProbe(make_teacher("random", hopper.param_space.low, hopper.param_space.high, seed=5), hopper)
    state = train("sac", tiny(""), tmp_path, hooks=[probe])
    assert len(probe.seen) == state.episodes > 5
    base_gravity = -9.81
    for task, gravity in probe.seen:  # params are (gravity scale, friction scale, torso mass scale)
        assert gravity == pytest.approx(base_gravity * task[0])
    params = teacher_history(tmp_path)["params"].numpy()
    np.testing.assert_allclose(params, np.stack([t for t, _ in probe.seen]))  # every return went back to the teacher
    assert len({tuple(p) for p in params.tolist()}) == len(params)  # a fresh task each episode


def test_train_teacher_logs_the_curriculum_and_test_set_mastery(tmp_path):
    train("sac", tiny("random"), tmp_path)
    tags = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0}).Reload().Tags()
    assert {"curriculum/mastered", "curriculum/test_score", "curriculum/episodes"} <= set(tags["scalars"])
    assert "curriculum/sampled_gravity" in " ".join(tags["histograms"])
    state = load_checkpoint(tmp_path)["hooks"]["teacher"]
    hopper = family("HopperPhysics-v0")
    assert [step for step, _ in state["tests"]] == [200, 400]  # every evaluation, one return per test task
    assert all(len(returns) == len(hopper.test_tasks) for _, returns in state["tests"])
    assert 0 < state["teacher_seconds"] < 5


def test_a_killed_run_resumes_with_the_same_curriculum(tmp_path):
    train("sac", tiny("alp-gmm", total=300), tmp_path / "full")

    class Stop(Exception):
        """A crash inside the loop, at a step of the test's choosing."""

    def stop_at_170(state):
        if state.step == 170:
            raise Stop

    with pytest.raises(HookError, match="Stop"):  # a crash mid-run: the last periodic checkpoint survives
        train("sac", tiny("alp-gmm", total=300), tmp_path / "cut", callbacks=[stop_at_170])
    assert load_checkpoint(tmp_path / "cut")["counters"]["step"] < 170
    train("sac", tiny("alp-gmm", total=300), tmp_path / "cut", resume=True)
    full, cut = teacher_history(tmp_path / "full"), teacher_history(tmp_path / "cut")
    assert full["params"].equal(cut["params"]) and full["returns"].equal(cut["returns"])  # the same curriculum
    assert full["rng"] == cut["rng"]


def test_teacher_bad_input_fails_before_training(tmp_path, capsys):
    with pytest.raises(ConfigError, match="teacher.*one of .*alp-gmm"):
        tiny("alp_gm")
    plain = resolve_config("sac", {"train": {"env": "Hopper-v5", "teacher": "random"}}, None, [])
    with pytest.raises(ConfigError, match="Hopper-v5 has none; use a task-family env: .*HopperPhysics-v0"):
        train("sac", plain, tmp_path / "plain")
    assert not (tmp_path / "plain").exists()
    assert cli_main(["train", "mopo", "--teacher", "random", "--dataset", "x", "--run-dir", str(tmp_path / "m")]) != 0
    assert "--teacher chooses tasks for online agents" in capsys.readouterr().err
    hopper = family("HopperPhysics-v0")
    wrong = make_teacher("random", hopper.param_space.low, hopper.param_space.high * 2)
    with pytest.raises(ValueError, match="tasks lie in .*which is not HopperPhysics-v0's param_space"):
        TeacherHook(wrong, hopper)


def test_a_non_finite_return_stops_the_run_naming_the_episode(tmp_path):
    class NanReturns(TeacherHook):
        def on_episode_end(self, ctx, world, episode_return, task):
            super().on_episode_end(ctx, world, float("nan") if ctx.state.episodes == 4 else episode_return, task)

    hopper = family("HopperPhysics-v0")
    hook = NanReturns(make_teacher("random", hopper.param_space.low, hopper.param_space.high), hopper)
    with pytest.raises(HookError, match="episode 4 returned nan"):
        train("sac", tiny(""), tmp_path, hooks=[hook])
    assert load_checkpoint(tmp_path)["counters"]["episodes"] < 4  # the last good checkpoint is kept


def train_section(env, teacher, *overrides):
    return resolve_config("sac", {"train": {"env": env, "teacher": teacher}}, None, list(overrides))["train"]


def test_every_task_family_has_a_reward_range_and_the_config_overrides_it():
    for fam in FAMILIES.values():  # CheetahVel, AntDir and PusherObject included: riac runs on every family
        low, high = fam.reward_range
        assert low < high
        assert teacher_hook(train_section(fam.name, "riac")).teacher.reward_range == (low, high)
    for name in ("HopperPhysics-v0", "Walker2dPhysics-v0", "HalfCheetahBody-v0", "HalfCheetahMotor-v0"):
        fam = family(name)  # the range teachers had before (0 to the base env's R_max): saved states still load
        assert fam.reward_range == (0.0, R_MAX[fam.base_env.split("-v")[0]])
    cheetah = train_section("CheetahVel-v0", "alp-gmm", "train.teacher_reward_range=[-500, 0]")
    assert teacher_hook(cheetah).teacher.reward_range == (-500.0, 0.0)


def test_teacher_settings_come_from_the_config_and_survive_the_run_folders_toml():
    settings = '{fit_every = 100, bootstrap = 100, random_share = 0.3, criterion = "bic", k_range = [2, 5]}'
    sections = resolve_config("sac", {"train": {"env": "PusherObject-v0", "teacher": "alp-gmm"}}, None,
                              [f"train.teacher_settings={settings}"])
    teacher = teacher_hook(sections["train"]).teacher
    assert teacher.hparams() == {"fit_every": 100, "bootstrap": 100, "k_range": [2, 5], "random_share": 0.3,
                                 "criterion": "bic", "alp_min_history": 6}
    again = resolve_config("sac", tomllib.loads(to_toml(sections)))  # as a resumed run reads its config.toml
    assert again["train"].teacher_settings == sections["train"].teacher_settings


@pytest.mark.parametrize("extra, message", [
    ({"teacher": "alp_gmm"}, r"train.teacher='alp_gmm': must be one of .* \(did you mean 'alp-gmm'\?\)"),
    ({"teacher": "alp-gmm", "teacher_settings": {"fit_evry": 100}},
     r"train.teacher_settings.fit_evry=100: not a setting of the alp-gmm teacher \(did you mean fit_every\?\)"),
    ({"teacher": "riac", "teacher_settings": {"shares": "a lot"}}, "train.teacher_settings.shares='a': must be a num"),
    ({"teacher": "", "teacher_settings": {"fit_every": 100}}, "train.teacher_settings=.*set only with a teacher"),
    ({"teacher": "random", "teacher_settings": "fit_every"}, "train.teacher_settings='fit_every': must be a table"),
    ({"teacher": "alp-gmm", "teacher_reward_range": [1.0, 0.0]}, r"train.teacher_reward_range=\(1.0, 0.0\).*low < h"),
    ({"teacher": "alp-gmm", "teacher_reward_range": [1.0]}, "train.teacher_reward_range=.*must be \\[low, high\\]"),
    ({"teacher": "dr", "teacher_reward_range": [0, 1]}, "train.teacher_reward_range=.*maze teachers score success"),
])
def test_bad_teacher_settings_and_reward_ranges_are_config_errors(extra, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("sac", {"train": {"env": "HopperPhysics-v0", **extra}}, None, [])


def test_a_setting_the_teacher_refuses_fails_before_the_run_folder(tmp_path):
    sections = resolve_config("sac", {"train": {"env": "HopperPhysics-v0", "teacher": "alp-gmm",
                                                "teacher_settings": {"random_share": 1.5}}}, None, [])
    with pytest.raises(ConfigError, match=r"train.teacher_settings: random_share must be in \[0, 1\], got 1.5"):
        train("sac", sections, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_teacher_rvae_that_is_not_a_checkpoint_is_one_clear_line_from_the_cli(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"a")  # torch's unpickler raised a bare IndexError on this
    code = cli_main(["train", "sac", "--env", "PointMazeLayout-v0", "--teacher", "clutr", "--set",
                     f"train.teacher_rvae={notes}", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    expected = (f"error: train.teacher_rvae: {notes} is not an RVAE checkpoint written by "
                "cadence.curricula.save_rvae: reading it failed with IndexError")
    assert code == 2 and "Traceback" not in err
    assert "".join(expected.split()) in "".join(err.split())  # the console may wrap the line to its width
    assert not (tmp_path / "run").exists()
