import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from cadence.envs import GYMNASIUM_IDS, make, run_episodes
from cadence.envs.terminations import termination_fn


@pytest.mark.parametrize("sequence", [False, True])
def test_env_checker_passes(sequence):
    env = make("Hopper-v5", decision_interval=3, sequence=sequence)
    check_env(env, skip_render_check=True)


def test_all_registered_envs_make():
    for env_id in GYMNASIUM_IDS:
        env = make(env_id, decision_interval=2)
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs.astype(env.observation_space.dtype))
        env.close()


def test_repeat_mode_sums_rewards_and_matches_primitive_stepping():
    J = 4
    env = make("Hopper-v5", decision_interval=J)
    plain = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=3)
    plain_obs, _ = plain.reset(seed=3)
    np.testing.assert_array_equal(obs, plain_obs)
    action = np.array([0.3, -0.2, 0.1], dtype=np.float32)
    next_obs, reward, terminated, truncated, info = env.step(action)
    expected_rewards = []
    for _ in range(J):
        plain_obs, r, *_ = plain.step(action)
        expected_rewards.append(r)
    prim = info["primitive"]
    assert reward == pytest.approx(sum(expected_rewards))
    np.testing.assert_allclose(prim["reward"], expected_rewards)
    np.testing.assert_array_equal(next_obs, plain_obs)
    assert prim["obs"].shape == (J, 11) and prim["action"].shape == (J, 3)
    np.testing.assert_array_equal(prim["obs"][0], obs)
    np.testing.assert_array_equal(prim["obs"][1:], prim["next_obs"][:-1])  # transitions chain
    np.testing.assert_array_equal(prim["next_obs"][-1], next_obs)
    np.testing.assert_array_equal(prim["action"], np.tile(action, (J, 1)))
    assert info["primitive_steps"] == J


def test_sequence_mode_runs_actions_open_loop():
    J = 3
    env = make("Reacher-v5", decision_interval=J, sequence=True)
    assert env.action_space.shape == (J * 2,)
    env.reset(seed=0)
    actions = np.array([[0.1, 0.2], [-0.3, 0.4], [0.5, -0.6]], dtype=np.float32)
    _, reward, _, _, info = env.step(actions.reshape(-1))
    np.testing.assert_array_equal(info["primitive"]["action"], actions)
    assert reward == pytest.approx(info["primitive"]["reward"].sum())


def test_termination_mid_sequence_ends_the_decision():
    J = 200
    env = make("InvertedPendulum-v5", decision_interval=J, sequence=True)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.full(J, 3.0, dtype=np.float32))
    k = info["primitive_steps"]
    assert terminated and not truncated
    assert 0 < k < J  # ended early, after at least one step
    assert info["primitive"]["terminated"].tolist() == [False] * (k - 1) + [True]
    assert reward == pytest.approx(info["primitive"]["reward"].sum())
    assert reward == pytest.approx(k - 1)  # v5: no reward on the terminal step


def test_unknown_env_lists_close_matches():
    with pytest.raises(ValueError, match="Hopper-v5"):
        make("Hoper-v5")


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_bad_decision_interval(bad):
    with pytest.raises(ValueError, match="decision_interval"):
        make("Hopper-v5", decision_interval=bad)


def test_wrong_action_lengths():
    env = make("Hopper-v5", decision_interval=2, sequence=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="2 x 3 = 6"):
        env.step(np.zeros(3, dtype=np.float32))
    env = make("Hopper-v5", decision_interval=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        env.step(np.zeros(6, dtype=np.float32))


def test_task_params_rejected_for_plain_env():
    with pytest.raises(ValueError, match="no task parameters"):
        make("Hopper-v5", task={"mass": 2.0})


def test_run_episodes_is_seeded():
    env = make("InvertedPendulum-v5", decision_interval=2)
    policy = lambda obs: np.clip(obs[1:2] * 5.0, -3, 3).astype(np.float32)
    r1, l1 = run_episodes(env, policy, 3, seed=7)
    r2, l2 = run_episodes(env, policy, 3, seed=7)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(l1, l2)
    assert (l1 >= 1).all()


@pytest.mark.parametrize("env_id", GYMNASIUM_IDS)
def test_episode_state_round_trip_continues_exactly(env_id):
    from cadence.envs import episode_state, set_episode_state

    env = make(env_id, decision_interval=2)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(7):
        env.step(env.action_space.sample())
    saved = episode_state(env)
    actions = [env.action_space.sample() for _ in range(15)]
    expected = [env.step(a) for a in actions]
    other = make(env_id, decision_interval=2)
    other.reset(seed=123)
    set_episode_state(other, saved)
    for a, (obs, reward, terminated, truncated, _) in zip(actions, expected):
        got = other.step(a)
        np.testing.assert_array_equal(got[0], obs)
        assert (got[1], got[2], got[3]) == (reward, terminated, truncated)
    assert other.unwrapped.np_random.bit_generator.state == env.unwrapped.np_random.bit_generator.state
    if "physics" in saved:
        with pytest.raises(ValueError, match="physics state"):
            set_episode_state(make("Ant-v5" if env_id != "Ant-v5" else "Hopper-v5"), saved)


@pytest.mark.parametrize(("env_id", "kwargs"), [
    ("Hopper-v5", {"healthy_z_range": (1.2, float("inf")), "healthy_angle_range": (-0.1, 0.1)}),
    ("Hopper-v5", {"healthy_state_range": (-0.5, 0.5), "exclude_current_positions_from_observation": False}),
    ("Hopper-v5", {"terminate_when_unhealthy": False}),
    ("Walker2d-v5", {"healthy_z_range": (1.15, 1.5), "healthy_angle_range": (-0.3, 0.3)}),
    ("Ant-v5", {"healthy_z_range": (0.5, 0.8)}),
    ("Humanoid-v5", {"healthy_z_range": (1.3, 2.0)}),
    ("InvertedDoublePendulum-v5", {}),
])
def test_terminations_read_the_envs_ranges(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    fn = termination_fn(env_id, env)
    env.reset(seed=0)
    env.action_space.seed(0)
    flags, ours, seed = [], [], 0
    for _ in range(300):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        flags.append(terminated)
        ours.append(bool(fn(torch.as_tensor(obs, dtype=torch.float32))))
        if terminated or truncated:
            seed += 1
            env.reset(seed=seed)
    assert ours == flags
    assert any(flags) != ("terminate_when_unhealthy" in kwargs)  # terminal states were compared
