"""Properties every rule should have, checked with hypothesis on random client updates."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_lightning.aggregators import functional as F

FAST = settings(max_examples=20, deadline=None)

#: name -> (rule, fewest clients it accepts)
RULES = {
    "fedavg": (lambda u: F.fedavg(u), 1),
    "coordinate_median": (F.coordinate_median, 1),
    "trimmed_mean": (lambda u: F.trimmed_mean(u, 0.2), 1),
    "repeated_median": (F.repeated_median, 1),
    "residual_reweight": (lambda u: F.residual_reweight(u).aggregate, 3),
    "residual_reweight_paper": (lambda u: F.residual_reweight(u, variant="paper").aggregate, 3),
    "residual_reweight_theil_sen": (lambda u: F.residual_reweight(u, estimator="theil_sen").aggregate, 3),
    "residual_reweight_median": (lambda u: F.residual_reweight(u, estimator="median").aggregate, 3),
    "residual_reweight_gaussian": (lambda u: F.residual_reweight(u, weighting="gaussian").aggregate, 3),
    "krum": (lambda u: F.krum(u, f=1), 5),
    "multi_krum": (lambda u: F.krum(u, f=1, m=3), 5),
    "bulyan": (lambda u: F.bulyan(u, f=1), 7),
    "geometric_median": (lambda u: F.geometric_median(u, tol=1e-9, max_iter=500), 1),
    "centered_clipping": (lambda u: F.centered_clipping(u, tau=1.0), 1),
    "norm_clipping": (lambda u: F.norm_clipping(u, 1.0), 1),
    "mda": (lambda u: F.mda(u, 1), 3),
    "meamed": (lambda u: F.meamed(u, 1), 3),
    "caf": (lambda u: F.caf(u, 1), 3),
    "smea": (lambda u: F.smea(u, 1), 3),
    "dnc": (lambda u: F.dnc(u, 1, sub_dim=8, generator=torch.Generator().manual_seed(0)), 3),
    "flame": (lambda u: F.flame(u, noise=0.0), 2),
    "nnm_then_mean": (lambda u: F.nnm(u, 1).mean(dim=0), 2),
    "arc_then_mean": (lambda u: F.arc(u, 1).mean(dim=0), 1),
}
#: rules whose result moves with a shift / scales with a positive factor of every update (FLAME and
#: ARC look at directions and norms, which a shift changes)
EQUIVARIANT = [n for n in RULES if n not in ("norm_clipping", "flame", "arc_then_mean")]
SCALE_EQUIVARIANT = [n for n in EQUIVARIANT if n != "centered_clipping"] + ["flame", "arc_then_mean"]
#: residual-reweighting variants that also return client weights
WEIGHTED = {
    "reference": {}, "paper": {"variant": "paper"}, "theil_sen": {"estimator": "theil_sen"},
    "median": {"estimator": "median"}, "gaussian": {"weighting": "gaussian"},
}


def _updates(seed: int, k: int, n: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, n, generator=g) * scale + torch.randn(1, n, generator=g)


clients = st.integers(min_value=3, max_value=12)
columns = st.integers(min_value=1, max_value=24)
seeds = st.integers(min_value=0, max_value=2 ** 31 - 1)


def _close(actual: torch.Tensor, expected: torch.Tensor, magnitude: float = 1.0, rel: float = 1e-4) -> None:
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * magnitude)


@pytest.mark.parametrize("name", list(RULES))
@FAST
@given(k=clients, n=columns, seed=seeds, data=st.data())
def test_permuting_clients_leaves_the_aggregate_unchanged(name, k, n, seed, data):
    rule, fewest = RULES[name]
    k = max(k, fewest)
    u = _updates(seed, k, n)
    perm = torch.tensor(data.draw(st.permutations(list(range(k)))))
    _close(rule(u[perm]), rule(u), float(u.abs().max()))


@pytest.mark.parametrize("variant", list(WEIGHTED))
@FAST
@given(k=clients, n=columns, seed=seeds, data=st.data())
def test_permuting_clients_permutes_the_residual_weights(variant, k, n, seed, data):
    u = _updates(seed, k, n)
    perm = torch.tensor(data.draw(st.permutations(list(range(k)))))
    _, weights = F.residual_reweight(u, **WEIGHTED[variant])
    _, permuted = F.residual_reweight(u[perm], **WEIGHTED[variant])
    torch.testing.assert_close(permuted, weights[perm], rtol=1e-4, atol=1e-6)
    assert torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("name", EQUIVARIANT)
@FAST
@given(k=clients, n=columns, seed=seeds, shift=st.floats(-10, 10))
def test_shifting_every_update_shifts_the_aggregate(name, k, n, seed, shift):
    rule, fewest = RULES[name]
    k = max(k, fewest)
    u = _updates(seed, k, n)
    offset = torch.linspace(-1, 1, n) * shift
    _close(rule(u + offset), rule(u) + offset, float(u.abs().max()) + abs(shift), rel=2e-4)


@pytest.mark.parametrize("name", SCALE_EQUIVARIANT)
@FAST
@given(k=clients, n=columns, seed=seeds, factor=st.floats(0.1, 10))
def test_scaling_every_update_scales_the_aggregate(name, k, n, seed, factor):
    rule, fewest = RULES[name]
    k = max(k, fewest)
    u = _updates(seed, k, n)
    _close(rule(u * factor), rule(u) * factor, float(u.abs().max()) * factor, rel=2e-4)


@pytest.mark.parametrize("name", list(RULES))
@FAST
@given(k=clients, n=columns, seed=seeds)
def test_identical_clients_give_their_common_update(name, k, n, seed):
    rule, fewest = RULES[name]
    k = max(k, fewest)
    row = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    if name == "norm_clipping":
        row = row / (row.norm() * 2)                   # inside the clipping ball
    _close(rule(row.expand(k, n).clone()), row, float(row.abs().max()), rel=1e-5)


@FAST
@given(k=clients, n=columns, seed=seeds)
def test_identical_clients_get_uniform_residual_weights(k, n, seed):
    row = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    for options in WEIGHTED.values():
        _, weights = F.residual_reweight(row.expand(k, n).clone(), **options)
        torch.testing.assert_close(weights, torch.full((k,), 1 / k))


def _attacked(seed: int, k: int, n: int, f: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` updates of which ``f`` (shuffled in) are replaced by huge values; also the honest rows."""
    g = torch.Generator().manual_seed(seed)
    honest = torch.randn(k - f, n, generator=g)
    huge = torch.randn(f, n, generator=g).sign() * 1e6 * (1 + torch.rand(f, n, generator=g))
    u = torch.cat([honest, huge])[torch.randperm(k, generator=g)]
    return u, honest


def _inside_widened_range(aggregate: torch.Tensor, honest: torch.Tensor) -> bool:
    lo, hi = honest.min(dim=0).values, honest.max(dim=0).values
    margin = 0.1 * (hi - lo)
    return bool(torch.all((aggregate >= lo - margin) & (aggregate <= hi + margin)))


@FAST
@given(k=st.integers(3, 13), n=columns, seed=seeds, data=st.data())
def test_robust_rules_stay_in_the_honest_range_under_huge_values(k, n, seed, data):
    f = data.draw(st.integers(1, (k - 1) // 2))                  # fewer than K/2 attackers
    u, honest = _attacked(seed, k, n, f)
    assert _inside_widened_range(F.coordinate_median(u), honest)
    assert _inside_widened_range(F.repeated_median(u), honest)
    assert _inside_widened_range(F.trimmed_mean(u, beta=(f + 0.1) / k), honest)   # trims f per side
    if k >= 2 * f + 2:
        # the reference's inner median of an even number of slopes (odd K) averages the two middle
        # ones, so residual reweighting needs one more honest client than a median: K >= 2f + 2.
        # Not Theil-Sen: its breakdown point is 29% (the paper's Table 7 finds it attackable).
        for variant, options in WEIGHTED.items():
            if variant != "theil_sen":
                assert _inside_widened_range(F.residual_reweight(u, **options).aggregate, honest), options
    if k > 2 * f + 2:
        assert _inside_widened_range(F.krum(u, f=f), honest)
    # the geometric median is not coordinate-wise: it stays within K/(K-2f) times the radius of the
    # honest points around their mean (the objective decreases toward the mean beyond that)
    center = honest.mean(dim=0)
    radius = float((honest - center).norm(dim=1).max())
    gm = F.geometric_median(u, tol=1e-9, max_iter=1000)
    assert float((gm - center).norm()) <= radius * k / (k - 2 * f) * 1.01 + 1e-5
    assert not _inside_widened_range(F.fedavg(u), honest)


@pytest.mark.parametrize("name", ["coordinate_median", "trimmed_mean", "repeated_median", "bulyan", "meamed", "rr",
                                  "rr_theil_sen", "rr_paper", "robust_line"])
@FAST
@given(k=st.integers(7, 12), n=st.integers(1, 40), seed=seeds)
def test_results_do_not_depend_on_chunking(name, k, n, seed):
    u = _updates(seed, k, n)
    rules = {
        "coordinate_median": lambda c: F.coordinate_median(u, chunk_size=c),
        "trimmed_mean": lambda c: F.trimmed_mean(u, 0.2, chunk_size=c),
        "repeated_median": lambda c: F.repeated_median(u, chunk_size=c),
        "bulyan": lambda c: F.bulyan(u, 1, chunk_size=c),
        "meamed": lambda c: F.meamed(u, 2, chunk_size=c),
        "rr": lambda c: torch.cat(F.residual_reweight(u, chunk_size=c)),
        "rr_theil_sen": lambda c: torch.cat(F.residual_reweight(u, estimator="theil_sen", chunk_size=c)),
        "rr_paper": lambda c: torch.cat(F.residual_reweight(u, variant="paper", chunk_size=c)),
        "robust_line": lambda c: torch.cat(F.robust_line(u, chunk_size=c)),
    }
    whole = rules[name](n)
    for chunk in (1, 7, None):
        torch.testing.assert_close(rules[name](chunk), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(RULES))
@FAST
@given(k=clients, n=columns, seed=seeds, data=st.data())
def test_non_finite_rows_are_dropped(name, k, n, seed, data):
    rule, fewest = RULES[name]
    k = max(k, fewest)
    u = _updates(seed, k + 2, n)
    bad = data.draw(st.lists(st.integers(0, k + 1), min_size=1, max_size=2, unique=True))
    poisoned = u.clone()
    for row, value in zip(bad, (math.nan, math.inf)):
        poisoned[row, data.draw(st.integers(0, n - 1))] = value
    keep = [r for r in range(k + 2) if r not in bad]
    _close(rule(poisoned), rule(u[keep]), float(u.abs().max()))


def test_residual_weights_of_non_finite_rows_are_zero():
    u = _updates(0, 8, 30)
    u[2, 5] = math.nan
    u[6, 0] = -math.inf
    aggregate, weights = F.residual_reweight(u)
    assert weights[2] == 0 and weights[6] == 0 and torch.isfinite(aggregate).all()
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
