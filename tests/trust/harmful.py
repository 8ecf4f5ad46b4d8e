"""Callables a hostile recipe might name: each leaves a file in ``MARKS`` (set by the test) when it runs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from torch.utils.data import Dataset

#: where the marks go; a test points it at its own folder through the environment
MARKS = "FL_TEST_MARKS"


def _mark(what: str) -> None:
    folder = Path(os.environ.get(MARKS, "."))
    (folder / f"mark-{what}").write_text(what)


def leave_mark(*args: Any, **kwargs: Any) -> int:
    """A plain function, as ``os.system`` is."""
    _mark("function")
    return 0


class MarkOnInit:
    """A class that is no plug-in; building it is the harm."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _mark("class")


class MarkOnCall:
    """Built harmlessly; calling it leaves the mark (what a callback or a transform would do)."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        _mark("call")


def factory(*args: Any, **kwargs: Any) -> "MarkOnCall":
    """A function that returns an object: jsonargparse accepts such factories in class_path."""
    _mark("factory")
    return MarkOnCall()


class FilesDataset(Dataset):
    """A map-style dataset that reads each sample with ``loader``, as torchvision's ``ImageFolder`` does."""

    def __init__(self, root: str = ".", loader: Callable[[str], Any] = str) -> None:
        self.root, self.loader = root, loader

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> Any:
        return self.loader(f"{self.root}/{index}")
