"""CIFAR-10 python batches written here (protocol 2, bytes keys) and the restricted unpickler."""
from __future__ import annotations

import codecs
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fl_lightning.data import CIFAR10, DataFileError, DataFileNotFoundError
from fl_lightning.data.cifar10 import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from fl_lightning.data.safe_pickle import UnsafePickleError, load_numpy_pickle


class Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` opcodes, as the original CIFAR-10 files were written."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump(obj: object, path: Path, py2: bool = False) -> None:
    if py2:
        import io
        buffer = io.BytesIO()
        Py2Pickler(buffer, protocol=2).dump(obj)
        path.write_bytes(buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))


def batch(n: int, offset: int) -> dict:
    rng = np.random.default_rng(offset)
    return {b"batch_label": b"training batch", b"labels": [(offset + i) % 10 for i in range(n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


def make_cifar(parent: Path, py2: bool = False) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        dump(batch(4, i), folder / f"data_batch_{i}", py2)
    dump(batch(3, 100), folder / "test_batch", py2)
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": 4}
    dump(meta, folder / "batches.meta", py2)
    return folder


@pytest.mark.parametrize("py2", [False, True])
def test_loads_batches(tmp_path: Path, py2: bool) -> None:
    folder = make_cifar(tmp_path, py2)
    train, test = CIFAR10(tmp_path).load()
    assert train.inputs.shape == (20, 3, 32, 32) and train.inputs.dtype == torch.float32
    assert test.inputs.shape == (3, 3, 32, 32)
    assert train.targets.tolist()[:4] == [1, 2, 3, 4] and test.targets.dtype == torch.long
    raw = batch(3, 100)[b"data"][1].reshape(3, 32, 32)
    green = (torch.as_tensor(raw[1], dtype=torch.float32) / 255 - CIFAR10_MEAN[1]) / CIFAR10_STD[1]
    assert torch.allclose(test.inputs[1, 1], green, atol=1e-5)
    assert torch.equal(CIFAR10(folder).load()[1].inputs, test.inputs)  # the folder itself works too
    assert CIFAR10.class_names[2] == "bird"


def test_missing_batch_is_named(tmp_path: Path) -> None:
    folder = make_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataFileNotFoundError, match="data_batch_3"):
        CIFAR10(tmp_path).load()
    with pytest.raises(DataFileNotFoundError, match="cifar-10-batches-py"):
        CIFAR10(tmp_path / "nowhere").load()


def test_malformed_batches(tmp_path: Path) -> None:
    folder = make_cifar(tmp_path)
    (folder / "data_batch_2").write_bytes(b"this is not a pickle")
    with pytest.raises(DataFileError, match="data_batch_2: not a readable pickle"):
        CIFAR10(tmp_path).load()
    dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, folder / "data_batch_2")
    with pytest.raises(DataFileError, match=r"data_batch_2: 'data' is uint8 \(4, 100\), expected uint8 \[n, 3072\]"):
        CIFAR10(tmp_path).load()
    dump({b"labels": [0] * 4}, folder / "data_batch_2")
    with pytest.raises(DataFileError, match="data_batch_2: no 'data' entry"):
        CIFAR10(tmp_path).load()
    dump({b"label_names": [b"apple"] * 10}, folder / "batches.meta")
    with pytest.raises(DataFileError, match="batches.meta: label_names"):
        CIFAR10(tmp_path).load()


class Evil:
    """Runs a shell command when unpickled by an unrestricted unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


class Rot13:
    def __reduce__(self) -> tuple:
        return codecs.encode, ("abc", "rot13")


def test_forbidden_global_is_refused_without_running(tmp_path: Path) -> None:
    folder = make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    dump({b"data": Evil(marker), b"labels": [0]}, folder / "data_batch_1")
    with pytest.raises(UnsafePickleError, match=r"data_batch_1: refusing to load global (posix|os|nt)\.system"):
        CIFAR10(tmp_path).load()
    assert not marker.exists()
    dump({b"data": Rot13()}, tmp_path / "codec")
    with pytest.raises(UnsafePickleError, match="only allowed with a str and latin1"):
        load_numpy_pickle(tmp_path / "codec")
    (tmp_path / "builtin").write_bytes(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.")
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_numpy_pickle(tmp_path / "builtin")
