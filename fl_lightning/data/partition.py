"""Seeded partitions of a training set's indices into clients.

Every function returns one sorted ``int64`` index tensor per client. Randomness comes only from
:func:`fl_lightning.seeding.numpy_rng` with the path ``("partition", <name>)``, so the same seed
gives the same split (same :func:`fingerprint`) on every machine.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from torch import Tensor

from fl_lightning.checks import check_int, check_optional_int, check_positive
from fl_lightning.seeding import numpy_rng

PARTITIONS = ("iid", "classes", "dirichlet", "by_key")


def iid(targets: Tensor, num_clients: int, seed: int) -> list[Tensor]:
    """Shuffle the samples and deal them into ``num_clients`` near-equal parts."""
    _check_clients(len(targets), num_clients)
    order = numpy_rng(seed, "partition", "iid").permutation(len(targets))
    return [torch.as_tensor(np.sort(part), dtype=torch.long) for part in np.array_split(order, num_clients)]


def classes(targets: Tensor, num_clients: int, classes_per_client: int, seed: int,
            samples_per_class: int | None = None) -> list[Tensor]:
    """The paper's non-iid split: every client holds shards of ``classes_per_client`` distinct classes.

    Each class is cut into shards (as many as it has holders); the ``num_clients *
    classes_per_client`` shards are ordered by class and client ``i`` takes shards ``i, i + C,
    i + 2C, ...``. A class then has at most C shards, so a client's shards are always of distinct
    classes, and every class has the same number of holders (to within one). With fewer shards than
    classes, the classes drawn last are left unused.

    ``samples_per_class``: every shard holds exactly that many samples instead of an equal share of
    its class (paper Table 4: "300 images of each of 2 digits per client"); the rest of the data is
    left unused. Holders of a class get disjoint samples while the class is large enough; when it is
    not (full MNIST has 5,421 fives, 20 holders x 300 need 6,000), samples are reused across holders
    as evenly as possible and a warning says so. A client never holds a sample twice.
    """
    labels = np.asarray(targets)
    present = np.unique(labels)
    _check_clients(len(labels), num_clients)
    if not 1 <= classes_per_client <= len(present):
        raise ValueError(f"classes partition: classes_per_client must be in 1..{len(present)} "
                         f"(the classes present), got {classes_per_client}")
    check_optional_int(samples_per_class, "samples_per_class", "classes partition", minimum=1)
    rng = numpy_rng(seed, "partition", "classes")
    class_order = rng.permutation(present)
    num_shards = num_clients * classes_per_client
    holders = np.full(len(present), num_shards // len(present))
    holders[: num_shards % len(present)] += 1
    shards: list[np.ndarray] = []
    for cls, count in zip(class_order, holders):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if count == 0:  # fewer shards than classes: this class is left unused
            continue
        if samples_per_class is None:
            if count > len(members):
                raise ValueError(f"classes partition: class {cls} has {len(members)} samples but needs "
                                 f"{count} shards; use fewer clients or classes_per_client")
            shards.extend(np.array_split(members, count))
        else:
            shards.extend(_fixed_size_shards(members, int(count), samples_per_class, cls))
    client_of_slot = rng.permutation(num_clients)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for position, shard in enumerate(shards):
        parts[client_of_slot[position % num_clients]].append(shard)
    return [torch.as_tensor(np.sort(np.concatenate(p)), dtype=torch.long) for p in parts]


def _fixed_size_shards(members: np.ndarray, count: int, size: int, cls: object) -> list[np.ndarray]:
    """``count`` shards of ``size`` distinct samples each, disjoint when the class is large enough."""
    if size > len(members):
        raise ValueError(f"classes partition: class {cls} has {len(members)} samples, fewer than "
                         f"samples_per_class={size}; lower samples_per_class")
    needed = count * size
    if needed > len(members):
        warnings.warn(f"classes partition: class {cls} has {len(members)} samples but {count} holders x "
                      f"{size} need {needed}; holders of this class share some samples", stacklevel=3)
    # a cyclic walk through the shuffled class: consecutive windows of ``size`` never repeat a sample
    cyclic = np.resize(members, needed)
    return [cyclic[i * size:(i + 1) * size] for i in range(count)]


def dirichlet(targets: Tensor, num_clients: int, alpha: float, seed: int) -> list[Tensor]:
    """Label-skewed split: each class is divided over the clients in proportions drawn from Dir(alpha).

    Used for CIFAR-10 in the paper (alpha 0.9, 10 clients, after Bagdasaryan et al.). Small alpha
    concentrates a class on few clients, large alpha approaches an iid split. Every sample goes to
    exactly one client. A client left empty by the draw receives one sample from the currently
    largest client (deterministic, and negligible unless alpha is tiny or data scarce).
    """
    labels = np.asarray(targets)
    _check_clients(len(labels), num_clients)
    check_positive(alpha, "alpha", "dirichlet partition")
    rng = numpy_rng(seed, "partition", "dirichlet")
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        proportions = rng.dirichlet(np.full(num_clients, float(alpha)))
        # cut points from the cumulative proportions: shares sum to the class size exactly
        cuts = np.floor(np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
        for client, piece in enumerate(np.split(members, cuts)):
            parts[client].append(piece)
    flat = [np.concatenate(p) for p in parts]
    for client in range(num_clients):
        if len(flat[client]) == 0:
            donor = max(range(num_clients), key=lambda c: (len(flat[c]), -c))
            flat[client], flat[donor] = flat[donor][-1:], flat[donor][:-1]
    return [torch.as_tensor(np.sort(p), dtype=torch.long) for p in flat]


def key_order(keys: Sequence[Hashable]) -> list:
    """The distinct keys in client order (sorted; by ``repr`` if the keys are not mutually comparable)."""
    distinct = set(keys.tolist() if isinstance(keys, (Tensor, np.ndarray)) else keys)
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=repr)


def by_key(keys: Sequence[Hashable], seed: int = 0) -> list[Tensor]:
    """One client per distinct key (e.g. LOAN's US state), clients ordered as :func:`key_order`.

    ``seed`` is accepted for a uniform signature and not used: the split is fixed by the keys.
    """
    if isinstance(keys, (Tensor, np.ndarray)):
        keys = keys.tolist()
    if len(keys) == 0:
        raise ValueError("by_key partition: no keys given; the dataset has no training samples")
    order = key_order(keys)
    client_of = {key: i for i, key in enumerate(order)}
    assignment = np.fromiter((client_of[k] for k in keys), dtype=np.int64, count=len(keys))
    return [torch.as_tensor(np.flatnonzero(assignment == c), dtype=torch.long) for c in range(len(order))]


def fingerprint(parts: list[Tensor]) -> str:
    """A short hash of the index lists: two runs with the same partition have the same fingerprint."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(np.asarray(part, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def _check_clients(num_samples: int, num_clients: int) -> None:
    check_int(num_clients, "num_clients", "partition", minimum=1)
    if num_clients > num_samples:
        raise ValueError(f"cannot split {num_samples} samples over {num_clients} clients: "
                         "every client needs at least one sample")
