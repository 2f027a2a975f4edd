"""A curriculum teacher inside the training loop: tasks reach the physics, resume continues the curriculum."""

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cadence.checkpoint import load_checkpoint
from cadence.cli import main as cli_main
from cadence.config import ConfigError
from cadence.curricula import make_teacher
from cadence.envs.tasks import family
from cadence.loops import HookError
from cadence.loops.curriculum import TeacherHook
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
