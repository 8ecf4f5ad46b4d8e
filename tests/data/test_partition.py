"""Partitions: coverage, balance, Dirichlet statistics, seeding and errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_lightning.data import partition as P


def _labels(num_classes: int, per_class: int, seed: int = 0) -> torch.Tensor:
    labels = np.repeat(np.arange(num_classes), per_class)
    return torch.as_tensor(np.random.default_rng(seed).permutation(labels))


def _assert_exact_cover(parts: list[torch.Tensor], n: int) -> None:
    flat = torch.cat(parts)
    assert len(flat) == n and torch.equal(flat.sort().values, torch.arange(n))
    assert all(len(p) > 0 for p in parts)
    assert all(torch.equal(p, p.sort().values) for p in parts)


def test_partitions_listed() -> None:
    assert set(P.PARTITIONS) == {"iid", "classes", "dirichlet", "by_key"}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 300), clients=st.integers(1, 40), seed=st.integers(0, 10))
def test_iid_covers_every_sample_once(n: int, clients: int, seed: int) -> None:
    if clients > n:
        with pytest.raises(ValueError, match="every client needs at least one sample"):
            P.iid(torch.zeros(n), clients, seed)
        return
    parts = P.iid(torch.zeros(n), clients, seed)
    _assert_exact_cover(parts, n)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("clients,k", [(100, 2), (20, 3), (13, 1), (10, 10)])
def test_classes_balanced_and_exact(clients: int, k: int) -> None:
    labels = _labels(10, 60)
    parts = P.classes(labels, clients, k, seed=3)
    _assert_exact_cover(parts, len(labels))
    held = [set(labels[p].tolist()) for p in parts]
    assert all(len(h) == k for h in held)
    holders = [sum(c in h for h in held) for c in range(10)]
    assert max(holders) - min(holders) <= 1


def test_classes_samples_per_class_exact_counts() -> None:
    labels = _labels(10, 100)
    parts = P.classes(labels, 20, 2, seed=0, samples_per_class=25)  # 4 holders x 25 <= 100 per class
    for part in parts:
        counts = torch.bincount(labels[part], minlength=10)
        assert sorted(counts[counts > 0].tolist()) == [25, 25]
    flat = torch.cat(parts)
    assert len(flat) == len(torch.unique(flat)) == 20 * 50  # disjoint, every sample used once


def test_classes_fewer_shards_than_classes_leaves_classes_unused() -> None:
    labels = _labels(10, 20)
    parts = P.classes(labels, 7, 1, seed=0)
    held = [set(labels[p].tolist()) for p in parts]
    assert all(len(h) == 1 for h in held) and len(set().union(*held)) == 7
    flat = torch.cat(parts)
    assert len(flat) == len(torch.unique(flat)) == 7 * 20


def test_classes_samples_per_class_reuses_when_class_is_short() -> None:
    labels = _labels(10, 50)
    with pytest.warns(UserWarning, match="share some samples"):
        parts = P.classes(labels, 20, 2, seed=0, samples_per_class=30)  # 4 holders x 30 > 50
    for part in parts:
        assert len(torch.unique(part)) == len(part) == 60
        counts = torch.bincount(labels[part], minlength=10)
        assert sorted(counts[counts > 0].tolist()) == [30, 30]
    with pytest.raises(ValueError, match="fewer than samples_per_class=51"):
        P.classes(labels, 20, 2, seed=0, samples_per_class=51)


@pytest.mark.parametrize("alpha", [0.05, 0.9, 100.0])
@pytest.mark.parametrize("clients", [1, 10, 37])
def test_dirichlet_exact_cover_no_empty_client(alpha: float, clients: int) -> None:
    labels = _labels(10, 40)
    _assert_exact_cover(P.dirichlet(labels, clients, alpha, seed=1), len(labels))


def test_dirichlet_fixes_up_empty_clients() -> None:
    labels = _labels(2, 30)
    parts = P.dirichlet(labels, 50, 0.01, seed=0)  # most clients would be empty without the fix-up
    _assert_exact_cover(parts, 60)


@pytest.mark.parametrize("alpha", [0.1, 0.9, 100.0])
def test_dirichlet_concentration_follows_alpha(alpha: float) -> None:
    """E[sum_i p_i^2] = (alpha + 1) / (K alpha + 1) for p ~ Dir(alpha 1_K): the class's share concentration."""
    clients, num_classes, per_class = 10, 60, 2000
    labels = _labels(num_classes, per_class)
    parts = P.dirichlet(labels, clients, alpha, seed=7)
    share = torch.stack([torch.bincount(labels[p], minlength=num_classes) for p in parts]).double() / per_class
    simpson = (share ** 2).sum(dim=0).mean().item()
    expected = (alpha + 1) / (clients * alpha + 1)
    assert simpson == pytest.approx(expected, rel=0.15)


def test_dirichlet_small_alpha_more_skewed_than_large() -> None:
    labels = _labels(10, 500)
    def skew(alpha: float) -> float:
        parts = P.dirichlet(labels, 10, alpha, seed=0)
        hist = torch.stack([torch.bincount(labels[p], minlength=10) for p in parts]).double()
        return (hist.max(dim=0).values / hist.sum(dim=0)).mean().item()
    assert skew(0.1) > 0.5 > skew(0.9) > skew(1000.0)
    assert skew(1000.0) < 0.13  # near uniform: each client ~10% of every class


def test_by_key_one_client_per_sorted_key() -> None:
    keys = ["TX", "CA", "NY", "CA", "TX", "TX"]
    parts = P.by_key(keys, seed=0)
    assert P.key_order(keys) == ["CA", "NY", "TX"]
    assert [p.tolist() for p in parts] == [[1, 3], [2], [0, 4, 5]]
    assert P.fingerprint(parts) == P.fingerprint(P.by_key(keys, seed=99))
    with pytest.raises(ValueError, match="no keys"):
        P.by_key([], 0)
    assert [p.tolist() for p in P.by_key(np.array([3, 1, 3]))] == [[1], [0, 2]]


@pytest.mark.parametrize("split", [
    lambda y, s: P.iid(y, 10, s),
    lambda y, s: P.classes(y, 10, 2, s),
    lambda y, s: P.classes(y, 10, 2, s, samples_per_class=5),
    lambda y, s: P.dirichlet(y, 10, 0.9, s),
])
def test_seed_determines_fingerprint(split) -> None:
    labels = _labels(10, 30)
    assert P.fingerprint(split(labels, 4)) == P.fingerprint(split(labels, 4))
    assert P.fingerprint(split(labels, 4)) != P.fingerprint(split(labels, 5))


def test_errors() -> None:
    labels = _labels(3, 2)
    with pytest.raises(ValueError, match="cannot split 6 samples over 7 clients"):
        P.dirichlet(labels, 7, 0.9, 0)
    with pytest.raises(ValueError, match="cannot split 6 samples over 7 clients"):
        P.classes(labels, 7, 1, 0)
    with pytest.raises(ValueError, match=r"classes_per_client must be in 1\.\.3"):
        P.classes(labels, 2, 4, 0)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        P.dirichlet(labels, 2, 0.0, 0)
    with pytest.raises(ValueError, match="needs 3 shards"):
        P.classes(labels, 3, 3, 0)  # 9 shards over 3 classes of 2 samples
    with pytest.raises(ValueError, match="num_clients must be an int >= 1"):
        P.iid(labels, 0, 0)
