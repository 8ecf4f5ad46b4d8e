"""MNIST from IDX files written here with struct/numpy (plain and gzipped)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fl_lightning.data import MNIST, DataFileError, DataFileNotFoundError


def write_idx(path: Path, magic: int, array: np.ndarray, compress: bool = False) -> None:
    """An IDX file: big-endian magic, big-endian dims, then the unsigned bytes."""
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def make_mnist(root: Path, n_train: int = 12, n_test: int = 5, compress: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    data = {"train_x": rng.integers(0, 256, (n_train, 28, 28)), "train_y": np.arange(n_train) % 10,
            "test_x": rng.integers(0, 256, (n_test, 28, 28)), "test_y": (np.arange(n_test) + 3) % 10}
    suffix = ".gz" if compress else ""
    write_idx(root / f"train-images-idx3-ubyte{suffix}", 2051, data["train_x"], compress)
    write_idx(root / f"train-labels-idx1-ubyte{suffix}", 2049, data["train_y"], compress)
    write_idx(root / f"t10k-images-idx3-ubyte{suffix}", 2051, data["test_x"], compress)
    write_idx(root / f"t10k-labels-idx1-ubyte{suffix}", 2049, data["test_y"], compress)
    return data


@pytest.mark.parametrize("compress", [False, True])
def test_loads_idx(tmp_path: Path, compress: bool) -> None:
    data = make_mnist(tmp_path, compress=compress)
    train, test = MNIST(tmp_path).load()
    assert train.inputs.shape == (12, 1, 28, 28) and train.inputs.dtype == torch.float32
    assert test.inputs.shape == (5, 1, 28, 28)
    assert train.targets.dtype == torch.long and train.targets.tolist() == data["train_y"].tolist()
    expected = (torch.as_tensor(data["test_x"][2], dtype=torch.float32) / 255 - 0.1307) / 0.3081
    assert torch.allclose(test.inputs[2, 0], expected, atol=1e-5)


def test_torchvision_layout(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    make_mnist(raw)
    assert len(MNIST(tmp_path).load()[0]) == 12


def test_missing_file_is_named(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataFileNotFoundError, match="t10k-labels-idx1-ubyte"):
        MNIST(tmp_path).load()


def test_wrong_magic(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", 2051, np.zeros((12, 28, 28)))
    with pytest.raises(DataFileError, match=r"train-labels-idx1-ubyte: IDX magic number 2051, expected 2049"):
        MNIST(tmp_path).load()


def test_truncated(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte: header says shape"):
        MNIST(tmp_path).load()


def test_count_mismatch(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", 2049, np.zeros(11))
    with pytest.raises(DataFileError, match="12 images but .* has 11 labels"):
        MNIST(tmp_path).load()
