"""The order-statistics machinery under every rule: selection networks, the key-sorting network."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_lightning.aggregators import functional as F


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), width=st.integers(1, 9), seed=st.integers(0, 2 ** 31 - 1), ties=st.booleans(),
       data=st.data())
def test_order_statistics_equal_those_of_a_full_sort(n, width, seed, ties, data):
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(-3, 4, (n, width), generator=g).float() if ties else torch.randn(n, width, generator=g)
    ranks = tuple(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3)))
    expected = torch.sort(values, dim=0).values
    for got, rank in zip(F._order_statistics(values, ranks), ranks):
        assert torch.equal(got, expected[rank])


def test_order_statistics_leave_their_input_alone_unless_scratch():
    values = torch.randn(9, 5)
    copy = values.clone()
    F._order_statistics(values, (4,))
    assert torch.equal(values, copy)


def test_order_statistics_beyond_the_network_use_kthvalue():
    values = torch.randn(F._NETWORK_MAX + 3, 4)
    lo, hi = F._order_statistics(values, (10, 100))
    expected = torch.sort(values, dim=0).values
    assert torch.equal(lo, expected[10]) and torch.equal(hi, expected[100])


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 40), width=st.integers(1, 7), seed=st.integers(0, 2 ** 31 - 1), ties=st.booleans())
def test_key_sorting_network_is_a_stable_sort(k, width, seed, ties):
    g = torch.Generator().manual_seed(seed)
    if ties:
        values = torch.tensor([-2.5, -0.0, 0.0, 1.0, 3e38, -3e38, 1e-45])[torch.randint(0, 7, (k, width), generator=g)]
    else:
        values = torch.randn(k, width, generator=g) * 1e3
    ys, order = F._stable_sort0(values)
    expected = torch.sort(values, dim=0, stable=True)
    assert torch.equal(ys, expected.values) and torch.equal(order, expected.indices)


def test_float64_columns_fall_back_to_torch_sort():
    values = torch.randn(6, 3, dtype=torch.float64)
    ys, order = F._stable_sort0(values)
    assert ys.dtype == torch.float64 and torch.equal(order, torch.sort(values, dim=0, stable=True).indices)


@pytest.mark.parametrize("k", [3, 4, 7, 10])
def test_repeated_median_line_is_siegels_estimator(k):
    # brute force on one column: slope = med_i med_{j != i} of pairwise slopes (numpy-style medians),
    # intercept = med(y) - slope (K - 1) / 2 (reference) or med_i (y_i - slope i) (paper)
    y = torch.randn(k, 1, generator=torch.Generator().manual_seed(k)).double()
    ys = torch.sort(y[:, 0]).values.tolist()

    def median(xs):
        xs = sorted(xs)
        return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2

    slope = median([median([(ys[j] - ys[i]) / (j - i) for j in range(k) if j != i]) for i in range(k)])
    line = F.robust_line(y.float())
    torch.testing.assert_close(line.slope, torch.tensor([slope], dtype=torch.float32))
    torch.testing.assert_close(line.intercept, torch.tensor([median(ys) - slope * (k - 1) / 2], dtype=torch.float32))
    paper = F.robust_line(y.float(), variant="paper")
    torch.testing.assert_close(paper.intercept,
                               torch.tensor([median([v - slope * i for i, v in enumerate(ys)])], dtype=torch.float32))
