"""Every fast path of the functional rules against a float64 reference written out plainly (issue 21).

Order statistics are exact whatever the path (network, transposed selection, sort): the median must equal
the reference bit for bit. Sums may round in another order: the means are compared within float32 rounding.
"""
from __future__ import annotations

import pytest
import torch

from fl_lightning.aggregators import functional as F


def _matrix(k: int, n: int, seed: int, ties: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(k, n, generator=g)
    if ties:                                    # many equal values per column: ranks must still be exact
        u = (u * 2).round() / 2
    return u


def _median_reference(u: torch.Tensor) -> torch.Tensor:
    k = u.shape[0]
    s = torch.sort(u, dim=0).values
    return (s[(k - 1) // 2] + s[k // 2]) / 2


SIZES = [(5, 300), (32, 300), (33, 300), (64, 700), (128, 300), (129, 300), (200, 300), (257, 100)]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k,n", SIZES)
def test_coordinate_median_equals_the_sorted_middle_exactly(k: int, n: int, ties: bool) -> None:
    u = _matrix(k, n, k + n, ties)
    assert torch.equal(F.coordinate_median(u), _median_reference(u))
    assert torch.equal(F.coordinate_median(u, chunk_size=7), _median_reference(u))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k,n", SIZES)
def test_trimmed_mean_matches_float64(k: int, n: int, ties: bool) -> None:
    u = _matrix(k, n, k * n, ties)
    f = k // 5
    s = torch.sort(u.double(), dim=0).values
    expected = s[f:k - f].mean(dim=0)
    torch.testing.assert_close(F.trimmed_mean(u, f=f).double(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [100, 129, 200])
def test_median_of_a_three_dim_block_takes_the_transposed_path_exactly(k: int) -> None:
    from fl_lightning.aggregators.functional import _median0

    values = _matrix(k, 3 * 40, 5).reshape(k, 3, 40)
    expected = _median_reference(values.reshape(k, -1)).reshape(3, 40)
    assert torch.equal(_median0(values), expected)
    m = k - 1                                   # skip the smallest, as residual reweighting's scale does
    s = torch.sort(values, dim=0).values[1:]
    assert torch.equal(_median0(values, skip_smallest=1), (s[(m - 1) // 2] + s[m // 2]) / 2)
