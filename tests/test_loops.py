"""The loops layer: hooks at named events, the per-episode task hook on both collection paths, exact resume of
hook state, hook failures, and the checkpoint bundle's layout and safety."""

import os
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from cadence.agents import SAC, SACConfig
from cadence.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from cadence.config import ConfigError
from cadence.envs import DecisionIntervalWrapper, make
from cadence.envs.batched import BatchedEnv
from cadence.envs.tasks import TaskFamily, TaskWrapper
from cadence.loops import Hook, HookError, RunInterrupted, TrainConfig, train_online
from cadence.runs import resolve_config, train
from cadence.seeding import seed_everything


def set_gravity(model, params):
    model.opt.gravity[2] = -float(params[0])


GRAVITY = TaskFamily("PendulumGravity", "InvertedPendulum-v5", spaces.Box(1.0, 20.0, (1,), np.float64), set_gravity)
LOOP = dict(total_steps=300, eval_every=150, eval_episodes=1, checkpoint_every=50, log_every=50, torch_threads=1,
            progress=False, seed=2)


class Interrupt(BaseException):
    """Stands in for a process killed mid-run."""


class RandomGravity(Hook):
    """A hook with state: draws each episode's gravity from its own generator and remembers every task."""

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.history: list[float] = []
        self.seen: list[tuple[float, float]] = []  # (task, gravity the physics used), at each episode end

    def on_episode_start(self, ctx, world):
        task = float(self.rng.uniform(2.0, 18.0))
        self.history.append(task)
        return np.array([task])

    def on_episode_end(self, ctx, world, episode_return, task):
        env = ctx.env
        model = env.backend.models[world] if isinstance(env, BatchedEnv) else env.unwrapped.model
        self.seen.append((float(task[0]), -float(model.opt.gravity[2])))

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "history": list(self.history)}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.history = list(state["history"])


def make_run(batched: bool):
    seed_everything(0)
    eval_env = make("InvertedPendulum-v5")
    agent = SAC(eval_env.observation_space, eval_env.action_space,
                SACConfig(hidden_sizes=(16, 16), batch_size=16, learning_starts=100, buffer_size=2000))
    if batched:
        env = BatchedEnv("InvertedPendulum-v5", 3, family=GRAVITY, autoreset=False, threads=1)
    else:
        env = DecisionIntervalWrapper(TaskWrapper(gym.make("InvertedPendulum-v5"), GRAVITY))
    return agent, env, eval_env


@pytest.mark.parametrize("batched", [False, True])
def test_task_hook_sets_each_episodes_task_on_both_paths(tmp_path, batched):
    hook = RandomGravity()
    agent, env, eval_env = make_run(batched)
    state = train_online(agent, env, eval_env, TrainConfig(**LOOP), tmp_path, hooks=[hook])
    assert state.episodes == len(hook.seen) > 5
    # every ended episode ran under the task its start chose, in the physics itself
    for task, gravity in hook.seen:
        assert gravity == pytest.approx(task)
    assert len({t for t, _ in hook.seen}) == len(hook.seen)  # a new task each episode
    # episodes still open at the end were started too: one task per episode start
    assert len(hook.history) == state.episodes + (3 if batched else 1)


@pytest.mark.parametrize("batched", [False, True])
def test_killed_run_resumes_with_the_same_task_sequence(tmp_path, batched):
    agent, env, eval_env = make_run(batched)
    full_hook = RandomGravity()
    full = train_online(agent, env, eval_env, TrainConfig(**LOOP), tmp_path / "full", hooks=[full_hook])

    def kill_at_220(state):
        if state.step >= 220:
            raise Interrupt

    agent, env, eval_env = make_run(batched)
    with pytest.raises(Interrupt):
        train_online(agent, env, eval_env, TrainConfig(**LOOP), tmp_path / "cut", hooks=[RandomGravity()],
                     callbacks=[kill_at_220])
    saved = load_checkpoint(tmp_path / "cut")
    assert 50 <= saved["counters"]["step"] < 220 and saved["hooks"]["RandomGravity"]["history"]
    agent, env, eval_env = make_run(batched)
    resumed = train_online(agent, env, eval_env, TrainConfig(**LOOP), tmp_path / "cut", hooks=[RandomGravity()],
                           resume=True)
    assert (resumed.step, resumed.episodes, resumed.evals) == (full.step, full.episodes, full.evals)
    final = load_checkpoint(tmp_path / "cut")["hooks"]["RandomGravity"]["history"]
    assert final == full_hook.history  # the same tasks, in the same order, as the uninterrupted run


class FailsAtThirdEpisode(Hook):
    def __init__(self):
        self.ended = 0

    def on_episode_end(self, ctx, world, episode_return, task):
        self.ended += 1
        if self.ended == 3:
            raise KeyError("no teacher state")


def tiny_sac(total=400, checkpoint_every=20):
    return resolve_config("sac", {"train": {"env": "InvertedPendulum-v5", "seed": 3, "total_steps": total}}, None,
                          ["agent.hidden_sizes=[16, 16]", "agent.batch_size=16", "agent.learning_starts=50",
                           "train.eval_every=100", "train.eval_episodes=1", "train.torch_threads=1",
                           f"train.checkpoint_every={checkpoint_every}", "train.progress=false"])


def test_a_hook_that_raises_stops_the_run_naming_it_and_keeps_the_checkpoint(tmp_path):
    class Checkpointed(Hook):
        def on_episode_end(self, ctx, world, episode_return, task):
            if ctx.state.episodes == 6:
                self.kept = checkpoint_path(ctx.run_dir).read_bytes()
            if ctx.state.episodes == 7:
                raise KeyError("no teacher state")

    hook = Checkpointed()
    with pytest.raises(HookError, match=r"hook Checkpointed failed in on_episode_end at step \d+, episode 7 "
                                        r"of world 0: KeyError") as err:
        train("sac", tiny_sac(), tmp_path / "run", hooks=[hook])
    assert isinstance(err.value.__cause__, KeyError)
    assert checkpoint_path(tmp_path / "run").read_bytes() == hook.kept  # nothing written after the failure


def test_a_task_the_env_rejects_names_the_hook(tmp_path):
    class TooHeavy(Hook):
        def on_episode_start(self, ctx, world):
            return np.array([50.0])  # outside GRAVITY's [1, 20]

    agent, env, eval_env = make_run(False)
    rejected = r"rejected the task that hook TooHeavy chose for episode 1 .*outside its range"
    with pytest.raises(HookError, match=rejected):
        train_online(agent, env, eval_env, TrainConfig(**LOOP), tmp_path / "a", hooks=[TooHeavy()])
    agent, env, eval_env = make_run(True)
    with pytest.raises(HookError, match="hook TooHeavy"):
        train_online(agent, env, eval_env, TrainConfig(**LOOP), tmp_path / "b", hooks=[TooHeavy()])

    class AnyTask(Hook):
        def on_episode_start(self, ctx, world):
            return np.array([9.81])

    # a plain env has no tasks: it refuses rather than ignoring one
    with pytest.raises(HookError, match="hook AnyTask .*InvertedPendulum-v5 takes no task parameters"):
        train("sac", tiny_sac(), tmp_path / "plain", hooks=[AnyTask()])


def test_hook_names_must_be_unique(tmp_path):
    with pytest.raises(ValueError, match="repeated: RandomGravity"):
        train("sac", tiny_sac(), tmp_path / "dup", hooks=[RandomGravity(), RandomGravity()])


def test_checkpoint_of_another_layout_is_refused_naming_both_versions(tmp_path):
    # a layout-1 bundle (cadence before the loops layer): loop-specific keys and pickled NumPy arrays
    path = checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"algo": "sac", "train_state": {"step": 5}, "episode_returns": np.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="layout version 1.*reads layout version 2"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, {"algo": "sac", "layout": 3})
    with pytest.raises(CheckpointError, match="has layout version 3; this cadence reads layout version 2"):
        load_checkpoint(tmp_path)
    # a bundle with numpy-free contents but the old keys is still named as layout 1
    torch.save({"algo": "sac", "train_state": {"step": 5}}, path)
    with pytest.raises(CheckpointError, match="has layout version 1"):
        load_checkpoint(tmp_path)


class RunsCode:
    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_checkpoint_with_pickled_objects_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "executed"
    payload = RunsCode()
    payload.marker = marker
    path = checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"algo": "sac", "agent": payload}, path)
    with pytest.raises(CheckpointError, match=r"holds pickled objects \(.*system.*\).*refuses them"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_checkpoint_round_trips_numpy_generator_and_physics_states(tmp_path):
    rng = np.random.default_rng(3)
    rng.random(5)
    bundle = {"algo": "sac", "rng": {"numpy": np.random.get_state(), "gen": rng.bit_generator.state},
              "physics": np.linspace(0, 1, 7), "flags": np.array([True, False]), "count": np.int64(4)}
    save_checkpoint(tmp_path, bundle)
    back = load_checkpoint(tmp_path)
    np.testing.assert_array_equal(back["physics"], bundle["physics"])
    assert back["flags"].dtype == bool and back["count"] == 4 and isinstance(back["count"], int)
    restored = np.random.default_rng()
    restored.bit_generator.state = back["rng"]["gen"]
    assert restored.random() == rng.random()
    np.random.set_state(back["rng"]["numpy"])


@pytest.fixture
def interactive_signals():
    """SIGINT and SIGTERM as in an interactive shell (a background CI job inherits SIGINT ignored, and the loop
    leaves an ignored signal alone), restored afterwards."""
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    before = {s: signal.signal(s, h) for s, h in defaults.items()}
    yield defaults
    for s, h in before.items():
        signal.signal(s, h)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_the_step_and_the_run_resumes_exactly(tmp_path, signum, interactive_signals):
    full = train("sac", tiny_sac(), tmp_path / "full")

    def signal_at_230(state):
        if state.step == 230:
            os.kill(os.getpid(), signum)

    with pytest.raises(RunInterrupted, match=rf"{signal.Signals(signum).name} at step 230: checkpoint written"):
        train("sac", tiny_sac(), tmp_path / "cut", callbacks=[signal_at_230])
    assert load_checkpoint(tmp_path / "cut")["counters"]["step"] == 230  # mid-episode, not the last periodic one
    assert signal.getsignal(signum) is interactive_signals[signum]  # the handler is put back
    resumed = train("sac", tiny_sac(), tmp_path / "cut", resume=True)
    assert (resumed.step, resumed.episodes, resumed.evals) == (full.step, full.episodes, full.evals)
    a, b = load_checkpoint(tmp_path / "full")["agent"]["actor"], load_checkpoint(tmp_path / "cut")["agent"]["actor"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_ignored_signal_stays_ignored(tmp_path, interactive_signals):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup
    seen = []

    def sigint_at_100(state):
        if state.step == 100:
            os.kill(os.getpid(), signal.SIGINT)
        seen.append(signal.getsignal(signal.SIGINT))

    assert train("sac", tiny_sac(200), tmp_path / "bg", callbacks=[sigint_at_100]).step == 200
    assert set(seen) == {signal.SIG_IGN}


def test_a_folder_with_a_dead_runs_events_is_refused(tmp_path):
    def die(state):
        if state.step == 30:  # killed before its first checkpoint (due at step 1000)
            raise Interrupt

    run = tmp_path / "dead"
    with pytest.raises(Interrupt):
        train("sac", tiny_sac(checkpoint_every=1000), run, callbacks=[die])
    assert not checkpoint_path(run).exists() and list(run.glob("events.out.tfevents.*"))
    with pytest.raises(ConfigError, match="holds TensorBoard events of an earlier run"):
        train("sac", tiny_sac(), run)
