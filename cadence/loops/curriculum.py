"""A curriculum teacher as a training-loop hook: it chooses each episode's task and learns from its return.

:class:`TeacherHook` adapts any :mod:`cadence.curricula` teacher to the loops: at every episode start (per world on
the batched path) it samples task parameters, which the loop passes to the env's reset; at every episode end it
reports the return for the task that episode ran. Its teacher's state is checkpointed with the run, so a resumed
run continues the same curriculum. It logs under ``curriculum/``: histograms of the sampled parameters, the
teacher's own numbers (ALP, GMM components, regions), the wall time spent in the teacher, and at every evaluation
the share of the family's fixed test tasks the agent masters; each evaluation's return per test task is kept in
the hook's checkpointed state (``tests``), so mastery can be recomputed at any threshold afterwards.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cadence.envs.batched.episodes import task_returns
from cadence.envs.tasks import TaskFamily
from cadence.loops.hooks import Hook, LoopContext


class TeacherHook(Hook):
    """Lets ``teacher`` choose the tasks of ``family`` for any agent.

    Args:
        teacher: a :class:`cadence.curricula.Teacher` over the family's ``param_space``.
        family: the training env's task family.
        log_every: episodes between logs of the teacher's numbers and the sampled-parameter histograms (they are
            also logged at every evaluation).
        test_episodes: episodes per test task in the mastery evaluation (0 turns it off).
    """

    def __init__(self, teacher: Any, family: TaskFamily, log_every: int = 50, test_episodes: int = 1):
        low, high = np.asarray(teacher.low, np.float64), np.asarray(teacher.high, np.float64)
        space = family.param_space
        if low.shape != space.shape or not (np.allclose(low, space.low) and np.allclose(high, space.high)):
            raise ValueError(f"the teacher's bounds [{low.tolist()}, {high.tolist()}] do not match {family.name}'s "
                             f"param_space [{space.low.tolist()}, {space.high.tolist()}]")
        self.teacher, self.family = teacher, family
        self.log_every, self.test_episodes = log_every, test_episodes
        self.sampled: list[np.ndarray] = []  # since the last log, for the histograms
        self.tests: list[tuple[int, list[float]]] = []  # (step, mean return per test task) of every evaluation
        self.teacher_seconds = 0.0  # wall time inside the teacher's sample and update

    @property
    def name(self) -> str:
        return "teacher"

    def on_episode_start(self, ctx: LoopContext, world: int) -> np.ndarray:
        start = time.perf_counter()
        params = self.teacher.sample()
        self.teacher_seconds += time.perf_counter() - start
        self.sampled.append(params)
        return params

    def on_episode_end(self, ctx: LoopContext, world: int, episode_return: float, task: Any) -> None:
        if task is None:  # an episode begun before this hook chose tasks (a resumed run's first one)
            return
        start = time.perf_counter()
        self.teacher.update(np.asarray(task, np.float64), float(episode_return))
        self.teacher_seconds += time.perf_counter() - start
        if ctx.state.episodes % self.log_every == 0:
            self._log(ctx)

    def _log(self, ctx: LoopContext) -> None:
        step = ctx.state.step
        numbers = {f"curriculum/{k}": float(v) for k, v in self.teacher.metrics().items()}
        ctx.logger.scalars({**numbers, "curriculum/teacher_seconds": self.teacher_seconds}, step)
        if self.sampled:
            params = np.stack(self.sampled)
            for i, label in enumerate(self._param_names()):
                ctx.logger.writer.add_histogram(f"curriculum/sampled_{label}", params[:, i], step)
            self.sampled = []

    def _param_names(self) -> list[str]:
        names = list(getattr(self.family, "param_names", ()) or ())
        return names if len(names) == self.family.param_space.shape[0] else [
            f"param{i}" for i in range(self.family.param_space.shape[0])]

    def on_eval(self, ctx: LoopContext, mean_return: float) -> None:
        """The teacher's numbers, and the share of the family's test tasks on which the agent's mean return reaches
        the mastery threshold."""
        self._log(ctx)
        tests, threshold = self.family.test_tasks, self.family.mastery_threshold
        if not self.test_episodes or tests is None or threshold is None:
            return
        returns = task_returns(self.family.name, ctx.agent.act_sequence, list(tests), self.test_episodes,
                               seed=10_000 + ctx.state.step).mean(axis=1)
        self.tests.append((ctx.state.step, returns.tolist()))
        mastered = float(np.mean(returns >= threshold))
        ctx.logger.scalars({"curriculum/mastered": mastered, "curriculum/test_return": float(returns.mean())},
                           ctx.state.step)
        ctx.state.last_evaluation["curriculum/mastered"] = mastered

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "sampled": [p.tolist() for p in self.sampled],
                "tests": [list(t) for t in self.tests], "teacher_seconds": self.teacher_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.sampled = [np.asarray(p) for p in state["sampled"]]
        self.tests = [(int(step), list(r)) for step, r in state.get("tests", [])]
        self.teacher_seconds = float(state.get("teacher_seconds", 0.0))
