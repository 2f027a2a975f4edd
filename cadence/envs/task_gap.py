"""The task gap of a task sequence: how differently its tasks' true dynamics move the same state under the same action.

A continual benchmark can show forgetting only if its tasks conflict. If every task sends ``(s, a)`` to nearly the
same ``s'``, a single model trained on the last task is still right on the first, and "no forgetting" says nothing
about the method. :func:`task_gap` measures that gap before anyone trusts a benchmark:

1. ``n`` transitions of a uniform random policy are collected in every task (full MuJoCo states, not observations);
2. each transition's ``(s, a)`` is replayed in every other task's physics;
3. ``gap[i, j]`` is the mean over task i's ``(s, a)`` of the squared difference between task i's and task j's next
   observations, per column divided by the variance of ``s' - s`` in the first task's data (so 1 is the size of a
   typical step, and the figure compares with a model error normalised the same way). ``reward_gap`` is the same for
   the reward.

A sequence whose smallest state gap is below ten times a single-task model's (normalised) error cannot show
forgetting of the dynamics: :func:`gap_warning` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cadence.envs.tasks import resolve_sequence

#: how many times a single-task model's held-out error the smallest gap must be, for forgetting to be measurable
MIN_GAP_RATIO = 10.0
#: the smallest std a column's step scale takes (as the model-error scale's): a column that never moves in the first
#: task (Ant's contact forces, Pusher's object under random actions) would otherwise divide by ~0
SCALE_FLOOR = 1e-3


@dataclass(frozen=True)
class TaskGap:
    """The gaps of one sequence (see the module docstring); matrices are ``[T, T]`` with zeros on the diagonal."""

    sequence: str
    labels: list[str]
    state_gap: np.ndarray
    """Normalised squared next-observation difference (mean over columns)."""
    reward_gap: np.ndarray
    """Normalised squared reward difference."""
    raw_state_mse: np.ndarray
    """Plain MSE between next observations, unnormalised."""
    transitions: int
    state_scale: np.ndarray
    """Per observation column, the std of ``s' - s`` in the first task's data (the normaliser of the gaps)."""
    data: list[dict[str, np.ndarray]]
    """Each task's random transitions (``obs, action, next_obs, reward``), e.g. to fit a single-task model."""

    @property
    def min_state_gap(self) -> float:
        """The smallest state gap between two different tasks (the pair a model confuses most easily)."""
        return _off_diagonal_min(self.state_gap)

    @property
    def min_reward_gap(self) -> float:
        """The smallest reward gap between two different tasks."""
        return _off_diagonal_min(self.reward_gap)

    def to_dict(self) -> dict:
        return {"sequence": self.sequence, "labels": self.labels, "transitions": self.transitions,
                "state_gap": self.state_gap.tolist(), "reward_gap": self.reward_gap.tolist(),
                "raw_state_mse": self.raw_state_mse.tolist(), "min_state_gap": self.min_state_gap,
                "min_reward_gap": self.min_reward_gap}

    def table(self) -> str:
        """The state-gap matrix as text, rows: whose (s, a); columns: which task's physics."""
        width = max(len(label) for label in self.labels) + 2
        lines = [" " * width + "".join(f"{label:>{width}}" for label in self.labels)]
        for label, row in zip(self.labels, self.state_gap):
            lines.append(f"{label:<{width}}" + "".join(f"{v:>{width}.4g}" for v in row))
        return "\n".join(lines)


def _off_diagonal_min(matrix: np.ndarray) -> float:
    off = ~np.eye(len(matrix), dtype=bool)
    return float(matrix[off].min()) if off.any() else float("nan")


def _collect(env, n: int, episode_steps: int, rng: np.random.Generator) -> list[tuple[np.ndarray, ...]]:
    """``n`` (qpos, qvel, obs, action, next_obs, reward) of uniform random actions, episodes of ``episode_steps``."""
    base = env.unwrapped
    out: list[tuple[np.ndarray, ...]] = []
    steps = episode_steps
    while len(out) < n:
        if steps >= episode_steps:
            env.reset(seed=int(rng.integers(2**31)))
            steps = 0
        qpos, qvel, obs = base.data.qpos.copy(), base.data.qvel.copy(), np.asarray(base._get_obs(), np.float64)
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        next_obs, reward, terminated, _, _ = env.step(action)
        out.append((qpos, qvel, obs, action, np.asarray(next_obs, np.float64), float(reward)))
        steps = episode_steps if terminated else steps + 1
    return out


def _replay(env, rows: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Next observations and rewards of ``rows``' (state, action) in ``env``'s physics."""
    env.reset(seed=0)
    next_obs, rewards = [], []
    for qpos, qvel, _, action, _, _ in rows:
        env.unwrapped.set_state(qpos, qvel)
        obs, reward, *_ = env.step(action)  # through the task's wrapper, which may own the reward; past the time
        next_obs.append(obs)  # limit a step only reports truncation
        rewards.append(reward)
    return np.asarray(next_obs, np.float64), np.asarray(rewards, np.float64)


def task_gap(sequence: str, n: int = 1000, seed: int = 0, episode_steps: int = 200) -> TaskGap:
    """The :class:`TaskGap` of ``sequence`` from ``n`` random transitions per task (see the module docstring)."""
    from cadence.envs.registry import make  # registry imports the families: keep this module importable alone

    if n < 2:
        raise ValueError(f"the task gap needs n >= 2 transitions per task, got {n}")
    family, tasks = resolve_sequence(sequence)
    envs = [make(family.name, task=params) for _, params in tasks]
    try:
        rng = np.random.default_rng(seed)
        data = [_collect(env, n, episode_steps, rng) for env in envs]
        k = len(tasks)
        state, reward, raw = np.zeros((k, k)), np.zeros((k, k)), np.zeros((k, k))
        # the scale of a step: the std of s' - s and of r in the first task's data
        delta0 = np.array([row[4] - row[2] for row in data[0]])
        state_scale = np.maximum(delta0.std(0), SCALE_FLOOR)
        reward_scale = max(float(np.std([row[5] for row in data[0]])), SCALE_FLOOR)
        for i in range(k):
            own_next = np.array([row[4] for row in data[i]])
            own_reward = np.array([row[5] for row in data[i]])
            for j in range(k):
                if i == j:
                    continue
                other_next, other_reward = _replay(envs[j], data[i])
                diff = own_next - other_next
                state[i, j] = float(np.mean((diff / state_scale) ** 2))
                raw[i, j] = float(np.mean(diff**2))
                reward[i, j] = float(np.mean(((own_reward - other_reward) / reward_scale) ** 2))
    finally:
        for env in envs:
            env.close()
    arrays = [{key: np.array([row[c] for row in rows], dtype=np.float32)
               for key, c in (("obs", 2), ("action", 3), ("next_obs", 4), ("reward", 5))} for rows in data]
    return TaskGap(sequence, [label for label, _ in tasks], state, reward, raw, n, state_scale, arrays)


def gap_warning(sequence: str, min_state_gap: float, min_reward_gap: float, single_task_error: float,
                ratio: float = MIN_GAP_RATIO) -> str | None:
    """A warning that forgetting of the dynamics cannot stand out on ``sequence`` (its smallest state gap is below
    ``ratio`` times a single-task model's normalised state error), or None where it can."""
    over = min_state_gap / max(single_task_error, 1e-12)
    if over >= ratio:
        return None
    reward = (f"; its tasks differ in the reward (smallest reward gap {min_reward_gap:.3g}), which the reward error "
              "shows" if min_reward_gap >= 1.0 else "")
    return (f"sequence {sequence!r} cannot show forgetting of the dynamics: its smallest task gap "
            f"{min_state_gap:.3g} is {over:.1f}x a single-task model's state error {single_task_error:.3g} (below "
            f"{ratio:g}x), so a model that forgot an earlier task is hardly worse on it than one that kept it (tasks "
            f"too alike, or a model trained too little){reward}")
