"""Rewrite a wheel with LZMA-compressed members: about 30% smaller than deflate for large shared libraries, and
still a valid wheel (RECORD hashes the uncompressed files; pip reads LZMA members through zipfile).

    python benchmarks/device/repack_lzma.py IN.whl OUT.whl
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path


def repack(source: Path, target: Path) -> Path:
    """``source`` rewritten to ``target`` (same name inside, same order), every member LZMA-compressed."""
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(partial, "w", zipfile.ZIP_LZMA) as dst:
        for info in src.infolist():
            with src.open(info) as data, dst.open(_copy(info), "w", force_zip64=info.file_size > 2**31) as out:
                shutil.copyfileobj(data, out, 1 << 20)
    partial.replace(target)
    return target


def _copy(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    new = zipfile.ZipInfo(info.filename, info.date_time)
    new.external_attr, new.compress_type = info.external_attr, zipfile.ZIP_LZMA
    return new


if __name__ == "__main__":
    print(repack(Path(sys.argv[1]), Path(sys.argv[2])))
