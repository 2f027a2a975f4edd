"""Domain randomisation over maze layouts: every episode a fresh random layout, the baseline CLUTR must beat."""

from __future__ import annotations

from typing import Any

import numpy as np

from cadence.curricula.base import Teacher
from cadence.envs.maze_tasks import AGENT, FREE, layout_code
from cadence.envs.mazes import random_layout


class DomainRandomisationTeacher(Teacher):
    """Draws each layout as CLUTR's RVAE training data is drawn: a uniform number of obstacles in
    ``[0, max_obstacles]``, then distinct uniform cells for obstacles, goal and agent (solvable or not). Its params
    are the layout's code (:func:`~cadence.envs.maze_tasks.layout_code`), so :meth:`task` is the identity.

    :param shape: the interior grid ``(H, W)``.
    :param max_obstacles: the most obstacles per layout (default a third of the cells).
    :param seed: seed of the teacher's generator.
    :param reward_range: optional; unused except for :meth:`normalise_return`.
    """

    name = "dr"

    def __init__(self, shape: tuple[int, int], max_obstacles: int | None = None, seed: int = 0,
                 reward_range: Any = None) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        n = self.shape[0] * self.shape[1]
        self.max_obstacles = n // 3 if max_obstacles is None else int(max_obstacles)
        super().__init__(np.full(n, float(FREE)), np.full(n, float(AGENT)), seed=seed, reward_range=reward_range)

    def hparams(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "max_obstacles": self.max_obstacles}

    def _sample(self) -> np.ndarray:
        return layout_code(random_layout(self.rng, self.shape, (0, self.max_obstacles)))
