"""A curriculum teacher as a training-loop hook: it chooses each episode's task and learns from its return.

:class:`TeacherHook` adapts any :mod:`cadence.curricula` teacher to the loops: at every episode start (per world on
the batched path) it samples task parameters, which the loop passes to the env's reset; at every episode end it
reports the return for the task that episode ran. Its teacher's state is checkpointed with the run, so a resumed
run continues the same curriculum. It logs under ``curriculum/``: histograms of the sampled parameters, the
teacher's own numbers (ALP, GMM components, regions), the wall time spent in the teacher, and at every evaluation
the share of the family's fixed test tasks the agent masters; each evaluation's return per test task is kept in
the hook's checkpointed state (``tests``), so mastery can be recomputed at any threshold afterwards.

The task space is a :class:`~cadence.envs.tasks.TaskFamily` (physics or reward params) or a
:class:`~cadence.envs.maze_tasks.LayoutFamily` (maze layouts, scored by success rate); the hook needs only their
``param_space``, ``features``, ``test_tasks``, ``mastery_threshold`` and ``score_tests``. A teacher that searches
another space than the env's (CLUTR's latents) hands the env ``teacher.task(params)`` and is told the return for
its own params, which the hook keeps per world until the episode ends.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cadence.envs.maze_tasks import LayoutFamily
from cadence.envs.tasks import TaskFamily
from cadence.loops.hooks import Hook, LoopContext


class TeacherHook(Hook):
    """Lets ``teacher`` choose the tasks of ``family`` for any agent.

    Args:
        teacher: a :class:`cadence.curricula.Teacher` whose ``task_bounds`` are the family's ``param_space``.
        family: the training env's task family or layout family.
        log_every: episodes between logs of the teacher's numbers and the sampled-parameter histograms (they are
            also logged at every evaluation).
        test_episodes: episodes per test task in the mastery evaluation (0 turns it off).
    """

    def __init__(self, teacher: Any, family: TaskFamily | LayoutFamily, log_every: int = 50,
                 test_episodes: int = 1):
        low, high = (np.asarray(b, np.float64) for b in teacher.task_bounds)
        space = family.param_space
        if low.shape != space.shape or not (np.allclose(low, space.low) and np.allclose(high, space.high)):
            raise ValueError(f"the {teacher.name} teacher's tasks lie in [{_short(low)}, {_short(high)}], which is "
                             f"not {family.name}'s param_space [{_short(space.low)}, {_short(space.high)}]")
        self.teacher, self.family = teacher, family
        self.log_every, self.test_episodes = log_every, test_episodes
        self.sampled: list[dict[str, float]] = []  # features of the tasks since the last log, for the histograms
        self.params_of: dict[int, np.ndarray] = {}  # the teacher's params of each world's running episode
        self.tests: list[tuple[int, list[float]]] = []  # (step, mean return per test task) of every evaluation
        self.teacher_seconds = 0.0  # wall time inside the teacher's sample and update

    @property
    def name(self) -> str:
        return "teacher"

    def on_episode_start(self, ctx: LoopContext, world: int) -> np.ndarray:
        start = time.perf_counter()
        params = self.teacher.sample()
        task = self.teacher.task(params)
        self.teacher_seconds += time.perf_counter() - start
        self.params_of[world] = params
        self.sampled.append(self.family.features(task))
        return task

    def on_episode_end(self, ctx: LoopContext, world: int, episode_return: float, task: Any) -> None:
        params = self.params_of.pop(world, None)
        if params is None:  # an episode begun before this hook chose tasks (a resumed run's first one)
            return
        start = time.perf_counter()
        self.teacher.update(params, float(episode_return))
        self.teacher_seconds += time.perf_counter() - start
        if ctx.state.episodes % self.log_every == 0:
            self._log(ctx)

    def _log(self, ctx: LoopContext) -> None:
        step = ctx.state.step
        numbers = {f"curriculum/{k}": float(v) for k, v in self.teacher.metrics().items()}
        ctx.logger.scalars({**numbers, "curriculum/teacher_seconds": self.teacher_seconds}, step)
        if self.sampled:
            for label in self.sampled[0]:
                values = np.array([f[label] for f in self.sampled])
                ctx.logger.writer.add_histogram(f"curriculum/sampled_{label}", values, step)
            self.sampled = []

    def on_eval(self, ctx: LoopContext, mean_return: float) -> None:
        """The teacher's numbers, and the share of the family's test tasks on which the agent's score (mean return,
        or success rate on mazes) reaches the mastery threshold."""
        self._log(ctx)
        tests, threshold = self.family.test_tasks, self.family.mastery_threshold
        if not self.test_episodes or tests is None or threshold is None:
            return
        scores = self.family.score_tests(ctx.agent, self.test_episodes, seed=10_000 + ctx.state.step)
        self.tests.append((ctx.state.step, scores.tolist()))
        mastered = float(np.mean(scores >= threshold))
        ctx.logger.scalars({"curriculum/mastered": mastered, "curriculum/test_score": float(scores.mean())},
                           ctx.state.step)
        ctx.state.last_evaluation["curriculum/mastered"] = mastered

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "sampled": list(self.sampled),
                "params_of": {int(w): p.tolist() for w, p in self.params_of.items()},
                "tests": [list(t) for t in self.tests], "teacher_seconds": self.teacher_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.sampled = [dict(f) for f in state["sampled"]]
        self.params_of = {int(w): np.asarray(p, np.float64) for w, p in state.get("params_of", {}).items()}
        self.tests = [(int(step), list(r)) for step, r in state.get("tests", [])]
        self.teacher_seconds = float(state.get("teacher_seconds", 0.0))


def _short(values: np.ndarray) -> str:
    """A bound for an error message: the list, or its range when long (a maze's 36 cells)."""
    values = np.asarray(values).ravel()
    if values.size <= 6:
        return str(values.tolist())
    return f"{values.size} values in {values.min():g}..{values.max():g}"
