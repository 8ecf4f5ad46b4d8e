"""MNIST/CIFAR10(download=True) through torchvision's downloader, served by a loopback HTTP server only."""
from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from fl_lightning.data import CIFAR10, MNIST, DataFileNotFoundError
from fl_lightning.data.cifar10 import CIFAR10_CLASSES

torchvision_datasets = pytest.importorskip("torchvision.datasets")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from its directory and keeps a list of the paths asked for."""

    requested: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.requested.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def loopback_server(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """``(base URL, requested paths)`` of a server on 127.0.0.1 (free port) serving ``folder``; stops on exit."""
    requested: list[str] = []
    handler = type("Handler", (QuietHandler,), {"requested": requested})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not go through a proxy configured in the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def idx_gz(array: np.ndarray, magic: int) -> bytes:
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    return gzip.compress(raw)


def mnist_fixture(folder: Path) -> tuple[list[tuple[str, str]], dict[str, np.ndarray]]:
    """The four gzipped IDX files of a 10 + 4 image MNIST, and the ``(filename, md5)`` table for them."""
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte": (rng.integers(0, 256, (10, 28, 28)), 2051),
              "train-labels-idx1-ubyte": ((np.arange(10) * 3) % 10, 2049),
              "t10k-images-idx3-ubyte": (rng.integers(0, 256, (4, 28, 28)), 2051),
              "t10k-labels-idx1-ubyte": (np.array([7, 1, 0, 4]), 2049)}
    table = []
    for stem, (array, magic) in arrays.items():
        path = folder / f"{stem}.gz"
        path.write_bytes(idx_gz(array, magic))
        table.append((path.name, md5(path)))
    return table, {k: v[0] for k, v in arrays.items()}


def test_mnist_downloads_from_the_next_mirror_and_reads_the_files(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served" / "mnist"
    served.mkdir(parents=True)
    table, arrays = mnist_fixture(served)
    with loopback_server(tmp_path / "served") as (url, requested):
        monkeypatch.setattr(torchvision_datasets.MNIST, "mirrors", [f"{url}missing/", f"{url}mnist/"])
        monkeypatch.setattr(torchvision_datasets.MNIST, "resources", table)
        root = tmp_path / "data"
        train, test = MNIST(root, download=True).load()
        assert any(p.startswith("/missing/") for p in requested)  # the first mirror 404s, the second serves
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()  # torchvision's layout, extracted
    assert train.targets.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert test.targets.tolist() == [7, 1, 0, 4] and train.inputs.shape == (10, 1, 28, 28)
    expected = (torch.as_tensor(arrays["t10k-images-idx3-ubyte"][3], dtype=torch.float32) / 255 - 0.1307) / 0.3081
    assert torch.allclose(test.inputs[3, 0], expected, atol=1e-5)
    # the files are there now: a second load reads them without any server
    assert torch.equal(MNIST(root, download=True).load()[0].inputs, train.inputs)


def test_mnist_wrong_checksum_fails_and_no_download_by_default(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    table, _ = mnist_fixture(served)
    with pytest.raises(DataFileNotFoundError, match="pass download=True"):
        MNIST(tmp_path / "data").load()
    with loopback_server(served) as (url, _):
        monkeypatch.setattr(torchvision_datasets.MNIST, "mirrors", [url])
        monkeypatch.setattr(torchvision_datasets.MNIST, "resources", [(table[0][0], "0" * 32)] + table[1:])
        with pytest.raises(RuntimeError, match="could not fetch train-images-idx3-ubyte.gz"):
            MNIST(tmp_path / "data", download=True).load()


def cifar_archive(folder: Path) -> tuple[Path, np.ndarray]:
    """``cifar-10-python.tar.gz`` holding five 3-image training batches, a 2-image test batch and the meta file."""
    rng = np.random.default_rng(2)
    members: dict[str, dict] = {}
    for i in range(1, 6):
        members[f"data_batch_{i}"] = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                                      b"labels": [(i + j) % 10 for j in range(3)]}
    test_data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    members["test_batch"] = {b"data": test_data, b"labels": [9, 2]}
    members["batches.meta"] = {b"label_names": [c.encode() for c in CIFAR10_CLASSES]}
    path = folder / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            blob = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return path, test_data


def test_cifar10_downloads_and_extracts_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    archive, test_data = cifar_archive(served)
    with loopback_server(served) as (url, requested):
        monkeypatch.setattr(torchvision_datasets.CIFAR10, "url", f"{url}cifar-10-python.tar.gz")
        monkeypatch.setattr(torchvision_datasets.CIFAR10, "tgz_md5", md5(archive))
        train, test = CIFAR10(tmp_path / "data", download=True).load()
        assert set(requested) == {"/cifar-10-python.tar.gz"}  # torchvision also probes it for redirects
    assert train.inputs.shape == (15, 3, 32, 32) and test.targets.tolist() == [9, 2]
    red = torch.as_tensor(test_data[1, :1024].reshape(32, 32), dtype=torch.float32) / 255
    assert torch.allclose(test.inputs[1, 0], (red - 0.4914) / 0.2470, atol=1e-5)
    assert (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_cifar10_bad_checksum_and_no_download_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    cifar_archive(served)
    with pytest.raises(DataFileNotFoundError, match="pass download=True"):
        CIFAR10(tmp_path / "data").load()
    with loopback_server(served) as (url, _):
        monkeypatch.setattr(torchvision_datasets.CIFAR10, "url", f"{url}cifar-10-python.tar.gz")
        monkeypatch.setattr(torchvision_datasets.CIFAR10, "tgz_md5", "0" * 32)
        with pytest.raises(RuntimeError, match="CIFAR10 download: .*corrupted"):
            CIFAR10(tmp_path / "data", download=True).load()
    with pytest.raises(TypeError, match="CIFAR10: download must be True or False"):
        CIFAR10(tmp_path, download="yes")
