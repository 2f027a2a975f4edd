import copy

import numpy as np
import pytest

from cadence.evaluation import ASL_GRID, check_asl_grid, env_family, fas_sweep, frequency_averaged_score
from cadence.evaluation.fas import fas_sweep_batched


def test_asl_grid_is_the_papers():
    assert ASL_GRID == (1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)


def test_fas_hand_computed():
    # trapezoid: (10+20)/2*1 + (20+30)/2*2 = 65; normalised by r_max * max ASL = 100 * 4
    assert frequency_averaged_score([1, 2, 4], [10, 20, 30], r_max=100) == pytest.approx(0.1625)
    # a shift is added to every return first: (15+25)/2 + (25+35) = 80 -> 80 / 400
    assert frequency_averaged_score([1, 2, 4], [10, 20, 30], r_max=100, shift=5) == pytest.approx(0.2)


def test_fas_of_a_constant_return_on_the_paper_grid():
    # a flat return R over ASL 1..30 integrates to 29 R, normalised by 30 R_max
    assert frequency_averaged_score(ASL_GRID, [1000.0] * 16, r_max=1000) == pytest.approx(29 / 30)


@pytest.mark.parametrize("grid", [[], [1, 1, 2], [4, 2], [0, 1], [1.5, 2]])
def test_bad_asl_grids(grid):
    with pytest.raises(ValueError, match="ASL"):
        check_asl_grid(grid)


def test_family_names():
    assert env_family("InvertedDoublePendulum-v5") == "InvertedDoublePendulum"
    assert env_family("Hopper-v5") == "Hopper"


def test_sweep_uses_same_initial_states_and_reacher_shift():
    seen = []

    def policy(obs, length):
        seen.append(obs.copy())
        return np.zeros((length, 2), dtype=np.float32)

    result = fas_sweep("Reacher-v5", policy, asl_grid=(1, 5), episodes=2, seed=11)
    assert result.shift == 65.0 and result.r_max == 60
    assert np.asarray(result.returns).shape == (2, 2)
    first_obs_per_episode = [seen[0], seen[50]]  # Reacher lasts 50 steps; ASL 1 decides 50 times
    asl5_starts = seen[100], seen[110]
    np.testing.assert_array_equal(first_obs_per_episode[0], asl5_starts[0])
    np.testing.assert_array_equal(first_obs_per_episode[1], asl5_starts[1])
    expected = frequency_averaged_score((1, 5), result.mean, 60, 65)
    assert result.fas == pytest.approx(expected)


def test_sweep_needs_r_max_for_unknown_family():
    with pytest.raises(ValueError, match="no R_max"):
        fas_sweep("Pusher-v5", lambda o, n: np.zeros((n, 7)), asl_grid=(1,), episodes=1)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Reacher-v5"])
def test_batched_sweep_equals_the_sequential_loop(env_id):
    # a deterministic, state-dependent policy: any difference in initial states or stepping would show
    obs_dim, act_dim = {"Hopper-v5": (11, 3), "Reacher-v5": (10, 2)}[env_id]
    weights = np.random.default_rng(0).uniform(-0.5, 0.5, (obs_dim, act_dim))

    def act_sequence(obs, length):
        action = np.tanh(np.asarray(obs) @ weights)
        return np.repeat(action[..., None, :], length, axis=-2)

    grid = (1, 2, 5, 8)
    sequential = fas_sweep(env_id, act_sequence, grid, episodes=2, seed=3)
    batched = fas_sweep_batched(env_id, act_sequence, grid, episodes=2, seed=3, threads=1)
    np.testing.assert_allclose(batched.returns, sequential.returns, rtol=1e-5, atol=1e-4)
    assert batched.fas == pytest.approx(sequential.fas, rel=1e-6)
    # called one observation at a time, the same policy gives the same sweep
    single = fas_sweep_batched(env_id, act_sequence, grid, episodes=2, seed=3, batch_policy=False, threads=1)
    np.testing.assert_allclose(single.returns, batched.returns, rtol=1e-6)


def test_task_returns_evaluates_every_task_variant_in_one_batch():
    import gymnasium as gym

    from cadence.envs.batched.episodes import task_returns

    base = gym.make("Hopper-v5").unwrapped.model
    heavy = copy.deepcopy(base)
    heavy.body_mass[:] *= 3.0

    def act_sequence(obs, length):  # the same deterministic policy on every task
        return np.repeat(np.tanh(np.asarray(obs)[..., :3])[..., None, :], length, axis=-2)

    returns = task_returns("Hopper-v5", act_sequence, [base, heavy, base], episodes=2, seed=4, threads=1)
    assert returns.shape == (3, 2)
    np.testing.assert_array_equal(returns[0], returns[2])  # same task, same seeds: same returns
    assert not np.allclose(returns[0], returns[1])  # a heavier body changes the outcome
    expected = fas_sweep("Hopper-v5", act_sequence, (1,), episodes=2, seed=4).returns[0]
    np.testing.assert_allclose(returns[0], expected, rtol=1e-5)  # the base task equals Gymnasium's episodes
