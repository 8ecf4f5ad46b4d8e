"""CIFAR-10 from the "python version" batch files in a local folder (downloaded on request), read without executing pickles."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_lightning.checks import check_bool, check_instance
from fl_lightning.data.base import FederatedDataset, TensorData
from fl_lightning.data.download import download_cifar10
from fl_lightning.data.files import DataFileError, DataFileNotFoundError
from fl_lightning.data.safe_pickle import load_numpy_pickle

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: per-channel mean and standard deviation of the 50,000 training images (pixels scaled to [0, 1])
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


class CIFAR10(FederatedDataset):
    """CIFAR-10 from ``root`` (the ``cifar-10-batches-py`` folder or its parent): 50,000 train, 10,000 test.

    Reads ``data_batch_1..5`` and ``test_batch`` with a restricted unpickler (numpy arrays only,
    see :mod:`fl_lightning.data.safe_pickle`); ``batches.meta`` is checked when present. Images
    become ``3x32x32`` floats normalised per channel. ``download=True``: when a batch file is
    missing, torchvision's downloader fetches and extracts ``cifar-10-python.tar.gz`` (md5-checked)
    into ``root`` at :meth:`load`; otherwise nothing is downloaded.
    """

    num_classes = 10
    class_names = CIFAR10_CLASSES

    def __init__(self, root: str | Path, download: bool = False) -> None:
        check_instance(root, (str, Path), "root", "CIFAR10")
        self.root = Path(root)
        self.download = check_bool(download, "download", "CIFAR10")

    @property
    def folder(self) -> Path:
        """The folder holding the batch files."""
        if (self.root / FOLDER).is_dir():
            return self.root / FOLDER
        if (self.root / "test_batch").is_file() or self.root.name == FOLDER:
            return self.root
        raise DataFileNotFoundError(f"CIFAR10({str(self.root)!r}): no {FOLDER} folder and no test_batch file there; "
                            f"give the extracted {FOLDER} folder (data_batch_1..5, test_batch) or its parent")

    def _batch(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        path = self.folder / name
        if not path.is_file():
            raise DataFileNotFoundError(f"{path}: file not found; expected the CIFAR-10 python batch {name!r}")
        batch = load_numpy_pickle(path)
        data, labels = _field(batch, "data", path), _field(batch, "labels", path)
        data = np.asarray(data)
        labels = np.asarray(labels)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataFileError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [n, 3072]")
        if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataFileError(f"{path}: 'labels' has shape {labels.shape} ({labels.dtype}), "
                                f"expected {len(data)} integer labels")
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise DataFileError(f"{path}: labels outside 0..9")
        return data, labels

    def _check_meta(self) -> None:
        path = self.folder / "batches.meta"
        if not path.is_file():
            return
        names = _field(load_numpy_pickle(path), "label_names", path)
        decoded = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
        if decoded != CIFAR10_CLASSES:
            raise DataFileError(f"{path}: label_names {decoded} differ from CIFAR-10's {CIFAR10_CLASSES}; "
                                "is this CIFAR-100 or another dataset?")

    def _missing(self) -> bool:
        try:
            return not all((self.folder / name).is_file() for name in (*TRAIN_BATCHES, "test_batch"))
        except DataFileNotFoundError:
            return True

    def load(self) -> tuple[TensorData, TensorData]:
        """Normalised ``3x32x32`` float tensors and int64 labels: the official train and test sets."""
        if self.download and self._missing():
            download_cifar10(self.root)
        try:
            return self._load()
        except DataFileNotFoundError as err:
            if self.download:
                raise
            raise DataFileNotFoundError(f"{err}; pass download=True to fetch CIFAR-10 with torchvision") from None

    def _load(self) -> tuple[TensorData, TensorData]:
        self._check_meta()
        parts = [self._batch(name) for name in TRAIN_BATCHES]
        train = _to_tensors(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        return train, _to_tensors(*self._batch("test_batch"))

    def __repr__(self) -> str:
        return f"CIFAR10(root={str(self.root)!r})"


def _field(batch: Any, key: str, path: Path) -> Any:
    """``batch[key]`` whether the pickle's keys are ``bytes`` (Python 2) or ``str``."""
    if not isinstance(batch, dict):
        raise DataFileError(f"{path}: holds a {type(batch).__name__}, expected a dict (CIFAR-10 batch)")
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise DataFileError(f"{path}: no {key!r} entry (keys: {sorted(map(repr, batch))}); expected a CIFAR-10 batch")


def _to_tensors(data: np.ndarray, labels: np.ndarray) -> TensorData:
    """Rows of 1024 red, 1024 green, 1024 blue bytes -> normalised ``[n, 3, 32, 32]`` floats."""
    x = torch.from_numpy(np.require(data, requirements=["C", "W"])).reshape(-1, 3, 32, 32).float().div_(255.0)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    x.sub_(mean).div_(std)
    return TensorData(x, torch.from_numpy(labels.astype(np.int64, copy=True)))
