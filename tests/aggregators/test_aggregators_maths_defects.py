"""Maths defects found by the differential tests against ByzFL and ByzPy, one test each (issue 20, item 12)."""
from __future__ import annotations

import pytest
import torch

from fl_lightning.aggregators import functional as F


def _with_outlier(k: int = 9, n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(k, n, generator=g, dtype=torch.float64)
    u[0] += 50.0
    return u


@pytest.mark.parametrize("scale", [1e-9, 1e-6, 1e-3, 1e3, 1e6])
def test_caf_is_scale_invariant(scale: float) -> None:
    """Scaling every update by ``s`` scales CAF's aggregate by ``s`` and keeps its filter weights:
    an absolute floor gave updates of norm 1e-6 the plain mean, outlier included."""
    u = _with_outlier()
    base = F.caf_details(u, 2)
    scaled = F.caf_details(u * scale, 2)
    torch.testing.assert_close(scaled.client_weights, base.client_weights, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(scaled.aggregate, base.aggregate * scale, rtol=1e-6, atol=0)
    assert float(scaled.client_weights[0]) < 0.5 * float(scaled.client_weights[1:].max())


def test_caf_of_identical_rows_is_that_row() -> None:
    u = torch.full((5, 3), 1e-7, dtype=torch.float64)
    torch.testing.assert_close(F.caf(u, 1), u[0])


def test_monna_without_rows_names_the_missing_clients() -> None:
    with pytest.raises(ValueError, match=r"monna needs K >= 1 clients .*got 0 rows"):
        F.monna(torch.zeros(0, 3), 0)


@pytest.mark.parametrize("f", [3, 4, 10])
def test_arc_refuses_f_without_an_honest_majority(f: int) -> None:
    with pytest.raises(ValueError, match=r"arc needs K > 2f finite clients: with f=\d+ that is at least"):
        F.arc(torch.randn(6, 4), f)


def test_arc_accepts_f_below_half() -> None:
    u = torch.randn(6, 4)
    assert F.arc(u, 2).shape == (6, 4)


@pytest.mark.parametrize("with_nan_row", [False, True])
def test_arc_in_place_gives_the_copy_s_values_and_scales_only_the_clipped_rows(with_nan_row: bool) -> None:
    u = torch.randn(10, 50, generator=torch.Generator().manual_seed(1))
    u[3] *= 40.0
    u[7] *= 9.0
    if with_nan_row:
        u[5, 2] = float("nan")
    expected = F.arc(u, 3)
    given = u.clone()
    out = F.arc(given, 3, inplace=True)
    assert torch.equal(out, expected)
    if with_nan_row:                                     # the finite rows are a new tensor: the input is kept
        assert torch.equal(given.nan_to_num(), u.nan_to_num())
    else:
        assert out.data_ptr() == given.data_ptr()
        changed = (given != u).any(dim=1)
        assert changed.sum() == F.arc_clip_count(10, 3) and bool(changed[3]) and bool(changed[7])
