"""Errors of the replay layer."""

from __future__ import annotations

import os


class DatasetError(ValueError):
    """A data set that is missing, unreadable or malformed; the message names the file, the key and the problem."""

    def __init__(self, path: str | os.PathLike, key: str | None, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        where = f"{path}" + (f", key {key!r}" if key else "")
        super().__init__(f"{where}: {problem}")
