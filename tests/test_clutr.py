"""CLUTR: maze layouts and their tokens, the recurrent VAE, the PPO teacher over latents, the regrets it learns
from, and the maze envs."""

import importlib.util

import numpy as np
import pytest
import torch
from conftest import roundtrip

from cadence.curricula import CLUTRTeacher, LayoutRVAE, fit_rvae, make_clutr_teacher, token_accuracy
from cadence.envs.mazes import (
    END,
    GO,
    PAD,
    LayoutCodec,
    MazeLayout,
    is_solvable,
    maze_env,
    random_layouts,
    shortest_path,
)
from cadence.loops.curriculum import discounted_return, last_episode, max_mc, paired_regret, positive_value_loss
from cadence.replay import ReplayBuffer

SHAPE = (6, 6)
OBSTACLES = (0, 3)
#: tiny sizes (the paper's are 600 / 64 / 800x2): ~6 s of training on one CPU thread
SMALL = {"embed_dim": 32, "encoder_hidden": 64, "latent_dim": 32, "decoder_hidden": 128, "decoder_layers": 1}
#: held-out token accuracy the small RVAE must reach after 400 steps; it measured 0.92 on seeds 0 and 1
MIN_TOKEN_ACCURACY = 0.8
HAS_ROBOTICS = importlib.util.find_spec("gymnasium_robotics") is not None


@pytest.fixture(scope="module")
def rvae() -> LayoutRVAE:
    torch.set_num_threads(1)
    model = LayoutRVAE(SHAPE, max_obstacles=OBSTACLES[1], **SMALL)
    info = fit_rvae(model, n_layouts=5000, steps=400, batch_size=128, lr=5e-3, seed=0, kl_weight=1e-3,
                    n_obstacles=OBSTACLES)
    assert info["steps"] == 400
    return model


# ------------------------------------------------------------------------------------------------ layouts, tokens
def test_tokens_round_trip_exactly():
    codec = LayoutCodec((8, 8))
    assert codec.max_obstacles == 21 and codec.seq_len == 24 and codec.vocab_size == 67
    for layout in random_layouts(200, seed=0, shape=(8, 8), n_obstacles=(0, 21)):
        tokens = codec.encode(layout)
        assert tokens.shape == (24,) and tokens.dtype == np.int64
        k = len(layout.obstacles)
        assert tokens[k + 2] == END and (tokens[k + 3:] == PAD).all()
        assert list(tokens[:k]) == sorted(tokens[:k])  # obstacles sorted, then goal, then agent
        assert codec.decode(tokens) == layout
        assert codec.decode(tokens, repair=True) == layout  # repair leaves valid sequences alone


def test_encode_refuses_what_does_not_fit():
    codec = LayoutCodec((4, 4), max_obstacles=2)
    with pytest.raises(ValueError, match="at most 2"):
        codec.encode(MazeLayout((4, 4), (1, 2, 3), 4, 5))
    with pytest.raises(ValueError, match="shape"):
        codec.encode(MazeLayout((3, 3), (), 4, 5))
    with pytest.raises(ValueError, match="obstacle"):
        MazeLayout((4, 4), (1, 4), 4, 5)


@pytest.mark.parametrize("cells, fault", [
    ([5, 5, 7, 9], "twice"),  # duplicate obstacle
    ([5, 7, 7, 9], "twice"),  # goal on an obstacle
    ([5, 9, 9], "twice"),  # agent on the goal
    ([7, 5, 8, 9], "sorted"),
    ([5, 99, 8, 9], "not cells"),  # out of range
    ([9], "goal and an agent"),
])
def test_invalid_sequences_are_refused_or_repaired_deterministically(cells, fault):
    codec = LayoutCodec((4, 4), max_obstacles=5)
    tokens = [c + 3 if c < 90 else c for c in cells] + [END]
    with pytest.raises(ValueError, match=fault):
        codec.decode(tokens)
    repaired = codec.decode(tokens, repair=True)
    assert repaired == codec.decode(tokens, repair=True)
    assert codec.decode(codec.encode(repaired)) == repaired  # a valid layout


def test_repair_rules():
    codec = LayoutCodec((3, 3), max_obstacles=6)
    c = lambda *cells: [x + 3 for x in cells]
    # goal on an obstacle: the obstacle goes; duplicates and order are fixed; tokens after END are ignored
    assert codec.decode(c(4, 2, 2, 4, 6) + [END, 7], repair=True) == MazeLayout((3, 3), (2,), 4, 6)
    # agent on the goal: the agent moves to the lowest free cell
    assert codec.decode(c(0, 5, 5), repair=True) == MazeLayout((3, 3), (0,), 5, 1)
    # nothing usable (special and out-of-range tokens only): goal and agent on the two lowest cells
    assert codec.decode([GO, PAD, 77], repair=True) == MazeLayout((3, 3), (), 0, 1)
    # no END: read to the length cap
    assert codec.decode(c(1, 2), repair=True) == MazeLayout((3, 3), (), 1, 2)


def test_shortest_path_and_solvability():
    # . . #      agent at 0, goal at 8; the wall column 2 is open at row 2 only
    # . # #
    # . . .
    open_path = MazeLayout((3, 3), (2, 4, 5), 8, 0)
    assert shortest_path(open_path) == 4 and is_solvable(open_path)
    walled = MazeLayout((3, 3), (2, 4, 5, 7), 8, 0)
    assert shortest_path(walled) is None and not is_solvable(walled)
    assert shortest_path(MazeLayout((1, 2), (), 1, 0)) == 1
    assert shortest_path(MazeLayout((8, 8), (), 63, 0)) == 14


def test_random_layouts_are_seeded_and_respect_the_range():
    a = random_layouts(50, seed=3, shape=(5, 7), n_obstacles=(2, 4))
    assert a == random_layouts(50, seed=3, shape=(5, 7), n_obstacles=(2, 4))
    assert {len(x.obstacles) for x in a} == {2, 3, 4}
    with pytest.raises(ValueError, match="n_obstacles"):
        random_layouts(1, seed=0, shape=(2, 2), n_obstacles=(0, 3))


def test_maze_map_marks_walls_goal_and_start():
    layout = MazeLayout((2, 3), (1,), 5, 0)
    assert layout.maze_map() == [[1, 1, 1, 1, 1], [1, "r", 1, 0, 1], [1, 0, 0, "g", 1], [1, 1, 1, 1, 1]]


def test_grid_maze_env_reaches_the_goal_along_the_shortest_path():
    layout = MazeLayout((3, 3), (2, 4, 5), 8, 0)
    env = maze_env(layout, continuous=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 3, 3) and obs[2, 0, 0] == 1 and obs[1, 2, 2] == 1
    for action in (2, 2, 1, 1):  # down, down, right, right
        obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated and info["success"] and reward == pytest.approx(1 - 0.9 * 4 / 36)
    env.reset()
    env.step(1)  # right, to the free cell 1
    _, reward, terminated, _, _ = env.step(0)  # up: the outer wall, so the agent stays
    assert not terminated and reward == 0 and env.unwrapped._pos == 1


# ---------------------------------------------------------------------------------------------------------- RVAE
def test_rvae_reconstructs_held_out_layouts(rvae):
    held_out = random_layouts(200, seed=12345, shape=SHAPE, n_obstacles=OBSTACLES)
    assert token_accuracy(rvae, held_out) >= MIN_TOKEN_ACCURACY
    assert not any(p.requires_grad for p in rvae.parameters())  # frozen after fitting


def test_rvae_latents_and_decodings(rvae):
    z = rvae.embed_layouts(random_layouts(20, seed=7, shape=SHAPE, n_obstacles=OBSTACLES))
    assert z.shape == (20, SMALL["latent_dim"]) and z.abs().max() <= 4.0
    z = torch.empty(16, SMALL["latent_dim"]).uniform_(-4, 4, generator=torch.Generator().manual_seed(0))
    tokens = rvae.generate(z)
    assert tokens.shape == (16, rvae.codec.seq_len)
    assert not ((tokens == GO).any() or (tokens[:, 0] == PAD).any())
    assert all(isinstance(x, MazeLayout) for x in rvae.decode_layouts(np.zeros(SMALL["latent_dim"])))


def test_rvae_state_round_trip_gives_identical_decodings(rvae):
    copy = LayoutRVAE(SHAPE, max_obstacles=OBSTACLES[1], **SMALL)
    copy.load_state_dict(roundtrip(rvae.state_dict()))
    z = torch.empty(32, SMALL["latent_dim"]).uniform_(-4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(copy.generate(z), rvae.generate(z))
    assert copy.decode_layouts(z) == rvae.decode_layouts(z)


# ------------------------------------------------------------------------------------------------------- teacher
def feed(teacher, n, regret=lambda z: float(np.tanh(z[0]))):
    """``n`` episodes of ``teacher``'s own proposals, with a regret that is a function of the latent."""
    for _ in range(n):
        z = teacher.sample()
        teacher.update(z, 0.0, regret=regret(z))


def test_teacher_samples_inside_the_latent_box_centred_at_first(rvae):
    teacher = CLUTRTeacher(rvae, seed=0)
    assert teacher.dim == SMALL["latent_dim"] and (teacher.low == -4).all() and (teacher.high == 4).all()
    z = np.array([teacher.sample() for _ in range(300)])
    assert (z > -4).all() and (z < 4).all()
    # every dimension starts at Beta(1.69, 1.69) scaled onto [-4, 4]: mean 0, std 8 * 0.239 = 1.91
    assert np.abs(z.mean(0)).max() < 0.5 and abs(z.std(0).mean() - 1.91) < 0.15
    assert teacher.metrics()["search_std"] == pytest.approx(1.91, abs=0.01)
    assert isinstance(teacher.decode(z[0]), MazeLayout)
    assert teacher.decode(z[0]) == rvae.decode_layouts(z[0])[0]


def test_latent_search_moves_toward_high_regret_latents(rvae):
    teacher = CLUTRTeacher(rvae, seed=1)  # default lr and batch size
    regret = lambda z: float(np.clip(z[:8].mean() / 4 + 0.5, 0, 1))  # a stand-in task: higher as z[:8] grows
    probe = lambda: np.array([teacher.sample()[:8].mean() for _ in range(200)]).mean()

    before, std = probe(), teacher.metrics()["search_std"]
    teacher._open.clear()  # the probe's proposals never get an episode
    feed(teacher, 20 * teacher.batch_size, regret)
    assert teacher.generations == 20 and teacher.n_episodes == 20 * 8
    # measured on seeds 0-5: the mean of z[:8] -0.1..0.06 -> 1.8-2.6, search_std 1.91 -> 1.54-1.72, the regret of
    # a batch 0.45-0.55 -> 0.92-1.0
    assert probe() > before + 1.5
    m = teacher.metrics()
    assert m["search_std"] < 0.95 * std and m["search_shift"] > 0.5
    regrets = teacher.regrets
    assert regrets[-teacher.batch_size:].mean() > regrets[:teacher.batch_size].mean() + 0.2
    assert {"policy_loss", "value_loss", "entropy"} <= set(m) and 0 <= m["solvable"] <= 1


def test_teacher_state_round_trip_gives_the_same_next_samples(rvae):
    teacher = CLUTRTeacher(rvae, seed=5, batch_size=8)
    feed(teacher, 45)  # 5 updates, 5 episodes of the sixth batch
    open_z = teacher.sample()  # proposed, episode not yet reported when the checkpoint is taken
    restored = CLUTRTeacher(rvae, seed=99, batch_size=8)
    restored.load_state_dict(roundtrip(teacher.state_dict()))
    assert restored.metrics() == teacher.metrics()
    for t in (teacher, restored):
        t.update(open_z, 0.0, regret=0.3)
        feed(t, 20)
    np.testing.assert_array_equal(teacher.regrets, restored.regrets)
    np.testing.assert_array_equal(teacher.history[0], restored.history[0])
    assert teacher.generations == restored.generations == 8
    with pytest.raises(ValueError, match="batch_size"):
        CLUTRTeacher(rvae, batch_size=9).load_state_dict(teacher.state_dict())
    with pytest.raises(ValueError, match="regret"):
        CLUTRTeacher(rvae, batch_size=8, regret="pvl").load_state_dict(teacher.state_dict())
    other = LayoutRVAE(SHAPE, max_obstacles=OBSTACLES[1], **SMALL)  # untrained: another decoder
    with pytest.raises(ValueError, match="rvae"):
        CLUTRTeacher(other, batch_size=8).load_state_dict(teacher.state_dict())


def test_make_clutr_teacher_and_bad_settings(rvae):
    teacher = make_clutr_teacher(rvae, seed=2, batch_size=4, regret="maxmc")
    assert isinstance(teacher, CLUTRTeacher) and teacher.batch_size == 4 and teacher.regret_kind == "maxmc"
    with pytest.raises(ValueError, match="regret must be one of paired, pvl, maxmc"):
        CLUTRTeacher(rvae, regret="repeats")
    with pytest.raises(ValueError, match="batch_size out of range, got 1.*clip out of range"):
        CLUTRTeacher(rvae, batch_size=1, clip=1.5)
    z = teacher.sample()
    with pytest.raises(ValueError, match="learns from regret"):
        teacher.update(z, 0.0)
    with pytest.raises(ValueError, match="finite"):
        teacher.update(z, 0.0, regret=float("nan"))
    with pytest.raises(ValueError, match="did not propose"):
        teacher.update(np.zeros(teacher.dim), 0.0, regret=0.1)
    with pytest.raises(ValueError, match="outside"):
        teacher.update(np.full(teacher.dim, 5.0), 0.0, regret=0.1)
    assert teacher.n_episodes == 0  # nothing refused was recorded
    teacher.update(z, 0.0, regret=0.1)
    with pytest.raises(ValueError, match="already heard"):
        teacher.update(z, 0.0, regret=0.1)


# -------------------------------------------------------------------------------------------------------- regret
def test_paired_regret_and_the_critic_estimates_on_hand_computed_values():
    assert paired_regret(0.7, 0.2) == pytest.approx(0.5) and paired_regret(0.2, 0.7) == 0.0
    assert discounted_return([1.0, 0.0, 2.0], 0.5) == pytest.approx(1.5)
    # delta_1 = 1 - 0.5 = 0.5, delta_0 = 0.9 * 0.5 - 0.5 = -0.05; A_1 = 0.5, A_0 = -0.05 + 0.45 * 0.5 = 0.175
    assert positive_value_loss([0.0, 1.0], [0.5, 0.5], 0.0, gamma=0.9, lam=0.5) == pytest.approx((0.175 + 0.5) / 2)
    assert positive_value_loss([0.0, 0.0], [1.0, 1.0], 0.0, gamma=0.9, lam=0.5) == 0.0  # A = -0.55, -1: none > 0
    assert positive_value_loss([0.0], [0.2], 1.0, gamma=0.9) == pytest.approx(0.7)  # truncated: bootstrap V(s_T)
    assert max_mc(1.0, 0.4) == pytest.approx(0.6) and max_mc(0.3, 0.4) == 0.0


def test_last_episode_reads_the_newest_episode_across_the_ring():
    buffer = ReplayBuffer(5, 1, 1)
    for t, start in enumerate([True, False, False, True, False, False]):  # the 6th row overwrites the 1st
        buffer.add([float(t)], [0.0], float(t), [t + 1.0], t == 5, episode_start=start)
    episode = last_episode(buffer)
    assert episode["obs"].squeeze(-1).tolist() == [3.0, 4.0, 5.0]
    assert episode["reward"].tolist() == [3.0, 4.0, 5.0] and episode["terminated"].tolist() == [False, False, True]
    assert last_episode(buffer, window=2)["obs"].squeeze(-1).tolist() == [3.0, 4.0, 5.0]  # found in the 2nd window
    with pytest.raises(ValueError, match="no episode start"):
        last_episode(ReplayBuffer(3, 1, 1))


# --------------------------------------------------------------------------------------------------------- envs
@pytest.mark.skipif(not HAS_ROBOTICS, reason="gymnasium-robotics is not installed (pip install 'cadence-rl[mazes]')")
def test_decoded_layout_builds_a_point_maze(rvae):
    teacher = CLUTRTeacher(rvae, seed=0)
    layout = teacher.decode(teacher.sample())
    env = maze_env(layout, max_episode_steps=20)
    obs, _ = env.reset(seed=0)
    maze = env.unwrapped.maze
    assert tuple(maze.cell_xy_to_rowcol(obs["achieved_goal"])) == tuple(np.add(layout.rowcol(layout.agent), 1))
    assert tuple(maze.cell_xy_to_rowcol(obs["desired_goal"])) == tuple(np.add(layout.rowcol(layout.goal), 1))
    for _ in range(20):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert truncated or terminated
    assert np.isfinite(obs["observation"]).all() and reward in (0.0, 1.0)
    env.close()


def test_missing_gymnasium_robotics_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_robotics(name, *args, **kwargs):
        if name.startswith("gymnasium_robotics"):
            raise ImportError("No module named 'gymnasium_robotics'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_robotics)
    with pytest.raises(ImportError, match=r"cadence-rl\[mazes\]"):
        maze_env(MazeLayout((2, 2), (), 0, 3))
