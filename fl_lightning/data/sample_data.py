"""``SampleData``: a client's share of a dataset whose samples reach ``training_step`` as a ``DataLoader`` collates them.

For samples that are not ``(input tensor, scalar label)`` pairs: a tensor (``BoringModel``'s
random vectors, an autoencoder's images), a dict, ``(tokens, next_tokens)`` pairs, ``(x, y, extra)``
tuples. A batch is ``default_collate([dataset[i] for i in batch])``, exactly what a Lightning
``DataLoader`` gives the module. A scalar label found in the sample (position 1 of a tuple, a
``label``-like key of a dict) is kept as :attr:`targets` for the features that need labels;
without one, :attr:`targets` is ``None`` and those features refuse the data
(:func:`fl_lightning.labels.require_labels`).
"""
from __future__ import annotations

from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence as SequenceABC
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import default_collate

from fl_lightning.data.lazy import seeded_global_generators
from fl_lightning.seeding import derive_seed

#: where a sample's label sits: a position in a tuple / list, a key of a mapping, or nowhere
LabelPath = int | str | None


class SampleData:
    """``source[indices[i]]`` for each sample, collated per batch; ``targets[i]`` its label, or ``None``.

    ``source`` is the samples read once into a list (fixed, small data) or the dataset itself
    (read on every batch: random transforms, data over the memory budget). Reads of a dataset are
    seeded per batch as :class:`~fl_lightning.data.lazy.LazyData` seeds them, so a rerun or a
    resumed run sees the same augmentations.
    """

    #: batches are the collated samples, not ``(inputs, targets)`` pairs
    yields_pairs = False

    def __init__(self, source: Any, indices: Tensor | Sequence[int], targets: Tensor | None,
                 label_path: LabelPath, input_shape: tuple[int, ...], *, relabelled: bool = False) -> None:
        self.source = source
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        if targets is not None and len(targets) != len(self.indices):
            raise ValueError(f"SampleData: {len(self.indices)} indices but {len(targets)} targets; "
                             "give one label per index")
        self.targets = targets
        self.label_path = label_path
        self._input_shape = tuple(input_shape)
        self._relabelled = relabelled
        self._fixed = isinstance(source, list)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample's input part (its first field, or the sample when it is a tensor)."""
        return self._input_shape

    def _copy(self, indices: Tensor, targets: Tensor | None, relabelled: bool) -> "SampleData":
        return SampleData(self.source, indices, targets, self.label_path, self._input_shape, relabelled=relabelled)

    def subset(self, indices: Tensor | list[int]) -> "SampleData":
        """The samples at positions ``indices`` of this data (no sample is read)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._copy(self.indices[idx], None if self.targets is None else self.targets[idx], self._relabelled)

    def with_targets(self, targets: Tensor) -> "SampleData":
        """The same samples with their label field replaced by ``targets`` (label-flipping attacks)."""
        if self.label_path is None:
            raise ValueError("SampleData.with_targets: the samples carry no label field to replace")
        if len(targets) != len(self):
            raise ValueError(f"SampleData.with_targets: {len(targets)} targets for {len(self)} samples")
        return self._copy(self.indices, targets, True)

    def batches(self, order: Sequence[Tensor], seed: int | None = None) -> Iterator[Any]:
        """The collated batch for each index tensor of ``order`` (positions in this data), in order.

        Reads of a dataset follow ``seed``, or when it is ``None`` one number drawn now from
        torch's global generator, as :meth:`LazyData.batches` does.
        """
        batches = [index for index in order if len(index)]
        base = 0 if self._fixed else (int(torch.empty((), dtype=torch.int64).random_()) if seed is None else int(seed))
        return self._read(batches, base)

    def _read(self, batches: list[Tensor], base: int) -> Iterator[Any]:
        for number, index in enumerate(batches):
            positions = self.indices[index].tolist()
            if self._fixed:
                batch = default_collate([self.source[i] for i in positions])
            else:
                with seeded_global_generators(derive_seed(base, "batch", number)):
                    batch = default_collate([self.source[i] for i in positions])
            if self._relabelled:
                batch = _with_label(batch, self.label_path, self.targets[index])
            yield batch

    def test_batches(self, batch_size: int) -> Iterator[Any]:
        """Collated batches in dataset order, ``batch_size`` at a time (evaluation)."""
        return self.batches(torch.arange(len(self)).split(batch_size))

    def __repr__(self) -> str:
        kind = "fixed" if self._fixed else type(self.source).__name__
        labels = "none" if self.targets is None else str(self.targets.dtype)
        return f"SampleData({kind}, samples={len(self)}, labels={labels})"


def _with_label(batch: Any, path: LabelPath, labels: Tensor) -> Any:
    """``batch`` with its label field (``path``) set to ``labels``."""
    if isinstance(batch, MutableMapping) or isinstance(batch, MutableSequence):
        batch[path] = labels  # type: ignore[index]
        return batch
    if isinstance(batch, Mapping):
        return {**batch, path: labels}
    if isinstance(batch, SequenceABC):
        parts = list(batch)
        parts[path] = labels  # type: ignore[index]
        return type(batch)(parts) if isinstance(batch, tuple) and not hasattr(batch, "_fields") else parts
    raise TypeError(f"SampleData: a batch is a {type(batch).__name__}, which has no label field to replace")
