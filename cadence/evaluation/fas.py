"""Frequency-Averaged Score (Patel & Siegelmann, arXiv 2410.08979, ICLR 2025; docs/ARCHITECTURE.md, "SRL and FAS").

An agent decides once from a state and its next ``ASL`` actions run open loop. FAS is the area
under mean return against ASL, normalised by R_max and the largest ASL:

    FAS = trapz(mean_return(ASL) + shift, ASL) / (R_max * max(ASL))

with ASL in {1, 2, 4, 6, ..., 30} and 10 episodes per ASL by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cadence.envs import base_env_id, family_of, make, run_episodes
from cadence.envs.libero import is_libero_id

#: Action-sequence lengths of the paper: 1, 2, 4, 6, ..., 30 (16 values).
ASL_GRID: tuple[int, ...] = (1, *range(2, 31, 2))

#: Best return used to normalise FAS, per environment family (the paper's table, measured on Gym v2).
R_MAX: dict[str, float] = {
    "Hopper": 3600, "Walker2d": 5000, "Ant": 6500, "HalfCheetah": 17000, "Humanoid": 10500,
    "InvertedPendulum": 1000, "InvertedDoublePendulum": 9400, "Reacher": 60, "Swimmer": 350,
    "Pendulum": 1350, "LunarLanderContinuous": 300,
    "LIBERO": 1,  # the return of a LIBERO episode is its success
}

#: Added to returns so they are non-negative before integration.
RETURN_SHIFT: dict[str, float] = {"Reacher": 65.0, "Pendulum": 1550.0}

#: Published SAC-J FAS (mean of 5 seeds, Gym v2 tasks) for J = 1, 2, 4, 8, 16.
PUBLISHED_SAC_J_FAS: dict[str, dict[int, float]] = {
    "Hopper": {1: 0.050, 2: 0.093, 4: 0.136, 8: 0.142, 16: 0.263},
    "Walker2d": {1: 0.071, 2: 0.084, 4: 0.137, 8: 0.233, 16: 0.151},
    "InvertedPendulum": {1: 0.052, 2: 0.072, 4: 0.144, 8: 0.311, 16: 0.338},
    "Reacher": {1: 0.725, 2: 0.778, 4: 0.840, 8: 0.857, 16: 0.870},
    "Swimmer": {1: 0.082, 2: 0.284, 4: 0.455, 8: 0.534, 16: 0.536},
}

#: ``act_sequence(obs, length) -> [length, act_dim]``: the actions decided from one state.
SequencePolicy = Callable[[np.ndarray, int], np.ndarray]


def env_family(env_id: str) -> str:
    """The name the R_max and shift tables use: ``"Hopper-v5"`` -> ``"Hopper"``.

    A task family that varies the physics has its base env's (``"HopperPhysics-v0"`` -> ``"Hopper"``): its returns
    are on the same scale. One that changes the reward (``"CheetahVel-v0"``) keeps its own name, which the tables
    lack, so a sweep asks for ``r_max``: HalfCheetah's 17000 says nothing about a velocity-tracking return.
    """
    if is_libero_id(env_id):
        return "LIBERO"
    found = family_of(env_id)
    if found is not None and found.reward is not None:
        return env_id.split("-v")[0]
    return base_env_id(env_id).split("-v")[0]


def check_asl_grid(asl: Sequence[int]) -> tuple[int, ...]:
    """Return the grid as ints, or raise if it is empty, not integers >= 1, or not increasing."""
    grid = tuple(asl)
    if not grid:
        raise ValueError("the ASL grid is empty")
    if any(isinstance(a, bool) or int(a) != a or a < 1 for a in grid):
        raise ValueError(f"ASL values must be integers >= 1, got {grid}")
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"the ASL grid must be strictly increasing, got {grid}")
    return tuple(int(a) for a in grid)


def frequency_averaged_score(asl: Sequence[int], mean_returns: Sequence[float], r_max: float,
                             shift: float = 0.0) -> float:
    """trapz(mean_returns + shift, asl) / (r_max * max(asl)); a single ASL gives (return + shift) / r_max."""
    grid = check_asl_grid(asl)
    values = np.asarray(mean_returns, dtype=np.float64) + shift
    if values.shape != (len(grid),):
        raise ValueError(f"need one mean return per ASL ({len(grid)}), got shape {values.shape}")
    if r_max <= 0:
        raise ValueError(f"r_max must be > 0, got {r_max}")
    if len(grid) == 1:
        return float(values[0] / r_max)
    return float(np.trapezoid(values, grid) / (r_max * grid[-1]))


@dataclass
class FASResult:
    """Returns of one agent over an ASL grid, and its FAS."""

    env_id: str
    asl: list[int]
    returns: list[list[float]]
    """Per ASL, the return of each episode."""
    fas: float
    r_max: float
    shift: float

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.returns).mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.returns).std(axis=1)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["mean_return"] = self.mean.tolist()
        return out


def fas_sweep(
    env_id: str,
    act_sequence: SequencePolicy,
    asl_grid: Sequence[int] = ASL_GRID,
    episodes: int = 10,
    seed: int = 0,
    r_max: float | None = None,
    shift: float | None = None,
    on_asl: Callable[[int, np.ndarray], None] | None = None,
) -> FASResult:
    """Evaluate a policy open loop at every ASL and compute its FAS.

    Every ASL uses the same episode seeds, so the same initial states.

    Args:
        env_id: env to evaluate on.
        act_sequence: ``(obs, length) -> [length, act_dim]`` actions.
        asl_grid: strictly increasing action-sequence lengths.
        episodes: episodes per ASL.
        seed: seed of the first episode; episode i uses ``seed + i``.
        r_max, shift: override the tables (needed for envs outside them).
        on_asl: called with ``(asl, returns)`` after each ASL, e.g. for progress display.
    """
    grid, r_max, shift = _sweep_settings(env_id, asl_grid, episodes, r_max, shift)
    all_returns = []
    for asl in grid:
        env = make(env_id, decision_interval=asl, sequence=True)
        returns, _ = run_episodes(env, lambda obs, n=asl: np.asarray(act_sequence(obs, n)).reshape(-1), episodes, seed)
        env.close()
        all_returns.append(returns.tolist())
        if on_asl is not None:
            on_asl(asl, returns)
    return _result(env_id, grid, all_returns, r_max, shift)


def _sweep_settings(env_id: str, asl_grid: Sequence[int], episodes: int, r_max: float | None,
                    shift: float | None) -> tuple[tuple[int, ...], float, float]:
    grid = check_asl_grid(asl_grid)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    family = env_family(env_id)
    if r_max is None:
        if family not in R_MAX:
            raise ValueError(f"no R_max for {env_id!r} (known: {', '.join(R_MAX)}); pass r_max explicitly")
        r_max = R_MAX[family]
    shift = RETURN_SHIFT.get(family, 0.0) if shift is None else shift
    return grid, float(r_max), float(shift)


def _result(env_id: str, grid: tuple[int, ...], returns: list[list[float]], r_max: float, shift: float) -> FASResult:
    means = np.asarray(returns).mean(axis=1)
    return FASResult(env_id=env_id, asl=list(grid), returns=returns,
                     fas=frequency_averaged_score(grid, means, r_max, shift), r_max=r_max, shift=shift)


def fas_sweep_batched(
    env_id: str,
    act_sequence: SequencePolicy,
    asl_grid: Sequence[int] = ASL_GRID,
    episodes: int = 10,
    seed: int = 0,
    r_max: float | None = None,
    shift: float | None = None,
    batch_policy: bool = True,
    backend: str = "rollout",
    threads: int | None = None,
    physics_device: str | None = None,
) -> FASResult:
    """:func:`fas_sweep` with every (ASL, episode) pair as one world of a :class:`BatchedEnv`.

    Episode ``i`` of every ASL is reset with ``seed + i``, as in :func:`fas_sweep`, and the physics matches
    Gymnasium step for step. The policy is called on batches of observations,
    ``act_sequence(obs [m, obs_dim], asl) -> [m, asl, act_dim]``, unless ``batch_policy=False``
    (see :func:`cadence.envs.batched.episodes.batched_returns`). A torch network's float32 output for a batch
    differs from its one-row output by ~1e-6, and a closed-loop task such as Hopper can amplify that over
    hundreds of steps; ``batch_policy=False`` reproduces the sequential loop's returns exactly, more slowly.
    ``backend="warp"`` runs the worlds in MuJoCo Warp on ``physics_device`` (``cuda`` for a GPU; default Warp's CPU
    device), in float32: returns agree with rollout's to float32 rounding amplified by each task's dynamics.
    """
    from cadence.envs.batched.episodes import batched_returns

    grid, r_max, shift = _sweep_settings(env_id, asl_grid, episodes, r_max, shift)
    seeds = [seed + e for _ in grid for e in range(episodes)]
    returns = batched_returns(env_id, act_sequence, seeds, np.repeat(grid, episodes), batch_policy=batch_policy,
                              backend=backend, threads=threads, physics_device=physics_device)
    return _result(env_id, grid, returns.reshape(len(grid), episodes).tolist(), r_max, shift)
