"""What a map-style dataset's sample holds: its input, its label, and whether reading it twice gives the same.

A sample is ``(input, label, ...)`` (torchvision, ``TensorDataset``, most user classes) or a
mapping such as a Hugging Face row in torch format (``{"image": ..., "label": ...}``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

#: keys tried, in order, for a mapping sample's input and label when none is named
INPUT_KEYS = ("image", "img", "pixel_values", "input", "inputs", "x", "features", "input_ids", "data")
TARGET_KEYS = ("label", "labels", "target", "targets", "y", "class")

#: torchvision transforms that give the same output every time for the same input
DETERMINISTIC_TRANSFORMS = frozenset({
    "ToTensor", "PILToTensor", "ToImage", "ToPureTensor", "ToDtype", "ConvertImageDtype", "Normalize",
    "Resize", "CenterCrop", "Grayscale", "Pad", "ToPILImage", "Identity",
})


class SampleFormatError(ValueError):
    """A sample is not ``(input, label)`` or a mapping with recognisable keys; the message says what to pass."""


def pick(sample: Any, part: str, key: str | None, owner: str) -> Any:
    """The ``part`` (``"input"`` or ``"target"``) of ``sample``, by ``key`` for mappings."""
    if isinstance(sample, Mapping):
        keys = (key,) if key is not None else (INPUT_KEYS if part == "input" else TARGET_KEYS)
        for candidate in keys:
            if candidate in sample:
                return sample[candidate]
        raise SampleFormatError(f"{owner}: a sample is a mapping with keys {sorted(map(str, sample))} and none "
                                f"of them is its {part} (tried {', '.join(keys)}); pass {part}_key=<the key>")
    if isinstance(sample, Sequence) and not isinstance(sample, (str, bytes)) and len(sample) >= 2:
        return sample[0] if part == "input" else sample[1]
    raise SampleFormatError(f"{owner}: a sample is a {type(sample).__name__}; expected (input, label, ...) "
                            "or a mapping such as {'image': ..., 'label': ...}")


def as_input_tensor(value: Any, owner: str) -> Tensor:
    """A sample's input as a tensor; PIL images and other objects get a message naming the fix."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic, int, float, bool, list)):
        return torch.as_tensor(np.asarray(value))
    raise SampleFormatError(f"{owner}: a sample's input is a {type(value).__module__}.{type(value).__name__}, "
                            "not a tensor; give the dataset a transform that returns tensors, e.g. "
                            "torchvision.transforms.ToTensor()")


def as_target_tensor(values: Any, owner: str) -> Tensor:
    """Labels as a tensor: integers become int64 (class indices), other numbers are kept."""
    try:
        targets = torch.as_tensor(values if isinstance(values, Tensor) else np.asarray(values))
    except (TypeError, ValueError, RuntimeError) as err:
        raise SampleFormatError(f"{owner}: labels must be numbers, got {type(values).__name__} ({err})") from err
    if not torch.is_floating_point(targets) and not torch.is_complex(targets):
        targets = targets.long()
    return targets


def unwrap_subsets(dataset: Dataset) -> tuple[Dataset, Tensor | None]:
    """``(base, indices)`` through nested ``Subset``s; ``indices`` is ``None`` without any."""
    indices: Tensor | None = None
    while isinstance(dataset, Subset):
        here = torch.as_tensor(list(dataset.indices) if not isinstance(dataset.indices, Tensor)
                               else dataset.indices, dtype=torch.long)
        indices = here if indices is None else here[indices]
        dataset = dataset.dataset
    return dataset, indices


def declared_labels(dataset: Dataset, target_key: str | None) -> Tensor | None:
    """Labels the dataset states without reading samples: ``.targets``, ``.labels`` or a label column.

    ``None`` when it states none, or when a ``target_transform`` would change them.
    """
    base, indices = unwrap_subsets(dataset)
    if getattr(base, "target_transform", None) is not None:
        return None
    labels = None
    for name in ("targets", "labels"):
        value = getattr(base, name, None)
        if value is not None and not callable(value):
            labels = value
            break
    columns = getattr(base, "column_names", None)
    if labels is None and columns is not None:  # a Hugging Face dataset: read the label column
        key = target_key or next((k for k in TARGET_KEYS if k in columns), None)
        labels = base[key] if key in columns else None
    if labels is None:
        return None
    try:
        labels = as_target_tensor(labels, type(base).__name__)
    except SampleFormatError:
        return None
    if labels.ndim == 0 or len(labels) != len(base):
        return None
    return labels if indices is None else labels[indices]


def _is_deterministic_transform(transform: Any) -> bool:
    """Whether ``transform`` is built only from torchvision transforms known to be deterministic."""
    if transform is None:
        return True
    name, module = type(transform).__name__, type(transform).__module__
    if name == "StandardTransform":  # torchvision's (transform, target_transform) pair
        return (_is_deterministic_transform(getattr(transform, "transform", None))
                and _is_deterministic_transform(getattr(transform, "target_transform", None)))
    if not module.startswith("torchvision."):
        return False
    if name == "Compose":
        return all(_is_deterministic_transform(t) for t in transform.transforms)
    return name in DETERMINISTIC_TRANSFORMS


def declares_random_transform(dataset: Dataset) -> bool:
    """Whether the dataset carries a ``transform``/``transforms`` that may differ on every read.

    Only compositions of torchvision's deterministic transforms (``ToTensor``, ``Normalize``,
    ``Resize``...) count as fixed; any other callable may be random, so the data stays lazy.
    """
    base, _ = unwrap_subsets(dataset)
    return any(not _is_deterministic_transform(getattr(base, name, None)) for name in ("transform", "transforms"))
