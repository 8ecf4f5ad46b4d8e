"""Fetch MNIST and CIFAR-10 with torchvision's own downloader, mirrors and checksums (what users already have).

Only the download and checksum come from torchvision; the files are then read by this package's
readers (CIFAR-10's pickles through the restricted unpickler, never ``pickle.load``).
"""
from __future__ import annotations

from pathlib import Path


def _torchvision_datasets():
    try:
        import torchvision.datasets as datasets
        from torchvision.datasets.utils import download_and_extract_archive
    except ImportError as err:  # pragma: no cover - torchvision is a dependency
        raise ImportError("download=True needs torchvision (pip install torchvision), or put the files in root "
                          "yourself and leave download=False") from err
    return datasets, download_and_extract_archive


def download_mnist(root: Path) -> Path:
    """Download the four MNIST IDX files into ``root/MNIST/raw`` (torchvision's layout); returns that folder.

    Each file is tried from every mirror of ``torchvision.datasets.MNIST.mirrors`` in turn and
    checked against the md5 of ``MNIST.resources``.
    """
    from urllib.error import URLError

    datasets, download_and_extract_archive = _torchvision_datasets()
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for filename, md5 in datasets.MNIST.resources:
        errors = []
        for mirror in datasets.MNIST.mirrors:
            try:
                download_and_extract_archive(f"{mirror}{filename}", download_root=str(raw), filename=filename, md5=md5)
                break
            except (RuntimeError, URLError, OSError) as err:
                errors.append(f"{mirror}{filename}: {err}")
        else:
            raise RuntimeError(f"MNIST download: could not fetch {filename} into {raw}:\n" + "\n".join(errors))
    return raw


def download_cifar10(root: Path) -> Path:
    """Download and extract ``cifar-10-python.tar.gz`` into ``root`` (``torchvision.datasets.CIFAR10.url``, md5 checked)."""
    datasets, download_and_extract_archive = _torchvision_datasets()
    root.mkdir(parents=True, exist_ok=True)
    tv = datasets.CIFAR10
    try:
        download_and_extract_archive(tv.url, download_root=str(root), filename=tv.filename, md5=tv.tgz_md5)
    except (RuntimeError, OSError) as err:
        raise RuntimeError(f"CIFAR10 download: could not fetch {tv.url} into {root}: {err}") from err
    return root / tv.base_folder
