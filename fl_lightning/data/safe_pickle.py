"""A restricted unpickler for numpy-array pickles such as CIFAR-10's: it never imports arbitrary globals.

Project rule: no pickle from a user-supplied data file may run code. ``pickle`` resolves every
class or function a file names through :meth:`pickle.Unpickler.find_class`; here that resolves
only numpy's array reconstruction and a latin-1-only ``_codecs.encode`` (what Python 3 writes
for ``bytes`` at protocol 2), and refuses everything else before anything is called.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fl_lightning.data.files import DataFileError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


class UnsafePickleError(DataFileError, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing from it was executed."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to latin-1, the only use Python 3's protocol-2 ``bytes`` needs."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode is only allowed with a str and latin1, got {encoding!r}")
    return text.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` returns only numpy array reconstruction helpers."""

    def __init__(self, file: BinaryIO, *, source: str = "<pickle>", encoding: str = "bytes") -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allow-listed global; refuse any other before it is imported."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global {module}.{name} from a data pickle; only numpy "
                "arrays, dicts, lists, numbers and strings are allowed. Is this really a CIFAR-10 batch file?"
            ) from None


def load_numpy_pickle(path: Path, encoding: str = "bytes") -> Any:
    """Unpickle ``path`` with :class:`NumpyOnlyUnpickler`; any failure names the file."""
    with open(path, "rb") as handle:
        try:
            return NumpyOnlyUnpickler(handle, source=str(path), encoding=encoding).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # pickle raises many types on malformed input
            raise DataFileError(f"{path}: not a readable pickle ({type(err).__name__}: {err}); "
                                         "expected a pickled numpy data file such as a CIFAR-10 batch") from err
