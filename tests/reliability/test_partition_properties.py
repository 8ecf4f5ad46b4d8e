"""Property-based checks of the partitions on random data sizes, class balances, client counts and seeds.

tests/data/test_partition.py covers iid on equal labels and fixed cases; these draw unbalanced labels
and check the contracts end to end, through FederatedDataModule as well.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fl_lightning import FederatedDataModule
from fl_lightning.data import partition as P
from fl_lightning.data.base import FederatedDataset, TensorData

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def labels(draw, max_classes=6, max_per_class=40):
    """Unbalanced labels: every class present with its own count, shuffled."""
    counts = draw(st.lists(st.integers(1, max_per_class), min_size=1, max_size=max_classes))
    order = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(sum(counts))
    return torch.as_tensor(np.repeat(np.arange(len(counts)), counts)[order])


def _exact_cover(parts, n):
    flat = torch.cat(parts)
    assert torch.equal(flat.sort().values, torch.arange(n)), "every sample exactly once"
    assert all(len(p) > 0 for p in parts), "no empty client"
    assert all(p.dtype == torch.long and torch.equal(p, p.sort().values) for p in parts)


@SETTINGS
@given(targets=labels(), clients=st.integers(1, 30), seed=st.integers(0, 1000))
def test_iid_on_unbalanced_labels(targets, clients, seed):
    assume(clients <= len(targets))
    parts = P.iid(targets, clients, seed)
    assert len(parts) == clients
    _exact_cover(parts, len(targets))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert [p.tolist() for p in P.iid(targets, clients, seed)] == [p.tolist() for p in parts]


@SETTINGS
@given(targets=labels(), clients=st.integers(1, 25), per_client=st.integers(1, 6), seed=st.integers(0, 1000))
def test_classes_every_sample_once_and_distinct_classes(targets, clients, per_client, seed):
    num_classes = len(torch.unique(targets))
    assume(per_client <= num_classes and clients <= len(targets))
    try:
        parts = P.classes(targets, clients, per_client, seed)
    except ValueError as exc:
        # only legitimate refusal: some class is too small for the shards it must be cut into
        assert "samples but needs" in str(exc)
        smallest = int(torch.bincount(targets).min())
        assert smallest < -(-clients * per_client // num_classes)
        return
    assert len(parts) == clients
    held = [set(targets[p].tolist()) for p in parts]
    assert all(len(h) == per_client for h in held), "each client holds exactly classes_per_client classes"
    if clients * per_client >= num_classes:
        _exact_cover(parts, len(targets))
        holders = [sum(c in h for h in held) for c in range(num_classes)]
        assert max(holders) - min(holders) <= 1
    else:  # fewer shards than classes: some classes unused, the rest covered exactly once
        flat = torch.cat(parts)
        assert len(flat) == len(torch.unique(flat)) and all(len(p) for p in parts)
    assert [p.tolist() for p in P.classes(targets, clients, per_client, seed)] == [p.tolist() for p in parts]


@SETTINGS
@given(targets=labels(), clients=st.integers(1, 20), alpha=st.floats(0.05, 50), seed=st.integers(0, 1000))
def test_dirichlet_every_sample_once(targets, clients, alpha, seed):
    assume(clients <= len(targets))
    parts = P.dirichlet(targets, clients, alpha, seed)
    assert len(parts) == clients
    _exact_cover(parts, len(targets))


class _Labels(FederatedDataset):
    def __init__(self, targets):
        self.targets = targets
        self.num_classes = int(targets.max()) + 1

    def load(self):
        inputs = torch.arange(len(self.targets), dtype=torch.float32)[:, None]  # input = sample index
        return TensorData(inputs, self.targets), TensorData(inputs[:2], self.targets[:2])


@SETTINGS
@given(targets=labels(), clients=st.integers(1, 12), seed=st.integers(0, 1000),
       partition=st.sampled_from(["iid", "classes", "dirichlet"]))
def test_datamodule_clients_hold_their_samples_exactly_once(targets, clients, seed, partition):
    assume(clients <= len(targets))
    dm = FederatedDataModule(_Labels(targets), num_clients=clients, partition=partition, seed=seed,
                             classes_per_client=1)
    try:
        dm.setup()
    except ValueError as exc:
        assert partition == "classes" and "samples but needs" in str(exc)
        return
    assert len(dm.clients) == dm.num_clients == clients
    seen = torch.cat([c.inputs[:, 0] for c in dm.clients]).long()
    if partition != "classes" or clients >= dm.num_classes:
        assert torch.equal(seen.sort().values, torch.arange(len(targets)))
    assert len(torch.unique(seen)) == len(seen) and all(len(c) for c in dm.clients)
    for client, idx in zip(dm.clients, dm.client_indices):
        assert torch.equal(client.targets, targets[idx]) and torch.equal(client.inputs[:, 0].long(), idx)


@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_train_fraction_keeps_a_non_empty_prefix(fraction):
    targets = torch.arange(50) % 5
    dm = FederatedDataModule(_Labels(targets), num_clients=7, partition="iid", seed=1, train_fraction=fraction)
    dm.setup()
    for client, idx in zip(dm.clients, dm.client_indices):
        assert len(client) == max(1, int(len(idx) * fraction))
        assert torch.equal(client.inputs[:, 0].long(), idx[:len(client)])
