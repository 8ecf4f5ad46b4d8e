"""Seeded partitions of a training set's indices into clients."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

from fl_lightning.seeding import numpy_rng

PARTITIONS = ("iid", "classes")


def iid(targets: Tensor, num_clients: int, seed: int) -> list[Tensor]:
    """Shuffle the samples and deal them into ``num_clients`` near-equal parts."""
    _check_clients(len(targets), num_clients)
    order = numpy_rng(seed, "partition", "iid").permutation(len(targets))
    return [torch.as_tensor(np.sort(part), dtype=torch.long) for part in np.array_split(order, num_clients)]


def classes(targets: Tensor, num_clients: int, classes_per_client: int, seed: int) -> list[Tensor]:
    """The paper's non-iid split: every client holds shards of ``classes_per_client`` distinct classes.

    Each class is cut into shards (as many as it has holders); the ``num_clients *
    classes_per_client`` shards are ordered by class and client ``i`` takes shards ``i, i + C,
    i + 2C, ...``. A class then has at most C shards, so a client's shards are always of distinct
    classes, and every class has the same number of holders (to within one).
    """
    labels = np.asarray(targets)
    present = np.unique(labels)
    _check_clients(len(labels), num_clients)
    if not 1 <= classes_per_client <= len(present):
        raise ValueError(f"classes partition: classes_per_client must be in 1..{len(present)} "
                         f"(the classes present), got {classes_per_client}")
    rng = numpy_rng(seed, "partition", "classes")
    class_order = rng.permutation(present)
    num_shards = num_clients * classes_per_client
    holders = np.full(len(present), num_shards // len(present))
    holders[: num_shards % len(present)] += 1
    shards: list[np.ndarray] = []
    for cls, count in zip(class_order, holders):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if count > len(members):
            raise ValueError(f"classes partition: class {cls} has {len(members)} samples but needs "
                             f"{count} shards; use fewer clients or classes_per_client")
        shards.extend(np.array_split(members, count))
    client_of_slot = rng.permutation(num_clients)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for position, shard in enumerate(shards):
        parts[client_of_slot[position % num_clients]].append(shard)
    return [torch.as_tensor(np.sort(np.concatenate(p)), dtype=torch.long) for p in parts]


def fingerprint(parts: list[Tensor]) -> str:
    """A short hash of the index lists: two runs with the same partition have the same fingerprint."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(np.asarray(part, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def _check_clients(num_samples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > num_samples:
        raise ValueError(f"cannot split {num_samples} samples over {num_clients} clients: "
                         "every client needs at least one sample")
