"""Helpers shared by the datasets that read user-supplied files."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO


class DataFileError(ValueError):
    """A data file is missing or not in the expected format; the message names the file."""


class DataFileNotFoundError(DataFileError, FileNotFoundError):
    """A data file the dataset needs does not exist; the message says where it was looked for."""


def open_maybe_gzip(path: Path, mode: str = "rb", newline: str | None = None) -> IO:
    """Open ``path`` (UTF-8 in text mode), decompressing it when it starts with the gzip magic bytes."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    text = {"encoding": "utf-8", "newline": newline} if "t" in mode else {}
    if gzipped:
        return gzip.open(path, mode, **text)
    return open(path, mode, **text)


def find_file(folders: list[Path], names: list[str], what: str) -> Path:
    """The first existing ``folder / name``; otherwise an error listing every place looked at."""
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    tried = ", ".join(str(folder / names[0]) for folder in folders)
    raise DataFileNotFoundError(f"{what}: file not found; looked for {' / '.join(names)} in {tried}")
