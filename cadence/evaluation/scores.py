"""D4RL-style normalised scores: 100 * (R - R_random) / (R_expert - R_random).

Two tables, never mixed (docs/ARCHITECTURE.md, "Offline data sets"):
- cadence's own references for Gymnasium v5, measured by ``cadence collect`` and kept with how each was
  measured in ``reference_scores.json`` next to this module;
- D4RL's published references, which apply only to D4RL's Gym-v2 files (``d4rl:hopper-medium-v2``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cadence.io import atomic_write_json

#: cadence's measured references: {env_id: {"random"|"expert": {"return": R, "how": ..., ...}}}.
REFERENCE_TABLE = Path(__file__).with_name("reference_scores.json")

#: D4RL's published references (d4rl/infos.py, REF_MIN_SCORE / REF_MAX_SCORE), for the Gym-v2 datasets only.
D4RL_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}

KINDS = ("random", "expert")


def reference_table(path: str | Path = REFERENCE_TABLE) -> dict[str, dict[str, dict[str, Any]]]:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def record_reference(env_id: str, kind: str, value: float, how: dict[str, Any],
                     path: str | Path = REFERENCE_TABLE) -> Path:
    """Store a measured reference return, with how it was measured, in the table (atomically)."""
    if kind not in KINDS:
        raise ValueError(f"reference kind must be one of {KINDS}, got {kind!r}")
    if not np.isfinite(value):
        raise ValueError(f"reference return must be finite, got {value}")
    table = reference_table(path)
    table.setdefault(env_id, {})[kind] = {"return": float(value), **how}
    return atomic_write_json(path, dict(sorted(table.items())))


def references(name: str, path: str | Path = REFERENCE_TABLE) -> tuple[float, float]:
    """``(R_random, R_expert)`` for an env id (``Hopper-v5``), a cadence data set name (``hopper-medium``)
    or a D4RL name (``d4rl:hopper-medium-v2``, D4RL's published Gym-v2 references)."""
    if name.startswith("d4rl:"):
        family = name.removeprefix("d4rl:").split("-")[0]
        if family not in D4RL_REFERENCE_SCORES:
            raise ValueError(f"no D4RL reference scores for {name!r}; known: {', '.join(D4RL_REFERENCE_SCORES)}")
        return D4RL_REFERENCE_SCORES[family]
    table = reference_table(path)
    env_id = name if name in table else _env_of_dataset(name, table)
    entry = table.get(env_id, {})
    missing = [k for k in KINDS if k not in entry]
    if missing:
        raise ValueError(f"no cadence {missing[0]} reference for {env_id} in {path}; measure it with "
                         f"`cadence collect --env {env_id} --kind {missing[0]} --record-reference`")
    return entry["random"]["return"], entry["expert"]["return"]


def _env_of_dataset(name: str, table: dict[str, Any]) -> str:
    family = name.split("-")[0].lower()
    for env_id in table:
        if env_id.split("-")[0].lower() == family:
            return env_id
    return name


def normalized_score(name: str, returns: float | np.ndarray, path: str | Path = REFERENCE_TABLE) -> np.ndarray:
    """100 * (R - R_random) / (R_expert - R_random), with the references of ``name`` (see :func:`references`)."""
    low, high = references(name, path)
    return 100.0 * (np.asarray(returns, dtype=float) - low) / (high - low)
