"""Maze layouts as a curriculum task space: PointMazeLayout-v0, its family, the dr and clutr teachers in the loop."""

import importlib.util

import numpy as np
import pytest
import torch
from conftest import roundtrip
from gymnasium import spaces
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cadence.agents import SAC, SACConfig
from cadence.checkpoint import load_checkpoint
from cadence.config import ConfigError
from cadence.curricula import (
    CLUTRTeacher,
    DomainRandomisationTeacher,
    LayoutRVAE,
    fit_rvae,
    load_rvae,
    make_layout_teacher,
    make_teacher,
    save_rvae,
)
from cadence.curricula import rvae as rvae_module
from cadence.envs.maze_tasks import (
    LAYOUT_FAMILIES,
    cell_distances,
    layout_code,
    layout_from_code,
)
from cadence.envs.mazes import MazeLayout, is_solvable
from cadence.loops.curriculum import (
    CriticRegret,
    RegretSource,
    TeacherHook,
    discounted_return,
    positive_value_loss,
    sac_values,
)
from cadence.replay import ReplayBuffer
from cadence.runs import resolve_config, train

HAS_ROBOTICS = importlib.util.find_spec("gymnasium_robotics") is not None
needs_robotics = pytest.mark.skipif(not HAS_ROBOTICS,
                                    reason="gymnasium-robotics is not installed (pip install 'cadence-rl[mazes]')")
MAZE = LAYOUT_FAMILIES["PointMazeLayout-v0"]
SMALL = {"embed_dim": 16, "encoder_hidden": 32, "latent_dim": 8, "decoder_hidden": 32, "decoder_layers": 1}


@pytest.fixture(scope="module")
def small_rvae():
    torch.set_num_threads(1)
    model = LayoutRVAE(MAZE.shape, MAZE.max_obstacles, **SMALL)
    fit_rvae(model, n_layouts=500, steps=20, batch_size=32, seed=0)
    return model


def test_layout_codes_round_trip_and_bad_codes_are_refused():
    layout = MazeLayout((3, 3), (1, 4), goal=8, agent=0)
    code = layout_code(layout)
    assert code.tolist() == [3, 1, 0, 0, 1, 0, 0, 0, 2]
    assert layout_from_code(code, (3, 3)) == layout
    with pytest.raises(ValueError, match="has 9 cells, got 4"):
        layout_from_code([0, 0, 2, 3], (3, 3))
    with pytest.raises(ValueError, match="exactly one goal"):
        layout_from_code([2, 2, 3, 0, 0, 0, 0, 0, 0], (3, 3))
    with pytest.raises(ValueError, match="must be 0 .* got \\[5\\]"):
        layout_from_code([5, 2, 3, 0, 0, 0, 0, 0, 0], (3, 3))


def test_cell_distances_follow_the_maze_not_the_crow():
    # . # G      row-major cells 0..8; the wall in column 1 forces the path round the bottom row
    # . # .
    # A . .
    layout = MazeLayout((3, 3), (1, 4), goal=2, agent=6)
    d = cell_distances(layout)
    assert d[[2, 5, 8, 7, 6, 3, 0]].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert np.isinf(d[[1, 4]]).all()  # obstacles
    assert not np.isfinite(cell_distances(MazeLayout((1, 3), (1,), goal=2, agent=0))[0])  # walled off


def test_family_test_layouts_are_solvable_fixed_and_described():
    assert MAZE.test_tasks.shape == (MAZE.n_tests, 25)
    layouts = [MAZE.layout(code) for code in MAZE.test_tasks]
    assert all(is_solvable(layout) for layout in layouts)
    assert len({tuple(c) for c in MAZE.test_tasks.tolist()}) == MAZE.n_tests
    assert all(MAZE.param_space.contains(code) for code in MAZE.test_tasks)
    features = MAZE.features(MAZE.test_tasks[0])
    assert features["obstacles"] == len(layouts[0].obstacles) and features["path_length"] >= 1


def test_domain_randomisation_samples_valid_layouts_and_round_trips():
    teacher = DomainRandomisationTeacher(MAZE.shape, MAZE.max_obstacles, seed=4)
    codes = np.array([teacher.sample() for _ in range(200)])
    layouts = [layout_from_code(c, MAZE.shape) for c in codes]  # every code is a valid layout
    counts = [len(layout.obstacles) for layout in layouts]
    assert min(counts) == 0 and max(counts) == MAZE.max_obstacles
    assert any(not is_solvable(layout) for layout in layouts)  # some are unsolvable, as in CLUTR's data
    for code in codes[:5]:
        teacher.update(code, 0.5)
    twin = DomainRandomisationTeacher(MAZE.shape, MAZE.max_obstacles, seed=0)
    twin.load_state_dict(teacher.state_dict())
    np.testing.assert_array_equal(twin.sample(), teacher.sample())
    np.testing.assert_array_equal(teacher.task(codes[0]), codes[0])


class Ctx:
    """Stands for the loop's LoopContext where a hook only reads counters (and, for a critic's regret, the agent
    and its replay buffer)."""

    class state:  # noqa: N801 - stands for TrainState
        episodes, step = 1, 0


class ConstantRegret(RegretSource):
    def regret(self, ctx, task, episode_return):
        self.task = task
        return 0.25


def test_clutr_hands_the_env_a_layout_code_and_is_told_its_latent_and_regret(small_rvae):
    teacher = CLUTRTeacher(small_rvae, seed=0, batch_size=4)
    low, high = teacher.task_bounds
    assert low.shape == MAZE.param_space.shape and (high == 3).all()
    with pytest.raises(ValueError, match="learns from regret: give TeacherHook a regret source"):
        TeacherHook(teacher, MAZE, test_episodes=0).on_run_start(Ctx)
    hook = TeacherHook(teacher, MAZE, test_episodes=0, regret=ConstantRegret())
    hook.on_run_start(Ctx)
    task = hook.on_episode_start(Ctx, world=0)
    assert MAZE.param_space.contains(task)
    layout_from_code(task, MAZE.shape)
    z = hook.params_of[0]
    assert z.shape == (SMALL["latent_dim"],)
    hook.on_episode_end(Ctx, 0, 0.7, task)
    np.testing.assert_array_equal(teacher.history[0][0], z)  # the teacher learns about its latent, not the code
    assert teacher.regrets.tolist() == [0.25] and hook.regret.task is task  # the regret of the layout played
    assert not hook.params_of
    state = hook.state_dict()
    with pytest.raises(ValueError, match="has a regret source .* this run has none"):
        TeacherHook(CLUTRTeacher(small_rvae, seed=0, batch_size=4), MAZE).load_state_dict(state)


def test_critic_regret_reads_the_episode_just_played_and_the_sac_critic():
    torch.manual_seed(0)
    agent = SAC(spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,)), SACConfig(hidden_sizes=(8,), gamma=0.9))
    buffer = ReplayBuffer(16, 3, 2)
    obs = torch.randn(7, 3)
    rewards = [0.0, 0.5, 0.0, 1.0, 0.2, 0.0, 0.3]
    for t in range(6):  # an episode of 3 steps, then one of 3 truncated by the time limit
        buffer.add(obs[t], [0.0, 0.0], rewards[t], obs[t + 1], False, t == 5, episode_start=t in (0, 3))
    ctx = type("Ctx", (), {"agent": agent, "buffer": buffer})
    values = sac_values(agent, obs[3:7]).double().numpy()
    pvl = CriticRegret("pvl").regret(ctx, np.zeros(25), 0.0)
    assert pvl == pytest.approx(positive_value_loss(rewards[3:6], values[:3], values[3], gamma=0.9))  # bootstrapped

    maxmc = CriticRegret("maxmc")
    layout = np.arange(25.0)
    best = discounted_return(rewards[3:6], 0.9)
    assert maxmc.regret(ctx, layout, 0.0) == pytest.approx(max(0.0, best - values[0]))
    buffer.add(obs[6], [0.0, 0.0], 0.0, obs[0], True, episode_start=True)  # a worse episode on the same layout
    assert maxmc.regret(ctx, layout, 0.0) == pytest.approx(max(0.0, best - values[3]))  # still the best return
    twin = CriticRegret("maxmc")
    twin.load_state_dict(roundtrip(maxmc.state_dict()))
    assert twin.best == maxmc.best
    with pytest.raises(ValueError, match="regret is 'maxmc', this run's is 'pvl'"):
        CriticRegret("pvl").load_state_dict(maxmc.state_dict())


def test_teachers_and_envs_that_do_not_fit_are_refused(tmp_path, small_rvae):
    with pytest.raises(ValueError, match="proposes maze layouts"):
        make_teacher("clutr", [0.0], [1.0])
    with pytest.raises(ValueError, match="unknown teacher 'clutter'.*did you mean 'clutr'"):
        make_layout_teacher("clutter", MAZE)
    hopper_box = make_teacher("random", [0.5] * 3, [1.5] * 3)
    with pytest.raises(ValueError, match="random teacher's tasks lie in .* not PointMazeLayout-v0's param_space"):
        TeacherHook(hopper_box, MAZE)
    for teacher, env, message in (("alp-gmm", "PointMazeLayout-v0", "maze layouts: use dr or clutr"),
                                  ("dr", "HopperPhysics-v0", "proposes maze layouts; HopperPhysics-v0 takes")):
        sections = resolve_config("sac", {"train": {"env": env, "teacher": teacher}}, None, [])
        with pytest.raises(ConfigError, match=message):
            train("sac", sections, tmp_path / teacher)
        assert not (tmp_path / teacher).exists()
    with pytest.raises(ConfigError, match="teacher_rvae.*only with teacher = 'clutr'"):
        resolve_config("sac", {"train": {"env": "PointMazeLayout-v0", "teacher": "dr", "teacher_rvae": "x.pt"}},
                       None, [])
    missing = resolve_config("sac", {"train": {"env": "PointMazeLayout-v0", "teacher": "clutr",
                                               "teacher_rvae": str(tmp_path / "none.pt")}}, None, [])
    with pytest.raises(ConfigError, match="no RVAE checkpoint at"):
        train("sac", missing, tmp_path / "missing")


def test_rvae_save_load_and_the_cache(tmp_path, monkeypatch, small_rvae):
    path = save_rvae(small_rvae, tmp_path / "rvae.pt", {"steps": 20})
    loaded = load_rvae(path)
    z = torch.empty(6, SMALL["latent_dim"]).uniform_(-4, 4, generator=torch.Generator().manual_seed(2))
    assert loaded.decode_layouts(z) == small_rvae.decode_layouts(z)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an RVAE checkpoint"):
        load_rvae(tmp_path / "other.pt")
    # the default RVAE trains once into the cache, then loads from it
    monkeypatch.setenv("CADENCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rvae_module, "CPU_RVAE", SMALL)
    monkeypatch.setattr(rvae_module, "CPU_RVAE_FIT", {"n_layouts": 200, "steps": 6, "batch_size": 16, "seed": 0})
    lines = []
    first = rvae_module.cached_rvae(MAZE.shape, MAZE.max_obstacles, log=lines.append)
    assert rvae_module.default_rvae_path(MAZE.shape, MAZE.max_obstacles).is_file()
    assert "training CLUTR's layout RVAE" in lines[0] and "token accuracy" in lines[-1]
    lines.clear()
    again = rvae_module.cached_rvae(MAZE.shape, MAZE.max_obstacles, log=lines.append)
    assert not lines and again.decode_layouts(z) == first.decode_layouts(z)


@needs_robotics
def test_point_maze_layout_env_changes_layout_and_rewards_progress():
    from gymnasium.utils.env_checker import check_env

    from cadence.envs import make

    env = make("PointMazeLayout-v0")
    check_env(env.unwrapped, skip_render_check=True)
    # a corridor along the top row: agent in cell 0, goal in cell 4, the row below walled off
    corridor = MazeLayout((5, 5), (5, 6, 7, 8, 9), goal=4, agent=0)
    obs, info = env.reset(seed=0, options={"task": layout_code(corridor)})
    assert obs.shape == (31,) and env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[6:], corridor.grid().ravel())  # the maze is in the observation
    np.testing.assert_array_equal(info["task"], layout_code(corridor))
    total, steps, terminated, truncated = 0.0, 0, False, False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0]))  # +x is along the row
        total, steps = total + reward, steps + 1
    assert terminated and info["success"] and steps < MAZE.max_episode_steps
    assert total == pytest.approx(1.0 + 0.1 * 4)  # success, plus 0.1 per cell of path progress
    with pytest.raises(ValueError, match="exactly one goal"):
        env.reset(options={"task": np.zeros(25)})
    with pytest.raises(ValueError, match="has 25 cells, got 3"):
        make("PointMazeLayout-v0", task=[0, 2, 3])


@needs_robotics
def test_sac_trains_on_maze_layouts_with_domain_randomisation_and_resumes(tmp_path):
    def sections(total):
        return resolve_config("sac", {"train": {"env": "PointMazeLayout-v0", "teacher": "dr", "seed": 1,
                                                "total_steps": total}}, None,
                              ["agent.hidden_sizes=[16, 16]", "agent.batch_size=16", "agent.learning_starts=100",
                               "train.eval_every=300", "train.eval_episodes=1", "train.torch_threads=1",
                               "train.checkpoint_every=100", "train.progress=false"])

    train("sac", sections(600), tmp_path / "full")
    state = load_checkpoint(tmp_path / "full")["hooks"]["teacher"]
    codes = state["teacher"]["params"].numpy()
    assert len(codes) >= 2 and all(MAZE.param_space.contains(c) for c in codes)
    assert [step for step, _ in state["tests"]] == [300, 600]
    assert all(len(scores) == MAZE.n_tests and set(scores) <= {0.0, 1.0} for _, scores in state["tests"])
    tags = EventAccumulator(str(tmp_path / "full"), size_guidance={"histograms": 0}).Reload().Tags()
    assert {"curriculum/sampled_obstacles", "curriculum/sampled_path_length"} <= set(tags["histograms"])
    assert "curriculum/mastered" in tags["scalars"]
    train("sac", sections(300), tmp_path / "cut")
    train("sac", sections(600), tmp_path / "cut", resume=True)
    cut = load_checkpoint(tmp_path / "cut")["hooks"]["teacher"]["teacher"]
    assert cut["params"].equal(state["teacher"]["params"]) and cut["rng"] == state["teacher"]["rng"]


@needs_robotics
def test_clutr_with_an_antagonist_trains_checkpoints_and_resumes_exactly(tmp_path, small_rvae):
    rvae = save_rvae(small_rvae, tmp_path / "rvae.pt")

    def sections(total, algo="sac", regret="paired"):
        return resolve_config(algo, {"train": {"env": "PointMazeLayout-v0", "teacher": "clutr", "seed": 1,
                                               "total_steps": total, "teacher_rvae": str(rvae),
                                               "teacher_settings": {"regret": regret, "batch_size": 2}}}, None,
                              ["agent.hidden_sizes=[16, 16]", "agent.batch_size=16", "agent.learning_starts=100",
                               "train.eval_every=0", "train.torch_threads=1", "train.checkpoint_every=100",
                               "train.progress=false"])

    train("sac", sections(600), tmp_path / "full")  # two protagonist episodes of 250 steps, then 100 steps more
    state = load_checkpoint(tmp_path / "full")["hooks"]["teacher"]
    teacher, antagonist = state["teacher"], state["regret"]
    assert len(teacher["returns"]) == 2 and teacher["generations"] == 1  # one PPO update of the batch of 2
    # it played both layouts, each to its end (the 250-step limit, or earlier where it reached the goal), and
    # learned from every step it took
    assert antagonist["name"] == "paired" and len(antagonist["returns"]) == 2 and 2 <= antagonist["steps"] <= 500
    expected = [max(0.0, a - p) for a, p in zip(antagonist["returns"], teacher["returns"].tolist(), strict=True)]
    assert teacher["regrets"].tolist() == pytest.approx(expected)
    assert antagonist["buffer"]["size"] == antagonist["steps"] and state["regret_seconds"] > 0
    train("sac", sections(300), tmp_path / "cut")
    train("sac", sections(600), tmp_path / "cut", resume=True)
    cut = load_checkpoint(tmp_path / "cut")["hooks"]["teacher"]
    assert cut["teacher"]["params"].equal(teacher["params"]) and cut["teacher"]["regrets"].equal(teacher["regrets"])
    assert all(cut["teacher"]["policy"][k].equal(v) for k, v in teacher["policy"].items())
    assert all(cut["regret"]["agent"]["actor"][k].equal(v) for k, v in antagonist["agent"]["actor"].items())
    # a critic's estimate needs a SAC critic: refused for SRL before the run folder is made
    with pytest.raises(ConfigError, match="regret='pvl' reads a SAC critic, and srl is not SAC"):
        train("srl", sections(600, "srl", "pvl"), tmp_path / "srl")
    assert not (tmp_path / "srl").exists()
