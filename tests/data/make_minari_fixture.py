"""Write tests/data/minari/pendulum-random-v0 with Minari's own DataCollector (run once; the result is committed).

DataCollector needs jax (``pip install "minari[create]"``), which cadence does not depend on, so the
fixture is generated here once rather than in the test suite:

    python -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install "minari[hdf5,create]==0.5.4" "gymnasium[mujoco]"
    MINARI_DATASETS_PATH=$PWD/tests/data/minari /tmp/jaxenv/bin/python tests/data/make_minari_fixture.py
"""

import gymnasium as gym
from minari import DataCollector

env = DataCollector(gym.make("Pendulum-v1", max_episode_steps=20), record_infos=False)
env.action_space.seed(0)
for episode in range(3):
    env.reset(seed=episode)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
env.create_dataset("pendulum-random-v0", algorithm_name="uniform random", author="cadence tests",
                   description="3 episodes of 20 steps of Pendulum-v1 under uniform random actions")
