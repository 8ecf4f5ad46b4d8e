"""Differential tests against ByzFL's implementations, conventions mapped where the libraries differ."""
from __future__ import annotations

import pytest
import torch

from fl_lightning.aggregators import functional as F

byzfl = pytest.importorskip("byzfl")   # in the test extra: this runs in CI


def _inputs(seed: int, k: int = 9, n: int = 6) -> list[torch.Tensor]:
    """A random matrix and an adversarial one (two rows far away, one huge)."""
    g = torch.Generator().manual_seed(seed)
    plain = torch.randn(k, n, generator=g, dtype=torch.float64)
    attacked = plain.clone()
    attacked[2] += 50.0
    attacked[7] = -1e4 * attacked[7].sign()
    return [plain, attacked]


def _close(ours: torch.Tensor, theirs) -> None:
    torch.testing.assert_close(ours.double(), torch.as_tensor(theirs).double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_krum_with_f_plus_one_matches_byzfl(seed):
    # ours scores K - f - 2 neighbours (Blanchard et al.); ByzFL's Krum(f) scores n - f - 1: ours(f) = theirs(f + 1)
    for u in _inputs(seed):
        _close(F.krum(u, 2), byzfl.Krum(f=3)(u.clone()))


@pytest.mark.parametrize("seed", range(3))
def test_coordinate_rules_match_byzfl(seed):
    for u in _inputs(seed):          # odd K: ByzFL's torch median (lower middle value) equals ours
        _close(F.coordinate_median(u), byzfl.Median()(u.clone()))
        _close(F.trimmed_mean(u, f=2), byzfl.TrMean(f=2)(u.clone()))
        _close(F.meamed(u, 2), byzfl.Meamed(f=2)(u.clone()))


def test_mda_tie_breaking_differs_from_byzfl_only_between_equal_diameters():
    # on 0, 1, 2.8, 3, 4, dropping 0 or dropping 4 both leave a diameter of 3. ByzFL keeps the first
    # subset in lexicographic order (drops 4); we first prefer the smaller sum of squared distances
    # (drops 0: 1, 2.8, 3, 4 are tighter), which does not depend on the clients' order
    u = torch.tensor([[0.0], [1.0], [2.8], [3.0], [4.0]], dtype=torch.float64)
    _close(torch.as_tensor(byzfl.MDA(f=1)(u.clone())), u[:4].mean(dim=0))
    ours = F.mda_selection(u, 1)
    assert ours.selected.tolist() == [False, True, True, True, True]
    # with the tighter subset first in row order too, the two agree
    _close(F.mda(u.flip(0), 1), byzfl.MDA(f=1)(u.flip(0).clone()))


@pytest.mark.parametrize("seed", range(3))
def test_subset_rules_match_byzfl(seed):
    # random inputs: no two subsets share the smallest diameter here, so the tie-breaking above never acts
    for u in _inputs(seed):
        _close(F.mda(u, 2), byzfl.MDA(f=2)(u.clone()))
        _close(F.monna(u, 2, trusted=0), byzfl.MoNNA(f=2, idx=0)(u.clone()))


@pytest.mark.parametrize("seed", range(3))
def test_smea_matches_byzfl_in_one_dimension(seed):
    # ByzFL estimates the top eigenvalue by one power-iteration step from a random vector; in one
    # dimension that step is exact, so the rules must agree there
    for u in _inputs(seed, n=1):
        _close(F.smea(u, 2), byzfl.SMEA(f=2)(u.clone()))


def test_caf_convention_differs_from_byzfl_only_in_the_shrinking_maximum():
    # CAF shrinks c_i *= 1 - tau_i / tau_max. ByzFL takes tau_max over every client, including those
    # already at c = 0; we take it over the clients still weighted (the multiplicative filter's rule),
    # so each step zeroes one more client. With one step (f=1, and the first step already brings
    # sum c under K - 2f) no zeroed client exists yet and the two must agree.
    u = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    _close(F.caf(u, 1), byzfl.CAF(f=1)(u.clone()))
    # a client far away, once zeroed, would keep ByzFL's maximum and shrink the others by ~1e-8 a
    # step; ours ends within K steps and drops it
    far = torch.cat([u, torch.tensor([[-1e4]], dtype=torch.float64)])
    assert F.caf_details(far, 2).client_weights[5] == 0


@pytest.mark.parametrize("seed", range(3))
def test_pre_aggregators_match_byzfl(seed):
    for u in _inputs(seed):
        _close(F.nnm(u, 2), byzfl.NNM(f=2)(u.clone()))
        _close(F.arc(u, 2), byzfl.ARC(f=2)(u.clone()))
        # bucketing's shuffle differs; the deterministic parts agree: s = K is the mean, s = 1 the rows
        _close(F.bucketing(u, u.shape[0])[0], byzfl.Bucketing(s=u.shape[0])(u.clone())[0])
        ours = F.bucketing(u, 1, torch.Generator().manual_seed(seed))
        theirs = torch.as_tensor(byzfl.Bucketing(s=1)(u.clone()))
        _close(ours.sort(dim=0).values, theirs.sort(dim=0).values)


@pytest.mark.parametrize("seed", range(3))
def test_centered_clipping_from_zero_matches_byzfl(seed):
    # ByzFL starts at zero (its m=None); ours at the coordinate median unless a center is given
    for u in _inputs(seed):
        _close(F.centered_clipping(u, tau=2.0, iters=3, center=torch.zeros(u.shape[1], dtype=u.dtype)),
               byzfl.CenteredClipping(L=3, tau=2.0)(u.clone()))


@pytest.mark.parametrize("seed", range(3))
def test_multi_krum_maps_to_byzfl_with_f_plus_one(seed):
    # ByzFL's MultiKrum(f) scores n - f - 1 neighbours and averages the n - f best: with our K - f - 2
    # neighbours that is our f + 1 less, so ours(f, m = K - f - 1) = theirs(f + 1)
    for u in _inputs(seed):
        k = u.shape[0]
        _close(F.krum(u, 2, m=k - 3), byzfl.MultiKrum(f=3)(u.clone()))


@pytest.mark.parametrize("seed", range(3))
def test_even_k_medians_match_byzfl_on_numpy_input(seed):
    # for an even count torch.median (ByzFL's torch path) returns the lower middle value; its numpy path
    # and ours take the mean of the two middle values, so the numpy path is the one to compare
    for u in _inputs(seed, k=10):
        _close(F.coordinate_median(u), byzfl.Median()(u.numpy().copy()))
        _close(F.meamed(u, 2), byzfl.Meamed(f=2)(u.numpy().copy()))


@pytest.mark.parametrize("seed", range(3))
def test_geometric_median_converges_to_byzfls_smoothed_fixed_point(seed):
    # both run smoothed Weiszfeld (distances floored at nu = eps); ByzFL starts at 0 for T steps, we
    # start at the coordinate median and stop on a small step: run both to convergence
    u = _inputs(seed)[0]
    ours = F.geometric_median(u, eps=0.1, tol=1e-13, max_iter=20000)
    theirs = byzfl.GeometricMedian(nu=0.1, T=3000)(u.clone())
    torch.testing.assert_close(ours.double(), torch.as_tensor(theirs).double(), rtol=1e-5, atol=1e-6)
