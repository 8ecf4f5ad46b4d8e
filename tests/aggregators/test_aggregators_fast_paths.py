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


SIZES = [(5, 300), (32, 300), (33, 300), (64, 700), (128, 300), (129, 300), (200, 300), (256, 100), (257, 100)]


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
    u[:, 0] = 0.25                              # a constant column: the first and last kept values are equal
    u[: k // 2, 1] = -1.0                       # half the column one value: ties across the lower cut
    f = k // 5
    s = torch.sort(u.double(), dim=0).values
    expected = s[f:k - f].mean(dim=0)
    torch.testing.assert_close(F.trimmed_mean(u, f=f).double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(F.trimmed_mean(u, f=f, chunk_size=7).double(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [100, 129, 200])
def test_median_of_a_three_dim_block_takes_the_transposed_path_exactly(k: int) -> None:
    from fl_lightning.aggregators.functional import _median0

    values = _matrix(k, 3 * 40, 5).reshape(k, 3, 40)
    expected = _median_reference(values.reshape(k, -1)).reshape(3, 40)
    assert torch.equal(_median0(values), expected)
    m = k - 1                                   # skip the smallest, as residual reweighting's scale does
    s = torch.sort(values, dim=0).values[1:]
    assert torch.equal(_median0(values, skip_smallest=1), (s[(m - 1) // 2] + s[m // 2]) / 2)


# -- Krum's float32 fast path: the selection must be the float64 path's exactly ------------------------------
@pytest.fixture
def krum_fast_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the fast path even on the small inputs of these tests."""
    from fl_lightning.aggregators.functional import _fast_distances

    monkeypatch.setattr(_fast_distances, "FAST_MIN_ELEMENTS", 0)


def _krum_inputs(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k, n = 12, 3000
    plain = torch.randn(k, n, generator=g)
    crowded = plain.clone()
    crowded[1] = crowded[0]                          # duplicates: equal scores, broken by the sum of distances
    crowded[5] = crowded[4] + 1e-3
    crowded[9] *= 50.0
    near = 1.0 + 1e-6 * torch.randn(k, n, generator=g)   # every score within float32 rounding of the others
    return [plain, crowded, near, plain * 1e-20, plain * 1e15]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("f", [1, 3, 4])
def test_krum_fast_path_selects_what_float64_selects(krum_fast_everywhere: None, seed: int, f: int) -> None:
    from fl_lightning.aggregators.functional import krum_ranking

    for u in _krum_inputs(seed):
        exact = krum_ranking(u, f)
        for m in (1, 2, 5):
            fast = krum_ranking(u, f, exact_prefix=m)
            assert torch.equal(fast.order[:m], exact.order[:m]), (m, fast.order, exact.order)
            torch.testing.assert_close(fast.scores, exact.scores, rtol=1e-4, atol=0)
        assert torch.equal(F.krum(u, f), u[exact.order[0]])


def test_krum_fast_path_drops_non_finite_rows_as_float64_does(krum_fast_everywhere: None) -> None:
    from fl_lightning.aggregators.functional import krum_ranking

    u = _krum_inputs(0)[0]
    u[3, 7] = float("nan")
    u[6, 0] = float("inf")
    exact = krum_ranking(u, 2)
    for finite in (None, torch.isfinite(u).all(dim=1)):
        fast = krum_ranking(u, 2, finite=finite, exact_prefix=1)
        assert int(fast.order[0]) == int(exact.order[0])
        assert torch.isinf(fast.scores[[3, 6]]).all()


def test_krum_fast_path_rescoring_matches_float64_scores(krum_fast_everywhere: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows whose float32 intervals overlap are rescored in float64: their scores equal the exact ones."""
    from fl_lightning.aggregators.functional import _fast_distances, krum_ranking

    monkeypatch.setattr(_fast_distances, "_MAX_RESCORED_SHARE", 1.0)
    g = torch.Generator().manual_seed(3)
    u = torch.randn(10, 4000, generator=g)
    u[1:4] = u[0] + 1e-4 * torch.randn(3, 4000, generator=g)     # four rows within float32 noise of each other
    u[7] = u[6]
    exact = krum_ranking(u, 2)
    true = torch.cdist(u.double(), u.double()).square()
    true_scores = torch.sort(true, dim=1).values[:, 1:10 - 2 - 1].sum(dim=1)
    for m in (1, 3, 5):
        fast = krum_ranking(u, 2, exact_prefix=m)
        assert torch.equal(fast.order[:m], exact.order[:m])
        torch.testing.assert_close(fast.scores[fast.order[:m]], true_scores[fast.order[:m]], rtol=1e-9, atol=0)


@pytest.mark.parametrize("seed", range(4))
def test_multi_krum_fast_path_selects_the_float64_set(krum_fast_everywhere: None, seed: int) -> None:
    from fl_lightning.aggregators.functional import krum_ranking

    for u in _krum_inputs(seed):
        k, f = u.shape[0], 2
        exact = krum_ranking(u, f)
        for m in (3, k - f - 1, k - f):
            fast = krum_ranking(u, f, exact_prefix=m, prefix_as_set=True)
            assert torch.equal(fast.order[:m].sort().values, exact.order[:m].sort().values)
            assert torch.equal(F.krum(u, f, m=m), u[exact.order[:m].sort().values].mean(dim=0))


def test_finite_rows_finds_every_kind_of_non_finite_row_and_keeps_overflowing_finite_ones() -> None:
    u = torch.randn(7, 50)
    u[1, 3] = float("nan")
    u[2, 0] = float("inf")
    u[3, 5], u[3, 6] = float("inf"), float("-inf")
    u[4] = 3e38                                  # finite, but its float32 sum overflows
    u[5, :2] = torch.tensor([3e38, -3e38])
    expected = torch.isfinite(u).all(dim=1)
    assert F.finite_rows(u).tolist() == expected.tolist() == [True, False, False, False, True, True, True]


def test_multi_krum_set_takes_each_tier_and_still_selects_the_float64_set(krum_fast_everywhere: None,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows left undecided by the float32 bounds go to float64 products, near-ties on to exact differences."""
    from fl_lightning.aggregators.functional import _fast_distances, krum_ranking

    calls = {"float64": 0, "exact": 0}
    float64_rows, exact_rows = _fast_distances._float64_sq_distances, _fast_distances._true_sq_distances

    def spy_float64(values, rows):
        calls["float64"] += 1
        return float64_rows(values, rows)

    def spy_exact(values, rows):
        calls["exact"] += 1
        return exact_rows(values, rows)

    monkeypatch.setattr(_fast_distances, "_float64_sq_distances", spy_float64)
    monkeypatch.setattr(_fast_distances, "_true_sq_distances", spy_exact)
    monkeypatch.setattr(_fast_distances, "_MAX_RESCORED_SHARE", 1.0)
    g = torch.Generator().manual_seed(5)
    k, n, f = 30, 20_000, 5
    u = torch.randn(k, n, generator=g)
    u[10:20] = u[0] + 1e-3 * torch.randn(10, n, generator=g)   # scores within float32 error: float64 decides
    u[21] = u[20]                                                # an exact tie: only exact differences decide
    exact = krum_ranking(u, f)
    for m in range(1, k - f + 1):
        fast = krum_ranking(u, f, exact_prefix=m, prefix_as_set=True)
        assert torch.equal(fast.order[:m].sort().values, exact.order[:m].sort().values), m
        assert torch.equal(fast.order.sort().values, torch.arange(k))          # a permutation of the rows
    assert calls["float64"] > 0 and calls["exact"] > 0, calls


@pytest.mark.parametrize("seed", range(3))
def test_multi_krum_set_on_random_crowds_matches_float64(krum_fast_everywhere: None, seed: int) -> None:
    from fl_lightning.aggregators.functional import krum_ranking

    g = torch.Generator().manual_seed(seed)
    k, n = 40, 30_000
    u = torch.randn(k, n, generator=g) * torch.rand(k, 1, generator=g) + torch.randn(1, n, generator=g)
    for f in (1, 5, 15):
        exact = krum_ranking(u, f)
        for m in (1, k // 2, k - f - 1, k - f):
            fast = krum_ranking(u, f, exact_prefix=m, prefix_as_set=True)
            assert torch.equal(fast.order[:m].sort().values, exact.order[:m].sort().values), (f, m)


@pytest.mark.parametrize("k, n", [(3, 1), (7, 4095), (5, 4096), (4, 12345), (30, 70000)])
@pytest.mark.parametrize("with_center", [False, True])
def test_row_distances_match_float64_to_float32_rounding(k: int, n: int, with_center: bool) -> None:
    g = torch.Generator().manual_seed(k * n)
    u = torch.randn(k, n, generator=g) * torch.logspace(-3, 3, k).unsqueeze(1)
    u[1, 0] = float("nan")
    center = torch.randn(n, generator=g) if with_center else None
    finite = torch.isfinite(u).all(dim=1)
    expected = ((u[finite].double() - (0 if center is None else center.double())) ** 2).sum(dim=1).sqrt()
    got = F.row_distances(u, center)
    assert torch.isinf(got[1]) and torch.isfinite(got[finite]).all()
    assert torch.allclose(got[finite], expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("m", [1, 4, 9])
def test_krum_without_exactness_selects_the_exact_set_when_scores_are_apart(m: int) -> None:
    g = torch.Generator().manual_seed(m)
    u = torch.randn(12, 5000, generator=g) * torch.linspace(1.0, 3.0, 12).unsqueeze(1)   # scores well apart
    u[[2, 7]] += 5.0
    assert torch.equal(F.krum(u, 2, m=m, exact=False), F.krum(u, 2, m=m))
    assert torch.equal(F.krum_ranking(u, 2, exact=False).order[:m].sort().values,
                       F.krum_ranking(u, 2).order[:m].sort().values)


def test_krum_without_exactness_uses_one_float32_product(monkeypatch: pytest.MonkeyPatch) -> None:
    from fl_lightning.aggregators.functional import distance

    def no_fast_path(*args, **kwargs):
        raise AssertionError("exact=False must not take the exact fast path")

    monkeypatch.setattr(distance, "krum_scores_fast", no_fast_path)
    seen: list[torch.dtype] = []
    matmul = torch.Tensor.__matmul__

    def spy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        seen.append(a.dtype)
        return matmul(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    F.krum(torch.randn(30, 20000), 3, m=20, exact=False)
    assert seen and set(seen) == {torch.float32}


def test_krum_class_passes_exact_through_and_refuses_a_non_bool() -> None:
    from fl_lightning.aggregators import Krum, MultiKrum

    assert MultiKrum(f=1, exact=False).exact is False and Krum(f=1).exact is True
    with pytest.raises(TypeError, match="exact must be True or False"):
        Krum(f=1, exact="no")  # type: ignore[arg-type]


def test_nnm_without_exactness_mixes_the_same_neighbours_when_distances_are_apart() -> None:
    from fl_lightning.aggregators import NNM, TrimmedMean

    g = torch.Generator().manual_seed(5)
    u = torch.randn(9, 4000, generator=g) * torch.linspace(1.0, 4.0, 9).unsqueeze(1)
    assert torch.equal(F.nnm_weights(u, 2, exact=False), F.nnm_weights(u, 2))
    assert torch.equal(F.nnm(u, 2, exact=False), F.nnm(u, 2))
    assert NNM(TrimmedMean(f=1), f=2, exact=False).exact is False
    with pytest.raises(TypeError, match="exact must be True or False"):
        NNM(TrimmedMean(f=1), f=2, exact=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("call, message", [
    (lambda u: F.krum(u, 1, exact="no"), "krum: exact must be True or False, got 'no'"),
    (lambda u: F.nnm(u, 1, exact=0), "nnm: exact must be True or False, got 0"),
    (lambda u: F.arc(u, 1, inplace="yes"), "arc: inplace must be True or False, got 'yes'"),
])
def test_the_new_switches_refuse_anything_but_a_bool(call, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        call(torch.randn(7, 20))


def _non_finite_and_overflowing_rows(k: int = 9, n: int = 5000) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    u = torch.randn(k, n, generator=g)
    u[2, 7] = float("nan")
    u[4, 0] = float("-inf")
    u[5, :3] = 3e38                    # finite, but its squared norm overflows float32
    return u


def test_row_distances_scan_only_rows_whose_distance_is_not_finite() -> None:
    """The distances stand in for the finite-row scan; every row's value is the masked computation's."""
    u = _non_finite_and_overflowing_rows()
    finite = torch.isfinite(u).all(dim=1)
    for center in (None, u[0].clone()):
        scanned = F.row_distances(u, center)
        given = F.row_distances(u, center, finite=finite)
        assert torch.equal(scanned, given)
        assert torch.isinf(scanned[[2, 4]]).all() and torch.isinf(scanned[5])      # overflow: +inf, still finite
        assert torch.isfinite(scanned[[0, 1, 3, 6, 7, 8]]).all()


def test_arc_and_monna_drop_non_finite_rows_and_keep_overflowing_ones_as_with_a_given_mask() -> None:
    u = _non_finite_and_overflowing_rows()
    finite = torch.isfinite(u).all(dim=1)
    assert torch.equal(F.arc(u, 2), F.arc(u, 2, finite=finite))
    assert F.arc(u, 2).shape == (7, u.shape[1])
    assert torch.equal(F.arc_scales(u, 2), F.arc_scales(u, 2, finite=finite))
    kept = F.monna_selection(u, 2, trusted=1)
    assert torch.equal(kept.aggregate, F.monna_selection(u, 2, trusted=1, finite=finite).aggregate)
    assert not kept.selected[[2, 4]].any()
    with pytest.raises(ValueError, match="trusted row 2 holds NaN or Inf"):
        F.monna(u, 2, trusted=2)
    with pytest.raises(ValueError, match=r"arc needs K >= 1 finite clients, got 0 \(3 of 3 rows"):
        F.arc(torch.full((3, 4), float("nan")), 1)


def test_residual_reweight_returns_plain_tensors_differentiable_in_the_updates() -> None:
    """Its chunks run in inference mode; what it returns must not be inference tensors."""
    u = torch.randn(12, 300, requires_grad=True)
    result = F.residual_reweight(u)
    assert not result.aggregate.is_inference() and not result.client_weights.is_inference()
    result.aggregate.sum().backward()
    assert u.grad is not None and torch.isfinite(u.grad).all()
    result.client_weights.add_(0)                      # in place outside inference mode: allowed


@pytest.mark.parametrize("exact", [True, False])
def test_gram_rules_find_non_finite_rows_from_the_gram_diagonal_as_a_scan_would(exact: bool) -> None:
    """Krum and NNM take the Gram matrix of every row first; its diagonal stands in for the scan."""
    from fl_lightning.aggregators.functional import krum_ranking

    u = _non_finite_and_overflowing_rows(k=12, n=3000)
    finite = torch.isfinite(u).all(dim=1)
    scanned, given = krum_ranking(u, 2, exact=exact), krum_ranking(u, 2, finite=finite, exact=exact)
    assert torch.equal(scanned.order, given.order) and torch.equal(scanned.scores, given.scores)
    assert torch.isinf(scanned.scores[[2, 4]]).all() and not set(scanned.order.tolist()) & {2, 4}
    assert torch.equal(F.nnm(u, 3, exact=exact), F.nnm(u, 3, finite=finite, exact=exact))
    assert F.nnm(u, 3, exact=exact).shape == (10, 3000)
    clean = u[finite]
    assert torch.equal(F.nnm(clean, 3, exact=exact), F.nnm(clean, 3, finite=torch.ones(10, dtype=torch.bool),
                                                           exact=exact))
    with pytest.raises(ValueError, match=r"nnm needs K >= 1 finite clients, got 0 \(2 of 2 rows"):
        F.nnm(torch.full((2, 5), float("inf")), 0)


def test_centered_clipping_from_a_center_scans_through_its_first_distances() -> None:
    u = _non_finite_and_overflowing_rows()
    u[5] = 1.0                                        # no overflow here: clipping from a center needs norms
    finite = torch.isfinite(u).all(dim=1)
    center = u[finite].mean(dim=0)
    scanned = F.centered_clipping(u, tau=0.5, iters=3, center=center)
    assert torch.equal(scanned, F.centered_clipping(u, tau=0.5, iters=3, center=center, finite=finite))
    assert torch.equal(scanned, F.centered_clipping(u[finite], tau=0.5, iters=3, center=center))
    with pytest.raises(ValueError, match="centered_clipping needs at least 1 finite client, got 0 of 2"):
        F.centered_clipping(torch.full((2, 4), float("nan")), center=torch.zeros(4))
