"""Collecting a data set with batched worlds (cadence collect --worlds N)."""

import numpy as np
import pytest

from cadence.envs.registry import spec
from cadence.replay.collect_batched import collect_batched, uniform_batch_policy


def check_episodes(data, n):
    assert len(data) == n
    ends = data.terminals | data.timeouts
    assert ends[-1]
    # inside an episode, each row continues the one before
    within = ~ends[:-1]
    np.testing.assert_array_equal(data.next_observations[:-1][within], data.observations[1:][within])


@pytest.mark.parametrize("worlds", [1, 4])
def test_batched_collection_stores_whole_episodes_exactly(worlds):
    import gymnasium as gym

    space = gym.make("Hopper-v5").action_space
    data = collect_batched("Hopper-v5", uniform_batch_policy(space, 0), 403, seed=7, worlds=worlds)
    check_episodes(data, 403)
    assert data.terminals.sum() >= 5  # random Hopper falls within ~20-60 steps: many episodes
    again = collect_batched("Hopper-v5", uniform_batch_policy(space, 0), 403, seed=7, worlds=worlds)
    np.testing.assert_array_equal(data.observations, again.observations)


def test_batched_collection_cuts_episodes_at_the_time_limit():
    import gymnasium as gym

    space = gym.make("Reacher-v5").action_space
    data = collect_batched("Reacher-v5", uniform_batch_policy(space, 1), 130, seed=0, worlds=2)
    check_episodes(data, 130)
    limit = spec("Reacher-v5").max_episode_steps
    assert data.timeouts.sum() >= 2 and not data.terminals.any()
    assert np.flatnonzero(data.timeouts)[0] == limit - 1  # the first world's first episode, whole
