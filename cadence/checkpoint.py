"""Checkpoint files: one bundle of named parts, written atomically and read without unpickling objects.

Every file cadence writes under ``checkpoints/`` is loaded with ``torch.load(..., weights_only=True)``, so
opening a checkpoint someone shared cannot run code. Bundles therefore hold tensors, numbers, strings, lists,
tuples and dicts only; NumPy arrays (generator states, physics states) are stored as tensors under an
``{"__ndarray__": tensor}`` marker and come back as arrays.

A training checkpoint (``last.pt``) carries ``layout`` = :data:`LAYOUT_VERSION` and these parts:
``algo, agent, buffer, rng, counters, env, hooks`` (and ``model`` for loops that learn one in the run).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadence.io import atomic_torch_save

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
DEPLOY = "agent.pt"
#: 1: the bundles of cadence before the loops layer (pickled NumPy objects, loop-specific keys); 2: named parts
LAYOUT_VERSION = 2
#: the parts every training checkpoint holds; each loop adds its own (``env``; ``model`` and ``generator``)
BUNDLE_PARTS = ("algo", "agent", "buffer", "rng", "counters", "hooks")
_NDARRAY = "__ndarray__"
#: the only globals a layout-1 checkpoint pickled: NumPy arrays, dtypes and scalars
_NUMPY_GLOBALS = ("numpy.", "_codecs.encode")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, incomplete, of another layout, or unsafe to open."""


def checkpoint_path(run_dir: str | Path, name: str = LAST) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / name


def to_safe(obj: Any) -> Any:
    """``obj`` with NumPy arrays and scalars replaced by what ``weights_only`` loading accepts."""
    if isinstance(obj, np.ndarray):
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_safe(v) for v in obj)
    return obj


def from_safe(obj: Any) -> Any:
    """Undo :func:`to_safe`: marked tensors become NumPy arrays again."""
    if isinstance(obj, dict):
        if set(obj) == {_NDARRAY}:
            return obj[_NDARRAY].numpy()
        return {k: from_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_safe(v) for v in obj)
    return obj


def save_checkpoint(run_dir: str | Path, bundle: dict[str, Any], name: str = LAST) -> Path:
    """Write ``bundle`` atomically to ``run_dir/checkpoints/name``, stamped with the layout version."""
    return atomic_torch_save(checkpoint_path(run_dir, name), to_safe({"layout": LAYOUT_VERSION, **bundle}))


def load_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``; a file holding pickled objects is refused, never executed."""
    path = Path(path)
    try:
        return from_safe(torch.load(path, map_location="cpu", weights_only=True))
    except pickle.UnpicklingError as e:
        unsafe = _unsafe_globals(path)
        if unsafe and all(g.startswith(_NUMPY_GLOBALS) for g in unsafe):
            raise CheckpointError(
                f"{path} was written by an older cadence (checkpoint layout version 1, with pickled NumPy objects); "
                f"this cadence reads layout version {LAYOUT_VERSION} and never unpickles objects. Train the run "
                "again, or load the file with an older cadence") from None
        if unsafe:
            raise CheckpointError(f"{path} holds pickled objects ({', '.join(unsafe)}); cadence loads checkpoints "
                                  "with weights_only=True and refuses them rather than running their code") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({str(e).splitlines()[0]})") from None
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e})") from None


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a checkpoint would import, read from its pickle without executing it."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return []


def load_checkpoint(run_dir: str | Path, name: str = LAST, required: tuple[str, ...] = ("algo",)) -> dict[str, Any]:
    """Read a bundle, raising :class:`CheckpointError` if it is missing, corrupt, unsafe or lacks ``required``
    keys. A bundle that names a ``layout`` must be of :data:`LAYOUT_VERSION`."""
    path = checkpoint_path(run_dir, name)
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint in {run_dir}: expected {path}")
    bundle = load_file(path)
    if not isinstance(bundle, dict):
        raise CheckpointError(f"checkpoint {path} is not a cadence checkpoint bundle")
    layout = bundle.get("layout", LAYOUT_VERSION if "train_state" not in bundle else 1)
    if layout != LAYOUT_VERSION:
        raise CheckpointError(f"checkpoint {path} has layout version {layout}; this cadence reads layout version "
                              f"{LAYOUT_VERSION}. Train the run again, or use the cadence version that wrote it")
    missing = [k for k in required if k not in bundle]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    return bundle
