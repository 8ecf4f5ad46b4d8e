"""``LazyData``: a client's share of a map-style dataset, read sample by sample through a ``DataLoader``.

For data too large to hold as tensors, or whose transforms must run on every read (random crops
and flips): each read of a sample may differ, so nothing is cached.
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from fl_lightning.data.samples import as_input_tensor, pick
from fl_lightning.seeding import derive_seed


@contextlib.contextmanager
def kept_global_generators() -> Iterator[None]:
    """Restore torch's (CPU), Python's and NumPy's global generators on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def seeded_global_generators(seed: int) -> Iterator[None]:
    """Seed torch's CPU, Python's and NumPy's global generators with ``seed``; restore them on exit."""
    with kept_global_generators():
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        yield


class SampleInputs(Subset):
    """The inputs of ``dataset[indices[i]]`` as tensors (labels come from the client's own ``targets``)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], input_key: str | None = None) -> None:
        super().__init__(dataset, indices)
        self.input_key = input_key

    def __getitem__(self, idx: int) -> Tensor:  # type: ignore[override]
        """The input tensor of the ``idx``-th sample of the subset."""
        sample = self.dataset[int(self.indices[idx])]
        return as_input_tensor(pick(sample, "input", self.input_key, type(self.dataset).__name__),
                               type(self.dataset).__name__)

    def __getitems__(self, indices: list[int]) -> list[Tensor]:  # type: ignore[override]
        """One input per index (bypasses ``Subset``'s batched read, which would keep the labels)."""
        return [self[i] for i in indices]


class LazyData:
    """``dataset[indices[i]]`` with label ``targets[i]``: batches are read on demand, never cached.

    ``targets`` is this object's own tensor (read once when the data was built), so a label-flip
    attack replaces it with :meth:`with_targets` without touching the dataset.

    Random transforms (torchvision's draw from torch's global generator; a user's may use
    Python's or NumPy's) are made reproducible per call of :meth:`batches`: one base seed, drawn
    from torch's global generator (which the engine seeds per ``(seed, round, client)``) or
    given, seeds all three generators afresh for every batch, and the generators are restored
    after each batch, so augmentations neither depend on nor disturb what else uses them
    (dropout, other clients read in between). Every epoch (a new call) sees new augmentations; a
    rerun or a resumed run sees the same ones. With ``num_workers > 0`` the ``DataLoader`` seeds
    its workers from the base seed instead, so results then depend on ``num_workers``.
    """

    def __init__(self, dataset: Dataset, indices: Tensor | Sequence[int], targets: Tensor,
                 input_shape: tuple[int, ...], *, input_key: str | None = None, num_workers: int = 0) -> None:
        self.dataset = dataset
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        if len(self.indices) != len(targets):
            raise ValueError(f"LazyData: {len(self.indices)} indices but {len(targets)} targets; "
                             "give one label per index")
        self.targets = targets
        self._input_shape = tuple(input_shape)
        self.input_key = input_key
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input (read from a sample when the data was built)."""
        return self._input_shape

    def _copy(self, indices: Tensor, targets: Tensor) -> "LazyData":
        return LazyData(self.dataset, indices, targets, self._input_shape, input_key=self.input_key,
                        num_workers=self.num_workers)

    def subset(self, indices: Tensor | list[int]) -> "LazyData":
        """The samples at positions ``indices`` of this data (no sample is read)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._copy(self.indices[idx], self.targets[idx])

    def with_targets(self, targets: Tensor) -> "LazyData":
        """The same samples under other labels (label-flipping attacks)."""
        if len(targets) != len(self):
            raise ValueError(f"LazyData.with_targets: {len(targets)} targets for {len(self)} samples")
        return self._copy(self.indices, targets)

    def batches(self, order: Sequence[Tensor], seed: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """``(inputs, targets)`` for each index tensor of ``order`` (positions in this data), in order.

        The random transforms of the call follow ``seed``, or when it is ``None`` one number drawn
        now (at the call, not at the first batch) from torch's global generator.
        """
        batches = [index.tolist() for index in order if len(index)]
        base = int(torch.empty((), dtype=torch.int64).random_()) if seed is None else int(seed)
        return self._read(batches, base)

    def _read(self, batches: list[list[int]], base: int) -> Iterator[tuple[Tensor, Tensor]]:
        if not batches:
            return
        loader = DataLoader(SampleInputs(self.dataset, self.indices.tolist(), self.input_key), batch_sampler=batches,
                            num_workers=self.num_workers, generator=torch.Generator().manual_seed(base))
        samples = iter(loader)
        for number, index in enumerate(batches):
            if self.num_workers:  # each worker was seeded from ``base`` by the DataLoader
                inputs = next(samples)
            else:
                with seeded_global_generators(derive_seed(base, "batch", number)):
                    inputs = next(samples)
            yield inputs, self.targets[torch.as_tensor(index, dtype=torch.long)]

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """``(inputs, targets)`` in dataset order, ``batch_size`` at a time (evaluation)."""
        return self.batches(torch.arange(len(self)).split(batch_size))

    def __repr__(self) -> str:
        return f"LazyData({type(self.dataset).__name__}, samples={len(self)}, input_shape={self._input_shape})"
