"""Atomic round checkpoints, loaded with ``weights_only=True`` (no arbitrary pickle)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "last.ckpt"
FORMAT_VERSION = 1


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to a temporary file beside ``path``, then rename it over ``path``.

    A kill during the write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save({"format_version": FORMAT_VERSION, **state}, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely; a missing or foreign file gives an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable fl_lightning checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not an fl_lightning checkpoint (format {FORMAT_VERSION} expected)")
    return state


#: what a run writes into its folder: a checkpoint, TensorBoard events, CSV metrics, recorded hyper-parameters
RUN_FILE_PATTERNS = (f"checkpoints/{CHECKPOINT_NAME}", "events.out.tfevents.*", "metrics.csv", "hparams.yaml")


def run_files(folder: str | Path) -> list[Path]:
    """The files in ``folder`` that show a run already wrote there (empty for a new or empty folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(path for pattern in RUN_FILE_PATTERNS for path in folder.glob(pattern) if path.is_file())


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the ``.tmp-*`` files a write killed half-way left in ``folder``; returns them.

    Only call it while holding the folder's lock: another process's write in progress looks the same.
    """
    folder = Path(folder)
    stale = sorted(folder.glob(".tmp-*.ckpt")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_compatible(saved: dict[str, Any], current: dict[str, Any], path: str | Path) -> None:
    """Raise ``ValueError`` naming what differs between a checkpoint's run and the current one."""
    labels = {"fingerprint": "data partition", "layout": "model shape", "aggregator": "aggregator"}
    for key, label in labels.items():
        if saved.get(key) != current.get(key):
            raise ValueError(f"checkpoint {path} was written by a run with a different {label}: "
                             f"{_short(saved.get(key))} vs now {_short(current.get(key))}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."
