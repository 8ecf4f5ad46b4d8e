"""``TorchDatasets``: any map-style dataset as a :class:`FederatedDataset`, as tensors when it can be, lazy otherwise."""
from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from fl_lightning.checks import check_bool, check_int, check_number, check_optional_int
from fl_lightning.data.base import ClientData, FederatedDataset, TensorData
from fl_lightning.data.lazy import LazyData, kept_global_generators
from fl_lightning.data.sample_data import SampleData
from fl_lightning.data.samples import (SampleFormatError, as_input_tensor, as_target_tensor, declared_labels,
                                       declares_random_transform, input_part, is_pair, label_path, pick,
                                       tensor_leaves, unwrap_subsets)
from fl_lightning.labels import has_class_labels

OWNER = "FederatedDataModule.from_datasets"
#: batch of samples per read when a dataset is materialised or its labels collected
READ_BATCH = 256
#: how often sample 0 is read under different seeds to catch randomness no attribute declares
PROBE_READS = 4


class _SampleParts(Dataset):
    """``(input tensor, label)`` of each sample, for the one pass that materialises a dataset."""

    def __init__(self, dataset: Dataset, input_key: str | None, target_key: str | None, inputs: bool = True) -> None:
        self.dataset, self.input_key, self.target_key, self.inputs = dataset, input_key, target_key, inputs

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> tuple[Tensor | None, Any]:
        sample = self.dataset[idx]
        owner = type(self.dataset).__name__
        target = pick(sample, "target", self.target_key, owner)
        if not self.inputs:
            return None, target
        return as_input_tensor(pick(sample, "input", self.input_key, owner), owner), target


def _collate_parts(parts: list[tuple[Tensor | None, Any]]) -> tuple[list[Tensor | None], list[Any]]:
    return [p[0] for p in parts], [p[1] for p in parts]


class TorchDatasets(FederatedDataset):
    """A training (and optional test) map-style dataset, given to :meth:`FederatedDataModule.from_datasets`.

    A split is materialised once into :class:`TensorData` (the fast path) when its samples are
    fixed and fit ``memory_budget_mb``; it stays :class:`LazyData` when it carries a transform
    that may be random (anything but torchvision's ``ToTensor``/``Normalize``/``Resize``-like
    transforms), when reading a sample twice gives different inputs, or when it is too large.
    ``materialize=True``/``False`` decides instead. Labels come from ``.targets``/``.labels``
    (or a Hugging Face label column) when the dataset has them, else from one pass over the samples.

    Samples that are not ``(input, scalar label)`` pairs (a tensor, a dict, ``(tokens, next_tokens)``)
    become :class:`~fl_lightning.data.sample_data.SampleData`: the module's ``training_step`` gets
    them collated as a ``DataLoader`` collates them, held in memory or read per batch by the same
    rules. Their label, where the sample has a scalar one, serves the features that need labels;
    without one, or with floating-point targets (regression), ``num_classes`` is 0.
    """

    def __init__(self, train: Dataset, test: Dataset | None = None, *, val: Dataset | None = None,
                 num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, materialize: bool | None = None,
                 memory_budget_mb: float = 2048.0, num_workers: int = 0, input_key: str | None = None,
                 target_key: str | None = None) -> None:
        self.train = _check_map_style(train, "train")
        self.test = None if test is None else _check_map_style(test, "test")
        self.val = None if val is None else _check_map_style(val, "val")
        self._num_classes = check_optional_int(num_classes, "num_classes", OWNER, minimum=1)
        self._class_names = None if class_names is None else tuple(str(c) for c in class_names)
        if self._class_names is not None and self._num_classes is not None \
                and len(self._class_names) != self._num_classes:
            raise ValueError(f"{OWNER}: class_names has {len(self._class_names)} names for "
                             f"num_classes={self._num_classes}; give one name per class")
        self.materialize = None if materialize is None else check_bool(materialize, "materialize", OWNER)
        self.memory_budget_mb = check_number(memory_budget_mb, "memory_budget_mb", OWNER, low=0.0)
        self.num_workers = check_int(num_workers, "num_workers", OWNER, minimum=0)
        for name, key in (("input_key", input_key), ("target_key", target_key)):
            if key is not None and not isinstance(key, str):
                raise TypeError(f"{OWNER}: {name} must be a str or None, got {key!r} ({type(key).__name__})")
        self.input_key, self.target_key = input_key, target_key
        self.num_classes = self._num_classes or 0
        self.class_names = self._class_names or ()
        #: which splits stayed lazy, after :meth:`load` (``{"train": bool, "test": bool}``)
        self.lazy: dict[str, bool] = {}

    def load(self) -> tuple[ClientData, ClientData | None]:
        """The training and test data: :class:`TensorData` or :class:`LazyData` each.

        Reading samples may run random transforms; the global generators are restored afterwards,
        so building the data does not shift the run's random stream.
        """
        with kept_global_generators():
            train = self._prepare(self.train, "train")
            test = None if self.test is None else self._prepare(self.test, "test")
        if test is not None and not isinstance(train, SampleData) and not isinstance(test, SampleData) \
                and test.input_shape != train.input_shape:
            raise SampleFormatError(f"{OWNER}: test inputs have shape {test.input_shape} but training inputs "
                                    f"{train.input_shape}; give both splits the same transform to tensors")
        self._set_classes(train, test)
        return train, test

    def load_val(self) -> ClientData | None:
        """The validation dataset prepared as the others are (``None`` without one)."""
        if self.val is None:
            return None
        with kept_global_generators():
            return self._prepare(self.val, "val")

    def _prepare(self, dataset: Dataset, split: str) -> ClientData:
        owner = f"{OWNER}({split}={type(dataset).__name__})"
        if len(dataset) == 0:
            raise ValueError(f"{owner}: the {split} dataset is empty")
        sample = dataset[0]
        if not is_pair(sample, self.input_key):
            return self._prepare_samples(dataset, sample, split, owner)
        first = as_input_tensor(pick(sample, "input", self.input_key, owner), owner)
        lazy = self._stays_lazy(dataset, first)
        self.lazy[split] = lazy
        if not lazy:
            return self._materialise(dataset, owner)
        targets = declared_labels(dataset, self.target_key)
        if targets is None:
            targets = self._read_labels(dataset, owner)
        return LazyData(dataset, torch.arange(len(dataset)), targets, tuple(first.shape),
                        input_key=self.input_key, num_workers=self.num_workers)

    def _prepare_samples(self, dataset: Dataset, sample: Any, split: str, owner: str) -> SampleData:
        """Samples of any other structure: collated per batch as a ``DataLoader`` would, labels where the sample has one."""
        path = label_path(sample, self.target_key, owner)
        leaves = tensor_leaves(sample)
        size_mb = sum(t.element_size() * t.numel() for t in leaves) * len(dataset) / 2**20
        lazy = (not self.materialize if self.materialize is not None
                else size_mb > self.memory_budget_mb or declares_random_transform(dataset)
                or self._reads_differ(dataset, whole=True))
        self.lazy[split] = lazy
        source: Any = dataset if lazy else [dataset[i] for i in range(len(dataset))]
        targets = None
        if path is not None:
            targets = declared_labels(dataset, self.target_key if isinstance(path, str) else None)
            if targets is None:
                rows = source if not lazy else (dataset[i] for i in range(len(dataset)))
                targets = as_target_tensor(_stack_labels([row[path] for row in rows]), owner)
            targets = targets.reshape(len(dataset)) if targets.numel() == len(dataset) else targets
        first = input_part(sample)
        shape = tuple(first.shape) if isinstance(first, Tensor) else ()
        return SampleData(source, torch.arange(len(dataset)), targets, path, shape)

    def _stays_lazy(self, dataset: Dataset, first: Tensor) -> bool:
        if self.materialize is not None:
            return not self.materialize
        size_mb = first.element_size() * first.numel() * len(dataset) / 2**20
        return (size_mb > self.memory_budget_mb or declares_random_transform(dataset)
                or self._reads_differ(dataset))

    def _reads_differ(self, dataset: Dataset, whole: bool = False) -> bool:
        """Whether sample 0 reads differently under other seeds (randomness no attribute declares).

        ``whole``: compare every tensor of the sample, not only its input (samples of any structure).
        """
        reads = []
        for seed in range(PROBE_READS):
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            reads.append(tensor_leaves(dataset[0]) if whole
                         else [as_input_tensor(pick(dataset[0], "input", self.input_key, OWNER), OWNER)])
        return any(len(r) != len(reads[0]) or any(a.shape != b.shape or not torch.equal(a, b)
                                                  for a, b in zip(r, reads[0])) for r in reads[1:])

    def _loader(self, dataset: Dataset, inputs: bool) -> DataLoader:
        return DataLoader(_SampleParts(dataset, self.input_key, self.target_key, inputs), batch_size=READ_BATCH,
                          num_workers=self.num_workers, collate_fn=_collate_parts)

    def _materialise(self, dataset: Dataset, owner: str) -> TensorData:
        inputs: list[Tensor] = []
        labels: list[Any] = []
        for batch_inputs, batch_labels in self._loader(dataset, inputs=True):
            inputs.extend(batch_inputs)
            labels.extend(batch_labels)
        shapes = {tuple(x.shape) for x in inputs}
        if len(shapes) > 1:
            raise SampleFormatError(f"{owner}: inputs differ in shape ({', '.join(map(str, sorted(shapes)[:3]))}); "
                                    "make the dataset's transform return one shape (e.g. Resize)")
        return TensorData(torch.stack(inputs), as_target_tensor(_stack_labels(labels), owner))

    def _read_labels(self, dataset: Dataset, owner: str) -> Tensor:
        labels: list[Any] = []
        for _, batch_labels in self._loader(dataset, inputs=False):
            labels.extend(batch_labels)
        return as_target_tensor(_stack_labels(labels), owner)

    def _set_classes(self, train: ClientData, test: ClientData | None) -> None:
        """``num_classes`` and ``class_names``: given, declared by the dataset, or from integer labels (0 otherwise)."""
        labels = [t for t in (train.targets, None if test is None else test.targets) if t is not None]
        classified = bool(labels) and all(has_class_labels(t) for t in labels)
        declared = getattr(unwrap_subsets(self.train)[0], "classes", None)
        if self._num_classes is None and classified and isinstance(declared, Sequence) \
                and not isinstance(declared, str) and len(declared) > 0:
            self.num_classes = len(declared)
            self.class_names = self._class_names or tuple(str(c) for c in declared)
            return
        if self._num_classes is None:
            # unlabeled samples or regression targets: no classes, and nothing asks for any
            self.num_classes = max(int(t.max()) for t in labels) + 1 if classified else 0
        self.class_names = self._class_names or tuple(str(c) for c in range(self.num_classes))

    def __repr__(self) -> str:
        test = "None" if self.test is None else f"{type(self.test).__name__}[{len(self.test)}]"
        return f"TorchDatasets(train={type(self.train).__name__}[{len(self.train)}], test={test})"


def _stack_labels(labels: list[Any]) -> Any:
    """Per-sample labels (numbers or 0-d/1-d tensors) as one array-like."""
    if labels and isinstance(labels[0], Tensor):
        return torch.stack([torch.as_tensor(label) for label in labels])
    return labels


def _check_map_style(dataset: Any, name: str) -> Any:
    """``dataset`` if it can be indexed and measured (map-style), else a ``TypeError`` saying why."""
    if isinstance(dataset, IterableDataset):
        raise TypeError(f"{OWNER}: {name} is an IterableDataset; clients need map-style data "
                        "(__getitem__ and __len__) so each can hold its own indices")
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TypeError(f"{OWNER}: {name} must be a map-style dataset with __getitem__ and __len__, "
                        f"got {type(dataset).__name__}")
    return dataset
