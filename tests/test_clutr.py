"""CLUTR: maze layouts and their tokens, the recurrent VAE, the latent regret teacher and the maze envs."""

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

SHAPE = (6, 6)
OBSTACLES = (0, 3)
#: tiny sizes (DESIGN's are 600 / 64 / 800x2): ~6 s of training on one CPU thread
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
def test_teacher_samples_inside_the_latent_box(rvae):
    teacher = CLUTRTeacher(rvae, seed=0, init_std=3.0)
    assert teacher.dim == SMALL["latent_dim"] and (teacher.low == -4).all() and (teacher.high == 4).all()
    z = np.array([teacher.sample() for _ in range(300)])
    assert (z >= -4).all() and (z <= 4).all() and (np.abs(z) == 4).any()  # wide std: some clipped to the box
    assert isinstance(teacher.decode(z[0]), MazeLayout)
    assert teacher.decode(z[0]) == rvae.decode_layouts(z[0])[0]


def test_regret_estimate_is_best_earlier_return_minus_this_one(rvae):
    teacher = CLUTRTeacher(rvae, seed=0, reward_range=(0.0, 2.0))
    z = teacher.sample()
    teacher.update(z, 1.6)  # first visit: no reference, no regret
    teacher.update(z, 0.4)  # 0.8 - 0.2 on the normalised scale
    teacher.update(z, 2.0)
    assert teacher.regrets.tolist() == pytest.approx([0.0, 0.6, 0.0])
    layout = teacher.decode(z)
    assert teacher.estimate_regret(layout, 0.0) == pytest.approx(1.0)
    # a layout one cell away borrows the best return; one far away has no reference
    moved = [c for c in range(layout.n_cells) if c not in (*layout.obstacles, layout.goal, layout.agent)][0]
    near = MazeLayout(layout.shape, tuple(sorted((*layout.obstacles, moved))), layout.goal, layout.agent)
    assert teacher.estimate_regret(near, 1.0) == pytest.approx(0.5)
    far = MazeLayout(layout.shape, (), *[c for c in range(layout.n_cells) if c not in (layout.goal, layout.agent)][:2])
    assert teacher.estimate_regret(far, 0.0) == 0.0


def test_teacher_moves_toward_high_regret_latents(rvae):
    teacher = CLUTRTeacher(rvae, seed=1, population=32)
    target = np.zeros(teacher.dim)
    target[:4], target[4:8] = 2.0, -2.0  # |target| = 5.7, where a layout's code might lie
    distance = lambda: np.median(np.linalg.norm(np.array([teacher.sample() for _ in range(200)]) - target, axis=1))
    start = distance()
    for _ in range(12 * 32):  # a constructed regret signal: higher nearer the target
        z = teacher.sample()
        teacher.update(z, 0.0, regret=float(np.exp(-np.linalg.norm(z - target) / 5)))
    assert teacher.generations == 12
    # measured on seeds 0-3: samples 8.0 -> 3.5-4.0 from the target, the search mean 5.7 -> 2.0-2.8
    assert distance() < 0.6 * start
    assert np.linalg.norm(teacher.mean - target) < 0.6 * np.linalg.norm(target)
    m = teacher.metrics()
    assert m["episodes"] == 12 * 32 and m["regret_mean"] > 0 and 0 <= m["solvable"] <= 1


def test_teacher_state_round_trip_gives_the_same_next_samples(rvae):
    def feed(t, n):
        for i in range(n):
            z = t.sample()
            t.update(z, float(i % 3))  # repeats make nonzero regrets on seen layouts

    teacher = CLUTRTeacher(rvae, seed=5, population=8, neighbour_radius=3)
    feed(teacher, 45)
    restored = CLUTRTeacher(rvae, seed=99, population=8, neighbour_radius=3)
    restored.load_state_dict(roundtrip(teacher.state_dict()))
    assert restored.metrics() == teacher.metrics()
    for i in range(20):
        a, b = teacher.sample(), restored.sample()
        np.testing.assert_array_equal(a, b)
        teacher.update(a, float(i % 2))
        restored.update(b, float(i % 2))
    np.testing.assert_array_equal(teacher.regrets, restored.regrets)
    np.testing.assert_array_equal(teacher.mean, restored.mean)
    with pytest.raises(ValueError, match="population"):
        CLUTRTeacher(rvae, population=9, neighbour_radius=3).load_state_dict(teacher.state_dict())
    other = LayoutRVAE(SHAPE, max_obstacles=OBSTACLES[1], **SMALL)  # untrained: another decoder
    with pytest.raises(ValueError, match="rvae"):
        CLUTRTeacher(other, population=8, neighbour_radius=3).load_state_dict(teacher.state_dict())


def test_make_clutr_teacher_and_bad_settings(rvae):
    teacher = make_clutr_teacher(rvae, seed=2, population=4)
    assert isinstance(teacher, CLUTRTeacher) and teacher.population == 4
    with pytest.raises(ValueError, match="population"):
        CLUTRTeacher(rvae, population=1)
    with pytest.raises(ValueError, match="finite"):
        teacher.update(teacher.sample(), 0.0, regret=float("nan"))
    with pytest.raises(ValueError, match="outside"):
        teacher.update(np.full(teacher.dim, 5.0), 0.0)


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
