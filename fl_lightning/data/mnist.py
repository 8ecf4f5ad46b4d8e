"""Full MNIST (60,000 train / 10,000 test) read from the four IDX files in a local folder (downloaded on request)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fl_lightning.checks import check_bool, check_instance
from fl_lightning.data.base import FederatedDataset, TensorData
from fl_lightning.data.download import download_mnist
from fl_lightning.data.files import DataFileError, DataFileNotFoundError, find_file, open_maybe_gzip
from fl_lightning.data.mnist5k import MNIST_MEAN, MNIST_STD

#: IDX magic numbers: 0x00000803 (unsigned bytes, 3 dims) for images, 0x00000801 for labels
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The ``uint8`` array of an IDX file (optionally gzipped) whose header has ``magic``."""
    with open_maybe_gzip(path) as handle:
        raw = handle.read()
    ndim = magic & 0xFF
    if len(raw) < 4 + 4 * ndim:
        raise DataFileError(f"{path}: too short for an IDX header ({len(raw)} bytes); expected an MNIST IDX file")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataFileError(f"{path}: IDX magic number {found}, expected {magic} "
                            f"({'images' if magic == IMAGES_MAGIC else 'labels'} file, unsigned bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise DataFileError(f"{path}: header says shape {dims} ({expected} bytes with header) but the file "
                            f"has {len(raw)} bytes; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class MNIST(FederatedDataset):
    """MNIST from ``root``: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-...`` (``.gz`` ok).

    The files may lie in ``root``, ``root/raw`` or ``root/MNIST/raw`` (torchvision's layout).
    Images are normalised like :class:`MNIST5k` (mean 0.1307, std 0.3081) to ``1x28x28`` floats.
    ``download=True``: when a file is missing, torchvision's downloader fetches all four into
    ``root/MNIST/raw`` (its mirrors, md5-checked) at :meth:`load`; otherwise nothing is downloaded.
    """

    num_classes = 10
    class_names = tuple(str(d) for d in range(10))

    def __init__(self, root: str | Path, download: bool = False) -> None:
        check_instance(root, (str, Path), "root", "MNIST")
        self.root = Path(root)
        self.download = check_bool(download, "download", "MNIST")

    def _path(self, stem: str) -> Path:
        # the original files are "train-images-idx3-ubyte"; some unpackers write "train-images.idx3-ubyte"
        dotted = stem.replace("-idx", ".idx")
        names = [stem, stem + ".gz", dotted, dotted + ".gz"]
        folders = [self.root, self.root / "raw", self.root / "MNIST" / "raw"]
        return find_file(folders, names, f"MNIST({str(self.root)!r})")

    def _split(self, prefix: str) -> TensorData:
        images_path = self._path(f"{prefix}-images-idx3-ubyte")
        labels_path = self._path(f"{prefix}-labels-idx1-ubyte")
        images = read_idx(images_path, IMAGES_MAGIC)
        labels = read_idx(labels_path, LABELS_MAGIC)
        if images.shape[1:] != (28, 28):
            raise DataFileError(f"{images_path}: images of shape {images.shape[1:]}, expected 28x28")
        if len(images) != len(labels):
            raise DataFileError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
                                "labels; the two files must belong together")
        if len(labels) and labels.max() > 9:
            raise DataFileError(f"{labels_path}: label {int(labels.max())} outside 0..9")
        x = torch.from_numpy(images.astype(np.float32)).reshape(-1, 1, 28, 28).div_(255.0)
        x.sub_(MNIST_MEAN).div_(MNIST_STD)
        return TensorData(x, torch.from_numpy(labels.astype(np.int64)))

    def _missing(self) -> bool:
        try:
            for stem in FILES:
                self._path(stem)
        except DataFileNotFoundError:
            return True
        return False

    def load(self) -> tuple[TensorData, TensorData]:
        """Normalised ``1x28x28`` float tensors and int64 labels: the official train and test sets."""
        if self.download and self._missing():
            download_mnist(self.root)
        try:
            return self._split("train"), self._split("t10k")
        except DataFileNotFoundError as err:
            if self.download:
                raise
            raise DataFileNotFoundError(f"{err}; pass download=True to fetch MNIST with torchvision") from None

    def __repr__(self) -> str:
        return f"MNIST(root={str(self.root)!r})"
