"""Each functional attack satisfies its paper's defining constraint on random inputs."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_lightning.aggregators.functional import coordinate_median, fedavg, krum, krum_select, trimmed_mean
from fl_lightning.attacks import functional as F


def _honest(h: int, n: int, seed: int, offset: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(h, n, generator=g, dtype=torch.float64) + offset * torch.randn(n, generator=g,
                                                                                       dtype=torch.float64))


def _perturbation(honest: torch.Tensor, kind: str) -> torch.Tensor:
    """The paper's perturbation, written out independently of the library."""
    mean = honest.mean(0)
    return {"unit": -mean / mean.norm(), "std": -honest.std(0), "sign": -mean.sign()}[kind]


def _gamma(row: torch.Tensor, honest: torch.Tensor, p: torch.Tensor) -> float:
    return float((row - honest.mean(0)) @ p / (p @ p))


def _max_distance(row: torch.Tensor, honest: torch.Tensor) -> float:
    return float(torch.cdist(row[None], honest).max())


def _sum_sq(row: torch.Tensor, honest: torch.Tensor) -> float:
    return float((torch.cdist(row[None], honest) ** 2).sum())


SHAPES = st.tuples(st.integers(2, 12), st.integers(1, 40), st.integers(0, 10_000), st.sampled_from([0.0, 3.0]))


@settings(max_examples=40, deadline=None)
@given(shape=SHAPES, kind=st.sampled_from(F.PERTURBATIONS), attackers=st.integers(1, 4))
def test_min_max_stays_within_the_honest_diameter_and_is_maximal(shape, kind, attackers):
    h, n, seed, offset = shape
    honest, tol = _honest(h, n, seed, offset), 1e-5
    rows = F.min_max(honest, attackers, kind, tol=tol)
    assert rows.shape == (attackers, n) and torch.equal(rows, rows[:1].expand_as(rows))
    diameter = float(torch.cdist(honest, honest).max())
    assert _max_distance(rows[0], honest) <= diameter * (1 + 1e-9)
    p = _perturbation(honest, kind)
    gamma = _gamma(rows[0], honest, p)
    assert gamma >= 0
    assert _max_distance(honest.mean(0) + (gamma + tol) * p, honest) > diameter   # the scale is maximal


@settings(max_examples=40, deadline=None)
@given(shape=SHAPES, kind=st.sampled_from(F.PERTURBATIONS))
def test_min_sum_stays_within_the_largest_honest_sum_and_is_maximal(shape, kind):
    h, n, seed, offset = shape
    honest, tol = _honest(h, n, seed, offset), 1e-5
    row = F.min_sum(honest, 2, kind, tol=tol)[0]
    bound = float((torch.cdist(honest, honest) ** 2).sum(1).max())
    assert _sum_sq(row, honest) <= bound * (1 + 1e-9)
    p = _perturbation(honest, kind)
    gamma = _gamma(row, honest, p)
    assert _sum_sq(honest.mean(0) + (gamma + tol) * p, honest) > bound


def test_min_max_finds_scales_beyond_twice_the_initial_guess():
    honest = _honest(6, 10, 0, 3.0) * 1000.0        # far larger than gamma_init = 10 can reach by halving
    row = F.min_max(honest, 1, "unit", gamma_init=10.0, tol=1e-3)[0]
    gamma = _gamma(row, honest, _perturbation(honest, "unit"))
    assert gamma > 20.0
    assert _max_distance(row, honest) <= float(torch.cdist(honest, honest).max()) * (1 + 1e-9)


def test_min_max_in_float32_keeps_the_dtype_and_the_constraint():
    honest = _honest(8, 50, 3, 1.0).float()
    row = F.min_max(honest, 1, "std")[0]
    assert row.dtype == torch.float32
    d = honest.double()
    assert _max_distance(row.double(), d) <= float(torch.cdist(d, d).max()) * (1 + 1e-5)


def test_min_max_of_identical_rows_is_that_row():
    honest = torch.ones(4, 3, dtype=torch.float64)
    assert torch.allclose(F.min_max(honest, 2, "std"), torch.ones(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(8))
def test_fang_trimmed_mean_moves_the_rule_against_the_honest_mean(seed):
    honest = _honest(10, 30, seed, 2.0)
    attackers = 3
    crafted = F.fang_trimmed_mean(honest, attackers, generator=torch.Generator().manual_seed(seed))
    mean = honest.mean(0)
    rises = mean > 0
    # every crafted value lies beyond the honest extreme opposite the honest step
    assert bool((crafted[:, rises] <= honest[:, rises].min(0).values).all())
    assert bool((crafted[:, ~rises] >= honest[:, ~rises].max(0).values).all())
    beta = attackers / (10 + attackers)
    for rule in (lambda u: trimmed_mean(u, beta=beta + 1e-9), coordinate_median):
        attacked, clean = rule(torch.cat([honest, crafted])), rule(honest)
        assert float((attacked - clean) @ mean) < 0
        assert float((attacked - mean) @ mean) < 0


def test_fang_trimmed_mean_intervals_follow_the_paper():
    honest = torch.tensor([[1.0, -1.0, 2.0, -2.0], [3.0, -3.0, 4.0, -4.0]], dtype=torch.float64)
    # mean [2, -2, 3, -3]: coordinates 0, 2 rise (values below the min), 1, 3 fall (above the max)
    crafted = F.fang_trimmed_mean(honest, 200, generator=torch.Generator().manual_seed(0))
    lo, hi = crafted.min(0).values, crafted.max(0).values
    # w_min = 1 > 0: [1/2, 1]; w_max = -1 <= 0: [-1/2, -1] reversed ->[-1, -0.5]; w_min = 2: [1, 2]; w_max = -2: [-2, -1]
    assert torch.all(lo >= torch.tensor([0.5, -1.0, 1.0, -2.0], dtype=torch.float64))
    assert torch.all(hi <= torch.tensor([1.0, -0.5, 2.0, -1.0], dtype=torch.float64))


@pytest.mark.parametrize("seed", range(8))
def test_fang_krum_is_selected_and_points_against_the_honest_mean(seed):
    """Honest rows spread more than their mean step, as SGD updates do (with a step much larger than the
    spread, ``-lambda s`` is far from every honest row for any lambda and Krum never picks it; the
    paper then keeps lambda at its threshold, see the next test)."""
    honest = _honest(12, 20, seed, 0.5)
    attackers = 3
    crafted = F.fang_krum(honest, attackers)
    everyone = torch.cat([honest, crafted])
    assert int(krum_select(everyone, attackers)[0]) >= 12            # Krum picks an attacker
    mean = honest.mean(0)
    assert float(krum(everyone, attackers) @ mean) < 0
    assert float((krum(everyone, attackers) - krum(honest, attackers)) @ mean) < 0
    assert torch.allclose(crafted[0] / crafted[0].abs().max(), -mean.sign())


def test_fang_krum_keeps_the_threshold_when_krum_cannot_be_fooled():
    honest = torch.randn(8, 5, dtype=torch.float64) * 0.01 + 10.0        # a tight cluster far from zero
    crafted = F.fang_krum(honest, 2, threshold=1e-3)
    assert torch.allclose(crafted, (-1e-3 * honest.mean(0).sign()).expand(2, 5))


def test_alie_ipm_sign_flip_and_mimic_equal_their_formulas():
    honest = _honest(5, 7, 1)
    own = _honest(2, 7, 2)
    mean, std = honest.mean(0), honest.std(0)
    assert torch.allclose(F.alie(honest, 3, 1.5), (mean - 1.5 * std).expand(3, 7))
    z = F.alie_paper_z(8, 3)                              # s = 5 - 3 = 2, Phi^-1(6/8)
    assert z == pytest.approx(0.6744897501960817)
    assert torch.allclose(F.alie(honest, 3), (mean - z * std).expand(3, 7))
    assert torch.allclose(F.ipm(honest, 2, 0.5), (-0.5 * mean).expand(2, 7))
    assert torch.equal(F.sign_flip(own, 2.0), -2.0 * own)
    assert torch.equal(F.mimic(honest, 4, 3), honest[3].expand(4, 7))
    assert torch.isinf(F.inf(honest, 2)).all() and (F.inf(honest, 2) > 0).all()


def test_mimic_victim_is_the_row_furthest_along_the_main_direction():
    honest = torch.zeros(5, 3, dtype=torch.float64)
    honest[:, 0] = torch.tensor([0.1, -0.2, 5.0, 0.3, -0.1])
    assert F.mimic_victim(honest) == 2
    assert F.mimic_victim(-honest) == 2                                   # sign of the direction does not matter
    assert torch.equal(F.mimic(honest, 2), honest[2].expand(2, 3))


def test_gaussian_noise_is_the_model_times_one_plus_sigma_noise():
    own, global_params = torch.full((2, 4), 1.0), torch.full((4,), 1.0)
    noise = torch.tensor([[1.0, -1.0, 0.5, 0.0], [2.0, 0.0, 0.0, 0.0]])
    out = F.gaussian_noise(own, global_params, 0.5, noise)
    assert torch.allclose(global_params + out, 2.0 * (1 + 0.5 * noise))


RULES = {
    "mean": fedavg,
    "median": coordinate_median,
    "trimmed_mean": lambda u: trimmed_mean(u, beta=0.2),
    "krum": lambda u: krum(u, 2),
}


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("seed", range(4))
def test_optimal_attacks_beat_or_tie_the_plain_ones_against_their_rule(rule, seed):
    honest = _honest(9, 15, seed, 1.0)
    attackers, aggregate = 3, RULES[rule]
    plain_alie = F.attack_distance(honest, F.alie(honest, attackers), aggregate)
    plain_ipm = F.attack_distance(honest, F.ipm(honest, attackers, 0.5), aggregate)
    assert F.attack_distance(honest, F.optimal_alie(honest, attackers, aggregate), aggregate) >= plain_alie
    assert F.attack_distance(honest, F.optimal_ipm(honest, attackers, aggregate), aggregate) >= plain_ipm


def test_optimal_ipm_against_the_mean_pushes_far():
    honest = _honest(9, 15, 0, 1.0)
    crafted = F.optimal_ipm(honest, 3, fedavg)
    # against the mean, the distance grows with epsilon: the search keeps expanding (10, 30, 70, ...)
    assert F.attack_distance(honest, crafted, fedavg) > 10 * F.attack_distance(honest, F.ipm(honest, 3), fedavg)


def test_line_search_never_returns_worse_than_its_start_and_finds_a_peak():
    best_x, best_y = F.line_search(lambda x: -(x - 7.0) ** 2, start=0.0, delta=1.0, evals=40)
    assert best_y >= -49.0 and abs(best_x - 7.0) < 0.5
    assert F.line_search(lambda x: -abs(x), start=0.0, delta=1.0) == (0.0, 0.0)


@pytest.mark.parametrize("call, error, message", [
    (lambda h: F.min_max(h, 1, "cube"), ValueError, "unknown perturbation 'cube'"),
    (lambda h: F.min_sum(h, 1, tol=0.0), ValueError, "min_sum: tol must be a finite number > 0"),
    (lambda h: F.alie(h, -1), ValueError, "alie: num_attackers must be an int >= 0"),
    (lambda h: F.ipm(h, 1.5), TypeError, "ipm: num_attackers must be an int"),
    (lambda h: F.mimic(h, 1, 9), ValueError, r"mimic: victim must be an int in \[0, 2\]"),
    (lambda h: F.fang_trimmed_mean(h, 1, b=1.0), ValueError, "fang_trimmed_mean: b must be a finite number > 1"),
    (lambda h: F.optimal_ipm(h, 1, fedavg, ratio=0.3), ValueError, "optimal_ipm: ratio must be"),
    (lambda h: F.optimal_alie(h, 1, fedavg, delta=0.0), ValueError, "optimal_alie: delta must be a finite non-zero"),
    (lambda h: F.alie(h[0], 1), ValueError, r"alie: honest must be a \[rows, N\] tensor"),
])
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call(torch.randn(3, 4))


def test_functions_never_write_their_inputs():
    honest = _honest(6, 5, 0, 1.0)
    copy = honest.clone()
    for call in (lambda: F.min_max(honest, 2), lambda: F.min_sum(honest, 2, "sign"), lambda: F.fang_krum(honest, 1),
                 lambda: F.fang_trimmed_mean(honest, 2), lambda: F.optimal_alie(honest, 2, fedavg),
                 lambda: F.mimic(honest, 2), lambda: F.alie(honest, 2)):
        out = call()
        out.add_(1.0)                                  # the result is a fresh tensor, not a view of the input
        assert torch.equal(honest, copy) and math.isfinite(float(out.sum()))
