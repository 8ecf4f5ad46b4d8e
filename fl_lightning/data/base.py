"""In-memory tensors and the dataset interface every federated dataset implements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor


@dataclass
class TensorData:
    """A dataset held as two tensors: ``inputs[i]`` with label ``targets[i]``.

    Client data is pre-materialised like this so local training slices tensors instead of
    starting a DataLoader per client per round.
    """

    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(f"inputs and targets differ in length: {len(self.inputs)} vs {len(self.targets)}")

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, indices: Tensor | list[int]) -> "TensorData":
        """The samples at ``indices`` (a copy)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return TensorData(self.inputs[idx], self.targets[idx])

    def batches(self, order: Sequence[Tensor], seed: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """``(inputs, targets)`` for each index tensor of ``order``, in that order.

        ``seed`` is accepted for the signature lazy data shares; tensors involve no randomness.
        """
        for index in order:
            yield self.inputs[index], self.targets[index]

    def with_targets(self, targets: Tensor) -> "TensorData":
        """The same inputs under other labels (label-flipping attacks)."""
        return TensorData(self.inputs, targets)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input (``inputs.shape[1:]``)."""
        return tuple(self.inputs.shape[1:])

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """``(inputs, targets)`` in dataset order, ``batch_size`` at a time (evaluation)."""
        return self.batches(torch.arange(len(self)).split(batch_size))


@runtime_checkable
class ClientData(Protocol):
    """What every engine, attack and evaluator may ask of a client's (or the test set's) data.

    :class:`TensorData` holds tensors; :class:`fl_lightning.data.lazy.LazyData` reads samples
    through a ``DataLoader`` and has no ``inputs``; both yield ``(inputs, targets)`` batches.
    :class:`fl_lightning.data.sample_data.SampleData` yields batches of any structure, and its
    ``targets`` is ``None`` when the samples carry no label (ask :func:`fl_lightning.labels.require_labels`).
    """

    targets: Tensor | None

    def __len__(self) -> int: ...

    def batches(self, order: Sequence[Tensor], seed: int | None = None) -> Iterator[tuple[Tensor, Tensor]]: ...

    def with_targets(self, targets: Tensor) -> "ClientData": ...

    def subset(self, indices: Tensor | list[int]) -> "ClientData": ...

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...


class FederatedDataset:
    """A dataset split into a training and a test part, loaded from local files or shipped data.

    Subclasses set ``num_classes`` and implement :meth:`load`; datasets partitioned by a key
    (LOAN: US state) also return the per-training-sample keys from :meth:`partition_keys`.
    """

    num_classes: int = 0
    #: class names, index = label; used by recipes to name a target ("bird", "2")
    class_names: tuple[str, ...] = ()

    def load(self) -> tuple[ClientData, ClientData | None]:
        """Return ``(train, test)``: :class:`TensorData`, or lazy data for per-sample transforms."""
        raise NotImplementedError

    def load_val(self) -> ClientData | None:
        """The split the module's ``validation_step`` runs on, or ``None`` (it then runs on the test split)."""
        return None

    def partition_keys(self) -> list | None:
        """Per-training-sample keys for the ``by_key`` partition, or ``None``."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
