"""Data-set sequences: one offline data set per task of a task sequence, as ``cadence collect --sequence`` writes
them (``<sequence>-<task index>-<kind>-v5.hdf5``, each with its task's index as ``task_ids``)."""

from __future__ import annotations

import shlex
from pathlib import Path

from cadence.envs.tasks import resolve_sequence
from cadence.replay.datasets import data_dir
from cadence.replay.errors import DatasetError

#: the data-set kinds cadence collects (cadence.collection explains each)
KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")


def canonical_sequence(name: str) -> str:
    """The sequence's own name: a family's name (``CheetahVel``, ``CheetahVel-v0``) stands for its default sequence
    (``cheetah-vel-3``). An unknown name raises ``ValueError`` listing the valid ones."""
    fam, _ = resolve_sequence(name)
    return str(fam.default_sequence) if name in (fam.name, fam.name.split("-v")[0]) else name


def sequence_file(folder: str | Path, sequence: str, index: int, kind: str) -> Path:
    """``<folder>/<sequence>-<task index>-<kind>-v5.hdf5``: task ``index``'s data set of a collected sequence."""
    return Path(folder) / f"{sequence}-{index}-{kind}-v5.hdf5"


def sequence_datasets(sequence: str, kind: str, folder: str | Path | None = None) -> list[Path]:
    """The ``kind`` data sets of a collected task sequence, in task order, from ``folder`` (default: where
    ``cadence collect`` writes, :func:`cadence.replay.datasets.data_dir`).

    Raises :class:`~cadence.replay.errors.DatasetError` (a ``ValueError``) listing the present and missing files and
    the ``cadence collect`` command that makes the rest; an unknown sequence raises ``ValueError`` listing the valid
    names, an unknown kind the valid kinds."""
    name = canonical_sequence(sequence)
    if kind not in KINDS:
        raise ValueError(f"unknown data set kind {kind!r}; kinds: {', '.join(KINDS)}")
    root = Path(folder) if folder else data_dir()
    tasks = resolve_sequence(name)[1]
    files = [sequence_file(root, name, i, kind) for i in range(len(tasks))]
    missing = [i for i, f in enumerate(files) if not f.is_file()]
    if missing:
        listed = lambda rows: ", ".join(f"{files[i].name} (task {i}: {tasks[i][0]})" for i in rows) or "none"
        present = [i for i in range(len(files)) if i not in missing]
        command = f"cadence collect --sequence {name} --kind {kind}"
        if root.resolve() != data_dir().resolve():
            command += f" --out {shlex.quote(str(root))}"
        keep = (" (it keeps the present files; give it the --size and --policy-steps they were made with)"
                if present else "")
        raise DatasetError(root, None, f"the {kind} data sets of sequence {name} are incomplete: missing "
                           f"{listed(missing)}; present: {listed(present)}. Make the rest with `{command}`{keep}")
    return files
