"""Every recipe's config keys, defaults and docs without importing torch: what ``--help``, ``cadence config`` and the
CLI's argument checks read, so they answer in a fraction of a second.

The recipes' config classes live beside their torch code, so reading them imports torch, scikit-learn and SciPy
(seconds). :func:`schema` reads them once per version of cadence's source and keeps the result as JSON in a cache
folder (``$CADENCE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cadence``, else ``~/.cache/cadence``); a changed source file
changes the cache's name, so the cache never describes other code than the one running.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

#: bump when the cached layout changes
_LAYOUT = 1


def cache_dir() -> Path:
    """Where the schema cache lives."""
    if os.environ.get("CADENCE_CACHE_DIR"):
        return Path(os.environ["CADENCE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cadence"


def source_hash() -> str:
    """A digest of cadence's own Python source (every ``.py`` file of the package) and the Python version."""
    root = Path(__file__).resolve().parent
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{_LAYOUT} {sys.version_info[:2]}".encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build() -> dict[str, Any]:
    """The schema, read from the recipes (imports torch): ``{"algos": {algo: {...}}, "teachers": [...]}``. Per algo:
    ``offline``, ``continual``, ``sections`` (``{"train": [field, ...], "agent": [...]}``, each field ``{"name",
    "default"`` (its TOML text, None when unset) ``, "doc"}``) and ``env_defaults`` (env id -> section -> key ->
    value, the per-env defaults of :data:`cadence.recipes.ONLINE_ENV_DEFAULTS`)."""
    from cadence.config import section_fields
    from cadence.curricula import LAYOUT_TEACHERS, TEACHERS
    from cadence.recipes import ONLINE_ENV_DEFAULTS, RECIPES

    algos = {}
    for name, spec in RECIPES.items():
        sections = {"train": spec.train_config_cls, "agent": spec.config_cls}
        algos[name] = {
            "offline": spec.offline, "continual": spec.continual,
            "sections": {s: [{"name": n, "default": d, "doc": doc} for n, d, doc in section_fields(cls)]
                         for s, cls in sections.items()},
            "env_defaults": {env: spec.env_defaults(env) for env in ONLINE_ENV_DEFAULTS if spec.env_defaults(env)},
        }
    return {"algos": algos, "teachers": [*TEACHERS, *LAYOUT_TEACHERS]}


_MEMO: dict[str, Any] = {}


def schema() -> dict[str, Any]:
    """The schema (:func:`build`), from the cache when it matches the running source, else built and cached."""
    if "schema" in _MEMO:
        return _MEMO["schema"]
    path = cache_dir() / f"schema-{source_hash()}.json"
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        found = None
    if found is None:
        found = build()
        try:
            from cadence.io import atomic_write_json

            for old in path.parent.glob("schema-*.json"):  # other versions' (an edited source): never read again
                old.unlink(missing_ok=True)
            atomic_write_json(path, found)
        except OSError:  # a read-only home: build it each time (slow, still right)
            pass
    _MEMO["schema"] = found
    return found


def algo_schema(algo: str) -> dict[str, Any]:
    return schema()["algos"][algo]


def field_names(algo: str) -> dict[str, list[str]]:
    """``{"train": [names], "agent": [names]}`` of ``algo``'s config."""
    return {s: [f["name"] for f in fields] for s, fields in algo_schema(algo)["sections"].items()}


def env_defaults(algo: str, env: str | None) -> dict[str, dict[str, Any]]:
    """The per-env defaults ``algo`` takes on ``env`` (``{}`` for none)."""
    return algo_schema(algo)["env_defaults"].get(env or "", {}) if env else {}
