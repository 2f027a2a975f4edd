"""Grid maze layouts as CLUTR tokenises them, and the envs that run them.

A :class:`MazeLayout` is an ``H x W`` interior grid (surrounded by walls that are not part of the layout) with
obstacle cells, one goal cell and one agent start cell. Cells are numbered row-major, ``cell = row * W + col``.

**Tokens** (:class:`LayoutCodec`), as in CLUTR (Azad et al., ICML 2023; docs/ARCHITECTURE.md, "CLUTR"): the
sorted obstacle cells, then the goal, then the agent, then ``END``, padded with ``PAD`` to a fixed length
``max_obstacles + 3``. The vocabulary is

* ``PAD = 0``: after ``END`` only;
* ``GO = 1``: the decoder's start input, never inside a sequence;
* ``END = 2``: closes the sequence (its position tells how many obstacles there are);
* ``CELL_OFFSET + cell`` (``3 .. 3 + H*W - 1``): a cell.

:meth:`LayoutCodec.decode` is exact for every sequence that :meth:`LayoutCodec.encode` can produce. Other
sequences are *refused* (``ValueError`` naming the fault) unless ``repair=True``, which maps any token sequence to a
valid layout deterministically -- what a learned decoder needs, since its output is not guaranteed valid:

1. read up to the first ``END`` (or the end); drop ``PAD``/``GO`` and out-of-range tokens;
2. the last two cells left are goal and agent, the others obstacles (de-duplicated, sorted, at most
   ``max_obstacles``, lowest kept); an obstacle on the goal or agent cell is removed;
3. a missing goal or agent, or an agent on the goal, takes the lowest-numbered free cell (dropping the highest
   obstacle first when none is free).

A repaired layout may be unsolvable, as CLUTR's decoded tasks may be: :func:`shortest_path` says.

**Envs** (:func:`maze_env`): ``continuous=True`` builds gymnasium-robotics' PointMaze on the layout's ``maze_map``
(the optional extra ``cadence-rl[mazes]``, imported only here); ``continuous=False`` builds :class:`GridMazeEnv`, a
small discrete grid world with no extra dependency (fast enough for CPU curriculum experiments).
"""

from __future__ import annotations

import contextlib
import io
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

PAD, GO, END = 0, 1, 2
CELL_OFFSET = 3
#: the row/col moves of GridMazeEnv's four actions: up, right, down, left
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))


@dataclass(frozen=True)
class MazeLayout:
    """An interior grid of ``shape = (H, W)`` cells: sorted obstacle cells, a goal and an agent start."""

    shape: tuple[int, int]
    obstacles: tuple[int, ...]
    goal: int
    agent: int

    def __post_init__(self) -> None:
        h, w = self.shape
        if h < 1 or w < 1 or h * w < 2:
            raise ValueError(f"a maze needs at least 2 cells, got shape {self.shape}")
        n = h * w
        cells = (*self.obstacles, self.goal, self.agent)
        if any(not 0 <= c < n for c in cells):
            raise ValueError(f"cells must lie in [0, {n}) for shape {self.shape}, got {cells}")
        if list(self.obstacles) != sorted(set(self.obstacles)):
            raise ValueError(f"obstacles must be sorted and distinct, got {self.obstacles}")
        if self.goal == self.agent:
            raise ValueError(f"goal and agent share cell {self.goal}")
        if self.goal in self.obstacles or self.agent in self.obstacles:
            raise ValueError(f"goal {self.goal} or agent {self.agent} lies on an obstacle")

    @property
    def n_cells(self) -> int:
        return self.shape[0] * self.shape[1]

    def rowcol(self, cell: int) -> tuple[int, int]:
        """``(row, col)`` of a cell index."""
        return divmod(cell, self.shape[1])

    def grid(self) -> np.ndarray:
        """``[H, W]`` int8: 1 on obstacles, 0 elsewhere."""
        g = np.zeros(self.n_cells, dtype=np.int8)
        g[list(self.obstacles)] = 1
        return g.reshape(self.shape)

    def maze_map(self) -> list[list[int | str]]:
        """gymnasium-robotics' ``maze_map``: the grid inside a ring of walls, 1 = wall, 0 = free, ``"g"`` the goal,
        ``"r"`` the agent's reset cell."""
        h, w = self.shape
        rows: list[list[int | str]] = [[1] * (w + 2)]
        for r in range(h):
            rows.append([1, *(int(v) for v in self.grid()[r]), 1])
        rows.append([1] * (w + 2))
        for cell, mark in ((self.goal, "g"), (self.agent, "r")):
            r, c = self.rowcol(cell)
            rows[r + 1][c + 1] = mark
        return rows

    def __str__(self) -> str:
        chars = np.where(self.grid() == 1, "#", ".").astype(object)
        for cell, mark in ((self.goal, "G"), (self.agent, "A")):
            chars[self.rowcol(cell)] = mark
        return "\n".join("".join(row) for row in chars)


def random_layout(rng: np.random.Generator, shape: tuple[int, int] = (8, 8),
                  n_obstacles: tuple[int, int] = (0, 21)) -> MazeLayout:
    """A layout with a number of obstacles uniform in ``n_obstacles`` (inclusive), all cells distinct and uniform.

    Like CLUTR's training data it need not be solvable; filter with :func:`shortest_path` where that matters.
    """
    n = shape[0] * shape[1]
    lo, hi = n_obstacles
    if not 0 <= lo <= hi <= n - 2:
        raise ValueError(f"n_obstacles must satisfy 0 <= low <= high <= {n - 2} on shape {shape}, got {n_obstacles}")
    k = int(rng.integers(lo, hi + 1))
    cells = rng.choice(n, size=k + 2, replace=False)
    return MazeLayout(tuple(shape), tuple(sorted(int(c) for c in cells[:k])), int(cells[k]), int(cells[k + 1]))


def random_layouts(n: int, seed: int, shape: tuple[int, int] = (8, 8),
                   n_obstacles: tuple[int, int] = (0, 21)) -> list[MazeLayout]:
    """``n`` seeded :func:`random_layout` draws."""
    rng = np.random.default_rng(seed)
    return [random_layout(rng, shape, n_obstacles) for _ in range(n)]


def shortest_path(layout: MazeLayout) -> int | None:
    """The fewest 4-neighbour moves from agent to goal avoiding obstacles (BFS), or None if unreachable."""
    h, w = layout.shape
    blocked = layout.grid().ravel().astype(bool)
    dist = {layout.agent: 0}
    queue = deque([layout.agent])
    while queue:
        cell = queue.popleft()
        if cell == layout.goal:
            return dist[cell]
        r, c = divmod(cell, w)
        for dr, dc in MOVES:
            rr, cc = r + dr, c + dc
            nxt = rr * w + cc
            if 0 <= rr < h and 0 <= cc < w and not blocked[nxt] and nxt not in dist:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return None


def is_solvable(layout: MazeLayout) -> bool:
    """Whether the goal is reachable from the agent's start."""
    return shortest_path(layout) is not None


class LayoutCodec:
    """Layouts of one ``shape`` with at most ``max_obstacles`` obstacles <-> fixed-length token sequences.

    :param shape: interior grid ``(H, W)``.
    :param max_obstacles: the most obstacles a sequence holds; defaults to a third of the cells (CLUTR's MiniGrid
        mazes allow 50 of 169).
    """

    def __init__(self, shape: tuple[int, int] = (8, 8), max_obstacles: int | None = None) -> None:
        h, w = (int(s) for s in shape)
        self.shape = (h, w)
        self.n_cells = h * w
        self.max_obstacles = self.n_cells // 3 if max_obstacles is None else int(max_obstacles)
        if not 0 <= self.max_obstacles <= self.n_cells - 2:
            raise ValueError(f"max_obstacles must lie in [0, {self.n_cells - 2}], got {self.max_obstacles}")

    @property
    def vocab_size(self) -> int:
        """PAD, GO, END and one token per cell."""
        return CELL_OFFSET + self.n_cells

    @property
    def seq_len(self) -> int:
        """Obstacles, goal, agent and END."""
        return self.max_obstacles + 3

    def encode(self, layout: MazeLayout) -> np.ndarray:
        """``[seq_len]`` int64 tokens; ``ValueError`` for another shape or too many obstacles."""
        if tuple(layout.shape) != self.shape:
            raise ValueError(f"layout shape {layout.shape} differs from the codec's {self.shape}")
        if len(layout.obstacles) > self.max_obstacles:
            raise ValueError(f"layout has {len(layout.obstacles)} obstacles, the codec at most {self.max_obstacles}")
        cells = [*layout.obstacles, layout.goal, layout.agent]
        tokens = np.full(self.seq_len, PAD, dtype=np.int64)
        tokens[:len(cells)] = np.asarray(cells) + CELL_OFFSET
        tokens[len(cells)] = END
        return tokens

    def encode_many(self, layouts: Iterable[MazeLayout]) -> np.ndarray:
        """``[n, seq_len]`` tokens."""
        return np.stack([self.encode(layout) for layout in layouts])

    def decode(self, tokens: Sequence[int] | np.ndarray, repair: bool = False) -> MazeLayout:
        """The layout of a token sequence: exact for valid ones; others raise ``ValueError``, or with ``repair=True``
        are repaired deterministically (rules in the module docstring)."""
        toks = [int(t) for t in np.asarray(tokens).reshape(-1)]
        return self._repair(toks) if repair else self._strict(toks)

    # ------------------------------------------------------------------------------------------------- internals
    def _is_cell(self, token: int) -> bool:
        return CELL_OFFSET <= token < CELL_OFFSET + self.n_cells

    def _strict(self, toks: list[int]) -> MazeLayout:
        if END not in toks:
            raise ValueError(f"token sequence has no END ({END}): {toks}")
        end = toks.index(END)
        body, tail = toks[:end], toks[end + 1:]
        if any(t != PAD for t in tail):
            raise ValueError(f"only PAD may follow END, got {tail}")
        bad = [t for t in body if not self._is_cell(t)]
        if bad:
            raise ValueError(f"tokens {bad} are not cells of a {self.shape} grid (cells are {CELL_OFFSET}.."
                             f"{CELL_OFFSET + self.n_cells - 1})")
        if len(body) < 2:
            raise ValueError(f"a sequence needs a goal and an agent before END, got {body}")
        if len(body) - 2 > self.max_obstacles:
            raise ValueError(f"{len(body) - 2} obstacles exceed max_obstacles={self.max_obstacles}")
        cells = [t - CELL_OFFSET for t in body]
        if len(set(cells)) != len(cells):
            raise ValueError(f"a cell appears twice: {cells} (goal on an obstacle, agent on the goal, or repeats)")
        if cells[:-2] != sorted(cells[:-2]):
            raise ValueError(f"obstacles must be sorted, got {cells[:-2]}")
        return MazeLayout(self.shape, tuple(cells[:-2]), cells[-2], cells[-1])

    def _repair(self, toks: list[int]) -> MazeLayout:
        if END in toks:
            toks = toks[:toks.index(END)]
        cells = [t - CELL_OFFSET for t in toks if self._is_cell(t)]
        goal = cells[-2] if len(cells) >= 2 else None
        agent = cells[-1] if cells else None
        if agent is not None and agent == goal:
            agent = None
        taken = {c for c in (goal, agent) if c is not None}
        obstacles = sorted(set(cells[:-2]) - taken)[:self.max_obstacles]
        for _ in range(2):  # place the missing goal, then the missing agent, on the lowest free cell
            if goal is not None and agent is not None:
                break
            free = sorted(set(range(self.n_cells)) - set(obstacles) - taken)
            if not free:  # a full grid: the highest obstacle gives way
                free = [obstacles.pop()]
            if goal is None:
                goal = free[0]
            else:
                agent = free[0]
            taken.add(free[0])
        return MazeLayout(self.shape, tuple(obstacles), int(goal), int(agent))


# ----------------------------------------------------------------------------------------------------------- envs
class GridMazeEnv(gym.Env):
    """A discrete maze on one layout: four moves (up, right, down, left); a move into an obstacle or the outer wall
    leaves the agent in place. Observation: ``[3, H, W]`` float32 planes of obstacles, goal and agent. Reaching the
    goal ends the episode with MiniGrid's reward ``1 - 0.9 * steps / max_steps``; otherwise 0 (truncated at
    ``max_steps``, default ``4 * H * W``)."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, layout: MazeLayout, max_steps: int | None = None, render_mode: str | None = None) -> None:
        self.layout = layout
        self.max_steps = int(max_steps or 4 * layout.n_cells)
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(4)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(3, *layout.shape), dtype=np.float32)
        self._static = np.zeros((3, *layout.shape), dtype=np.float32)
        self._static[0] = layout.grid()
        self._static[1][layout.rowcol(layout.goal)] = 1.0
        self._pos = layout.agent
        self._steps = 0

    def _obs(self) -> np.ndarray:
        obs = self._static.copy()
        obs[2][self.layout.rowcol(self._pos)] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._pos, self._steps = self.layout.agent, 0
        return self._obs(), {}

    def step(self, action):
        h, w = self.layout.shape
        r, c = self.layout.rowcol(self._pos)
        dr, dc = MOVES[int(action)]
        rr, cc = r + dr, c + dc
        if 0 <= rr < h and 0 <= cc < w and not self._static[0, rr, cc]:
            self._pos = rr * w + cc
        self._steps += 1
        success = self._pos == self.layout.goal
        reward = 1.0 - 0.9 * self._steps / self.max_steps if success else 0.0
        truncated = not success and self._steps >= self.max_steps
        return self._obs(), reward, success, truncated, {"success": success}

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        rows = [list(row) for row in str(self.layout).splitlines()]
        if self._pos != self.layout.agent:
            r, c = self.layout.rowcol(self._pos)
            rows[r][c] = "A"
            r0, c0 = self.layout.rowcol(self.layout.agent)
            rows[r0][c0] = "."
        return "\n".join("".join(row) for row in rows)


def _import_gymnasium_robotics() -> Any:
    try:
        # the package prints an unrelated release notice (about Adroit rewards) to stderr on import; hide it
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics
    except ImportError as err:
        raise ImportError("maze_env(continuous=True) needs gymnasium-robotics: pip install 'cadence-rl[mazes]' "
                          "(or gymnasium-robotics>=1.3); continuous=False needs nothing extra") from err
    gym.register_envs(gymnasium_robotics)
    return gymnasium_robotics


def maze_env(layout: MazeLayout, continuous: bool = True, **kwargs: Any) -> gym.Env:
    """An env on ``layout``.

    ``continuous=True``: gymnasium-robotics' PointMaze (``PointMaze_UMaze-v3`` with the layout's ``maze_map``),
    episodic by default (``continuing_task=False``: reaching the goal ends the episode) with a sparse reward;
    ``kwargs`` go to ``gymnasium.make`` (``reward_type="dense"``, ``max_episode_steps``, ``render_mode``, ...).
    PointMaze adds up to a quarter cell of uniform noise to the goal and start positions at each reset.
    ``continuous=False``: :class:`GridMazeEnv` (``kwargs``: ``max_steps``, ``render_mode``).
    """
    if not continuous:
        return GridMazeEnv(layout, **kwargs)
    _import_gymnasium_robotics()
    options = {"continuing_task": False, **kwargs}
    return gym.make("PointMaze_UMaze-v3", maze_map=layout.maze_map(), **options)
