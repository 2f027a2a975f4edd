"""Evaluation: FAS sweeps, plots."""

from cadence.evaluation.fas import (
    ASL_GRID,
    PUBLISHED_SAC_J_FAS,
    R_MAX,
    RETURN_SHIFT,
    FASResult,
    check_asl_grid,
    env_family,
    fas_sweep,
    frequency_averaged_score,
)

__all__ = [
    "ASL_GRID",
    "PUBLISHED_SAC_J_FAS",
    "RETURN_SHIFT",
    "R_MAX",
    "FASResult",
    "check_asl_grid",
    "env_family",
    "fas_sweep",
    "frequency_averaged_score",
]
