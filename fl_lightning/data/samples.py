"""What a map-style dataset's sample holds: its input, its label, and whether reading it twice gives the same.

A sample is whatever the module's ``training_step`` understands. ``(input, scalar label)`` pairs
(torchvision, ``TensorDataset``, most user classes) take the fast path of tensors; any other
sample (a tensor, a dict such as a Hugging Face row, ``(tokens, next_tokens)``, ``(x, y, extra)``)
reaches the module collated as a ``DataLoader`` collates it, with a scalar label found in it where
there is one (:func:`label_path`).
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


def is_scalar_number(value: Any) -> bool:
    """Whether ``value`` is one number (a Python / NumPy scalar, or a one-element tensor or array): a label."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    if isinstance(value, (Tensor, np.ndarray)):
        return value.size == 1 if isinstance(value, np.ndarray) else value.numel() == 1
    return False


def is_pair(sample: Any, input_key: str | None) -> bool:
    """Whether ``sample`` takes the fast path: ``(input, scalar label)``, or a mapping read by ``input_key``."""
    if input_key is not None:
        return True
    if isinstance(sample, Mapping) or isinstance(sample, (str, bytes)) or not isinstance(sample, Sequence):
        return False
    return len(sample) == 2 and is_scalar_number(sample[1])


def label_path(sample: Any, target_key: str | None, owner: str) -> int | str | None:
    """Where a sample that is not a pair keeps a scalar label: position 1 of a tuple, a key of a mapping, or ``None``."""
    if isinstance(sample, Mapping):
        if target_key is not None:
            if target_key not in sample:
                raise SampleFormatError(f"{owner}: a sample is a mapping with keys {sorted(map(str, sample))} and "
                                        f"target_key={target_key!r} is not one of them; pass one of its keys")
            return target_key
        return next((k for k in TARGET_KEYS if k in sample and is_scalar_number(sample[k])), None)
    if isinstance(sample, Sequence) and not isinstance(sample, (str, bytes)) and len(sample) >= 2 \
            and is_scalar_number(sample[1]):
        return 1
    return None


def input_part(sample: Any) -> Any:
    """The part of a sample that plays the input: the sample itself, its first field, or an input-like key."""
    if isinstance(sample, Mapping):
        return next((sample[k] for k in INPUT_KEYS if k in sample), None)
    if isinstance(sample, Sequence) and not isinstance(sample, (str, bytes)):
        return sample[0] if len(sample) else None
    return sample


def tensor_leaves(sample: Any) -> list[Tensor]:
    """Every tensor-like leaf of a sample (tensors, arrays, numbers), in a fixed order."""
    if isinstance(sample, Mapping):
        return [leaf for key in sorted(sample, key=str) for leaf in tensor_leaves(sample[key])]
    if isinstance(sample, Sequence) and not isinstance(sample, (str, bytes)):
        return [leaf for part in sample for leaf in tensor_leaves(part)]
    if isinstance(sample, Tensor):
        return [sample]
    if isinstance(sample, (np.ndarray, np.generic, int, float)) and not isinstance(sample, bool):
        return [torch.as_tensor(np.asarray(sample))]
    return []


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
