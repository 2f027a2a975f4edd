"""The repository stands alone: no tracked file cites a document outside it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: spelled in two parts so that this file does not cite it itself
OUTSIDE = ("DESIGN" + ".md", "../" + "shared/")


def tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [ROOT / n for n in names.decode().split("\0") if n]
    return [p for p in paths if p.is_file() and p.suffix in {".py", ".md", ".toml", ".txt", ".cfg", ".yml", ".yaml"}
            or p.name == "Makefile"]


def test_no_tracked_file_cites_a_document_outside_the_repository():
    citing = {str(p.relative_to(ROOT)): [s for s in OUTSIDE if s in p.read_text(errors="replace")]
              for p in tracked_text_files()}
    citing = {name: found for name, found in citing.items() if found}
    assert not citing, f"these files cite documents outside the repository (point to docs/ARCHITECTURE.md): {citing}"
