"""Maze layouts as a task space: ``PointMazeLayout-v0``, a PointMaze whose layout is the task, and its family.

A curriculum teacher over layouts (CLUTR, domain randomisation) proposes a layout per episode; the env takes it as
``reset(options={"task": layout})`` and rebuilds gymnasium-robotics' PointMaze on it (the optional extra
``cadence-rl[mazes]``). A layout travels as its **code**, ``[H*W]`` float values per cell (0 free, 1 obstacle,
2 goal, 3 agent): a fixed-size vector in the box ``[0, 3]^(H*W)``, so it is checkpointed, logged and compared like
any task family's params.

**Observation** ``[6 + H*W]`` float32: the point's position and the goal's (each scaled by the maze's half-extent
to [-1, 1]), the point's velocity (divided by PointMaze's speed limit, 5), then the obstacle grid (1 obstacle,
0 free). The grid makes the observation say which maze the agent is in, so one policy can serve all layouts.

**Reward**: 1 on reaching the goal (PointMaze's test, within 0.45 of it), which ends the episode, plus a shaping
term ``shaping * (d(s) - d(s'))`` where ``d`` is the breadth-first path length in cells from the point's cell to
the goal's: progress along the maze's shortest path, a potential-based shaping (Ng et al., 1999), so the best
policy is unchanged while a CPU-sized budget still learns. An episode on an unsolvable layout can never succeed
and earns no shaping from unreachable cells.

:class:`LayoutFamily` is what the curriculum hook needs from a task space: the box, a fixed held-out test set of
solvable layouts, and ``score_tests`` (the success rate on each test layout; a layout counts as mastered at
``mastery_threshold``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from cadence.envs.mazes import MOVES, MazeLayout, is_solvable, maze_env, random_layout, shortest_path
from cadence.envs.state import PHYSICS_STATE

FREE, OBSTACLE, GOAL, AGENT = 0, 1, 2, 3
#: PointMaze clips the point's velocity to this norm per axis
POINT_SPEED_LIMIT = 5.0


def layout_code(layout: MazeLayout) -> np.ndarray:
    """Cell contents ``[n_cells]`` float64 (0 free, 1 obstacle, 2 goal, 3 agent): the layout as task params."""
    code = layout.grid().ravel().astype(np.float64)
    code[layout.goal], code[layout.agent] = GOAL, AGENT
    return code


def layout_from_code(code: Any, shape: tuple[int, int]) -> MazeLayout:
    """The layout whose :func:`layout_code` is ``code``; ``ValueError`` naming what is wrong otherwise."""
    c = np.rint(np.asarray(code, dtype=np.float64).reshape(-1)).astype(np.int64)
    n = shape[0] * shape[1]
    if c.size != n:
        raise ValueError(f"a layout code of a {shape[0]}x{shape[1]} maze has {n} cells, got {c.size}")
    if ((c < FREE) | (c > AGENT)).any():
        raise ValueError(f"layout code values must be 0 (free), 1 (obstacle), 2 (goal) or 3 (agent); got "
                         f"{sorted(set(c.tolist()) - {0, 1, 2, 3})}")
    goals, agents = np.flatnonzero(c == GOAL), np.flatnonzero(c == AGENT)
    if len(goals) != 1 or len(agents) != 1:
        raise ValueError(f"a layout code needs exactly one goal (2) and one agent (3), got {len(goals)} and "
                         f"{len(agents)}")
    return MazeLayout(tuple(shape), tuple(int(i) for i in np.flatnonzero(c == OBSTACLE)), int(goals[0]),
                      int(agents[0]))


def to_layout(task: Any, shape: tuple[int, int]) -> MazeLayout:
    """A :class:`MazeLayout` (checked against ``shape``) or a layout code, as a layout."""
    if isinstance(task, MazeLayout):
        if tuple(task.shape) != tuple(shape):
            raise ValueError(f"layout shape {task.shape} differs from the env's {shape}")
        return task
    return layout_from_code(task, shape)


def cell_distances(layout: MazeLayout) -> np.ndarray:
    """``[n_cells]`` breadth-first path length from every cell to the goal (``inf`` where unreachable or blocked)."""
    h, w = layout.shape
    blocked = layout.grid().ravel().astype(bool)
    dist = np.full(layout.n_cells, np.inf)
    dist[layout.goal] = 0.0
    queue = deque([layout.goal])
    while queue:
        cell = queue.popleft()
        r, c = divmod(cell, w)
        for dr, dc in MOVES:
            rr, cc = r + dr, c + dc
            nxt = rr * w + cc
            if 0 <= rr < h and 0 <= cc < w and not blocked[nxt] and dist[nxt] == np.inf:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


class PointMazeLayoutEnv(gym.Env):
    """gymnasium-robotics' PointMaze on a layout that each ``reset(options={"task": layout})`` may change.

    Args:
        shape: the interior grid ``(H, W)`` of every layout.
        task: the first layout (a :class:`MazeLayout` or its code); default a fixed solvable one.
        shaping: weight of the path-progress shaping per cell (0: sparse success reward only).
        max_obstacles: the most obstacles a default layout draw holds (a third of the cells).
    """

    metadata = {"render_modes": []}
    accepts_tasks = True  # reset(options={"task": ...}) is how the layout changes

    def __init__(self, shape: tuple[int, int] = (5, 5), task: Any = None, shaping: float = 0.1,
                 max_obstacles: int | None = None) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        n = self.shape[0] * self.shape[1]
        if shaping < 0:
            raise ValueError(f"shaping must be >= 0, got {shaping}")
        self.shaping = float(shaping)
        self.max_obstacles = n // 3 if max_obstacles is None else int(max_obstacles)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        # positions are scaled by the half-extent and velocities by the speed limit: all lie in [-1, 1]
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(6 + n,), dtype=np.float32)
        self._extent = np.array([self.shape[1] + 2, self.shape[0] + 2], dtype=np.float64) / 2
        first = default_layout(self.shape, self.max_obstacles) if task is None else to_layout(task, self.shape)
        self._inner: Any = None
        self._set_layout(first)

    @property
    def layout(self) -> MazeLayout:
        return self._layout

    def _set_layout(self, layout: MazeLayout) -> None:
        if self._inner is not None and layout == self._layout:
            return
        if self._inner is not None:
            self._inner.close()
        self._inner = maze_env(layout).unwrapped  # our own time limit and reward; PointMaze's physics
        self._layout = layout
        self._grid = layout.grid().ravel().astype(np.float32)
        self._dist = cell_distances(layout)

    def _cell(self, xy: np.ndarray) -> int:
        row, col = self._inner.maze.cell_xy_to_rowcol(xy)
        r, c = int(row) - 1, int(col) - 1  # the maze map has a ring of walls around the layout
        h, w = self.shape
        return min(max(r, 0), h - 1) * w + min(max(c, 0), w - 1)

    def _potential_cells(self, xy: np.ndarray) -> float:
        d = self._dist[self._cell(xy)]
        return float(d) if np.isfinite(d) else np.nan

    def _obs(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        pos, vel, goal = raw["observation"][:2], raw["observation"][2:], raw["desired_goal"]
        obs = np.concatenate([pos / self._extent, goal / self._extent, vel / POINT_SPEED_LIMIT, self._grid])
        return np.clip(obs, -1.0, 1.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        task = (options or {}).get("task")
        if task is not None:
            self._set_layout(to_layout(task, self.shape))
        raw, _ = self._inner.reset(seed=int(self.np_random.integers(2**31)))
        self._last = self._potential_cells(raw["achieved_goal"])
        return self._obs(raw), {"task": layout_code(self._layout), "success": False}

    def step(self, action: np.ndarray):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        raw, _, _, _, info = self._inner.step(action)
        success = bool(info.get("success", False))
        reward = 1.0 if success else 0.0
        now = self._potential_cells(raw["achieved_goal"])
        if self.shaping and np.isfinite(now) and np.isfinite(self._last):
            reward += self.shaping * (self._last - now)
        self._last = now
        return self._obs(raw), reward, success, False, {"success": success}

    @property
    def state(self) -> dict[str, Any]:
        """The episode in progress (the point's physics, the goal as reset placed it, the shaping potential): what
        :func:`cadence.envs.state.episode_state` saves so an interrupted run resumes mid-episode exactly."""
        point = self._inner.point_env
        physics = np.empty(mujoco.mj_stateSize(point.model, PHYSICS_STATE))
        mujoco.mj_getState(point.model, point.data, physics, PHYSICS_STATE)
        return {"physics": physics, "goal": self._inner.goal.copy(), "potential": self._last}

    @state.setter
    def state(self, state: dict[str, Any]) -> None:
        point = self._inner.point_env
        mujoco.mj_setState(point.model, point.data, np.asarray(state["physics"], np.float64), PHYSICS_STATE)
        mujoco.mj_forward(point.model, point.data)
        self._inner.goal = np.asarray(state["goal"], np.float64).copy()
        self._inner.update_target_site_pos()
        self._last = float(state["potential"])

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


def default_layout(shape: tuple[int, int], max_obstacles: int) -> MazeLayout:
    """A fixed solvable layout (the first solvable draw from seed 0): the env's task before any is chosen."""
    rng = np.random.default_rng(0)
    while True:
        layout = random_layout(rng, shape, (0, max_obstacles))
        if is_solvable(layout):
            return layout


@dataclass
class LayoutFamily:
    """Maze layouts of one ``shape`` as a task space for curriculum teachers (see the module docstring)."""

    name: str
    shape: tuple[int, int]
    max_episode_steps: int
    max_obstacles: int
    test_tasks: np.ndarray = field(init=False)
    """``[k, H*W]`` codes of held-out solvable layouts (their own seed, never a training draw's)."""
    mastery_threshold: float = 0.5
    """The success rate on a test layout at or above which it counts as mastered."""
    n_tests: int = 40
    test_seed: int = 2023

    def __post_init__(self) -> None:
        self.param_space = spaces.Box(float(FREE), float(AGENT), shape=(self.shape[0] * self.shape[1],),
                                      dtype=np.float64)
        self.param_names: tuple[str, ...] = ()
        rng = np.random.default_rng(self.test_seed)
        tests: list[np.ndarray] = []
        while len(tests) < self.n_tests:
            layout = random_layout(rng, self.shape, (0, self.max_obstacles))
            if is_solvable(layout):
                tests.append(layout_code(layout))
        self.test_tasks = np.stack(tests)

    def layout(self, params: Any) -> MazeLayout:
        return layout_from_code(params, self.shape)

    def features(self, params: Any) -> dict[str, float]:
        """What the curriculum logs about a task: its obstacle count and its shortest path (-1 if unsolvable)."""
        layout = self.layout(params)
        path = shortest_path(layout)
        return {"obstacles": float(len(layout.obstacles)), "path_length": -1.0 if path is None else float(path)}

    def make(self) -> gym.Env:
        return gym.wrappers.TimeLimit(PointMazeLayoutEnv(self.shape, max_obstacles=self.max_obstacles),
                                      self.max_episode_steps)

    def score_tests(self, agent: Any, episodes: int, seed: int) -> np.ndarray:
        """The success rate of ``agent`` (deciding every step, deterministically) on each test layout, over
        ``episodes`` episodes each."""
        policy: Callable[[np.ndarray], np.ndarray] = lambda o: agent.act_sequence(o, 1, deterministic=True)[0]
        env = self.make()
        rates = np.zeros(len(self.test_tasks))
        try:
            for i, code in enumerate(self.test_tasks):
                for k in range(episodes):
                    obs, _ = env.reset(seed=seed + 1000 * i + k, options={"task": code})
                    done, success = False, False
                    while not done:
                        obs, _, terminated, truncated, info = env.step(policy(obs))
                        success = success or bool(info.get("success"))
                        done = terminated or truncated
                    rates[i] += success / episodes
        finally:
            env.close()
        return rates


#: layout task spaces by env id
LAYOUT_FAMILIES: dict[str, LayoutFamily] = {
    "PointMazeLayout-v0": LayoutFamily("PointMazeLayout-v0", (5, 5), max_episode_steps=250, max_obstacles=8),
}


def layout_family_of(env_id: str) -> LayoutFamily | None:
    """The layout family of ``env_id``, or None for any other env."""
    return LAYOUT_FAMILIES.get(env_id)


def register_layout_envs() -> None:
    """Register every layout family's env id with Gymnasium (idempotent)."""
    for name, fam in LAYOUT_FAMILIES.items():
        if name not in gym.registry:
            gym.register(name, entry_point=PointMazeLayoutEnv, max_episode_steps=fam.max_episode_steps,
                         kwargs={"shape": fam.shape, "max_obstacles": fam.max_obstacles})


__all__: Sequence[str] = ["LAYOUT_FAMILIES", "LayoutFamily", "PointMazeLayoutEnv", "cell_distances", "default_layout",
                          "layout_code", "layout_family_of", "layout_from_code", "register_layout_envs", "to_layout"]
