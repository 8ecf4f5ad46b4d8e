"""``variant="paper"``: Algorithm 1 as printed, checked on small cases worked out by hand below.

Paper variant, per column (ALGORITHM.md section 2): ranks x = 0..K-1 of the sorted values; repeated
median slope ``b1 = med_i med_{j!=i} (y_j - y_i)/(x_j - x_i)``, intercept ``b0 = med_i (y_i - b1 x_i)``
(medians: the mean of the two middle values for an even count); ``tau = 1.48 med|r| (1 + 5/(K-1))``;
``w = min(1, Z sqrt(1-h) / |e|)`` with ``Z = lambda sqrt(2/K)``, ``e = r / tau``, ``0/0 -> 1``;
``w <= delta``: ``w = 0`` and the value becomes the line's; ``W_k = sum_n w_n(k) std(w_n)`` with the
sample standard deviation; weights ``W / sum W``; aggregate = weighted mean of the corrected values.
Every expected number is computed step by step here, never by the implementation.
"""
from __future__ import annotations

import math

import torch

from fl_lightning.aggregators.functional import residual_reweight


def _std(values: list[float]) -> float:
    """Sample standard deviation (divides by K - 1)."""
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _check(updates: list[list[float]], expected_aggregate: list[float], expected_weights: list[float],
           **kwargs) -> None:
    u = torch.tensor(updates, dtype=torch.float32)
    aggregate, weights = residual_reweight(u, variant="paper", **kwargs)
    torch.testing.assert_close(aggregate, torch.tensor(expected_aggregate), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, torch.tensor(expected_weights), rtol=1e-5, atol=1e-6)


def test_paper_k3_tau_zero_replaces_the_off_line_client():
    # Column A, clients (5, 0, 1): sorted 0, 1, 5 -> ranks: client1 0, client2 1, client0 2.
    # Slopes: s01 = 1, s02 = 5/2 = 2.5, s12 = 4. Inner medians (two values each, their mean):
    # row0 (1 + 2.5)/2 = 1.75, row1 (1 + 4)/2 = 2.5, row2 (2.5 + 4)/2 = 3.25 -> b1 = 2.5.
    # b0 = med(0 - 0, 1 - 2.5, 5 - 5) = med(0, -1.5, 0) = 0. Line at ranks 0, 1, 2: 0, 2.5, 5.
    # Residuals (by rank) 0, -1.5, 0 -> med|r| = 0 -> tau = 0: r = 0 gives w = 1 (0/0), r != 0 gives
    # w = 0 <= delta, so client2 (rank 1) is zeroed and its value 1 becomes the line's 2.5.
    # w by client: (1, 1, 0); std = sqrt(((1-2/3)^2 * 2 + (2/3)^2) / 2) = sqrt(1/3).
    # Column B, (2, 2, 2): every residual 0, w = (1, 1, 1), std 0: adds nothing.
    std_a = _std([1.0, 1.0, 0.0])
    assert math.isclose(std_a, math.sqrt(1 / 3))
    scores = [1.0 * std_a, 1.0 * std_a, 0.0]
    weights = [s / sum(scores) for s in scores]                 # (0.5, 0.5, 0)
    aggregate_a = weights[0] * 5 + weights[1] * 0 + weights[2] * 2.5
    _check([[5, 2], [0, 2], [1, 2]], [aggregate_a, 2.0], weights)
    assert math.isclose(aggregate_a, 2.5)


def test_paper_k4_huber_weights_with_two_columns():
    lam, delta, k = 0.2, 0.4, 4
    z = lam * math.sqrt(2 / k)                                  # 0.141421...
    # leverage: mean rank 1.5, Sxx = 2.25 + 0.25 + 0.25 + 2.25 = 5, h = 1/4 + (x - 1.5)^2 / 5
    h = [0.25 + (x - 1.5) ** 2 / 5 for x in range(4)]           # 0.7, 0.3, 0.3, 0.7
    s = [math.sqrt(1 - hk) for hk in h]
    # Column A = (0, 1, 3, 4), already sorted. Slopes s01 = 1, s02 = 1.5, s03 = 4/3, s12 = 2,
    # s13 = 1.5, s23 = 1. Inner medians (three values): row0 {1, 1.5, 4/3} -> 4/3,
    # row1 {1, 2, 1.5} -> 1.5, row2 {1.5, 2, 1} -> 1.5, row3 {4/3, 1.5, 1} -> 4/3.
    b1 = (4 / 3 + 1.5) / 2                                      # 17/12
    # y - b1 x = 0, -5/12, 2/12, -3/12 -> sorted -5/12, -3/12, 0, 2/12 -> b0 = (-3/12 + 0) / 2
    b0 = (-3 / 12 + 0) / 2                                      # -1/8
    fit_a = [b0 + b1 * x for x in range(4)]
    r_a = [y - f for y, f in zip([0, 1, 3, 4], fit_a)]           # 1/8, -7/24, 7/24, -1/8
    abs_sorted = sorted(abs(r) for r in r_a)
    tau_a = 1.48 * (abs_sorted[1] + abs_sorted[2]) / 2 * (1 + 5 / 3)
    e_a = [r / tau_a for r in r_a]
    w_a = [min(1.0, z * sk / abs(e)) for sk, e in zip(s, e_a)]   # 0.5095, 0.3336, 0.3336, 0.5095
    assert w_a[1] <= delta and w_a[2] <= delta and w_a[0] > delta
    w_a = [0.0 if w <= delta else w for w in w_a]
    corrected_a = [0, fit_a[1], fit_a[2], 4]                     # clients 1, 2 take the line value
    # Column B = (0, 0, 0, 1): ties keep client order, ranks 0, 1, 2, 3. Slopes s01 = s02 = s12 = 0,
    # s03 = 1/3, s13 = 1/2, s23 = 1; inner medians 0, 0, 0, 1/2 -> b1 = 0; b0 = med(0, 0, 0, 1) = 0.
    # Residuals 0, 0, 0, 1 -> med|r| = 0 -> tau = 0 -> w = (1, 1, 1, 0), client3 becomes 0.
    w_b = [1.0, 1.0, 1.0, 0.0]
    corrected_b = [0, 0, 0, 0]
    scores = [wa * _std(w_a) + wb * _std(w_b) for wa, wb in zip(w_a, w_b)]
    weights = [sc / sum(scores) for sc in scores]
    aggregate = [sum(w * c for w, c in zip(weights, corrected_a)), sum(w * c for w, c in zip(weights, corrected_b))]
    _check([[0, 0], [1, 0], [3, 0], [4, 1]], aggregate, weights, lambda_=lam, thresh=delta)


def test_paper_k5_outlier_is_replaced_and_zeroed():
    k = 5
    z = 2.0 * math.sqrt(2 / k)
    # Clients (3, 50, 0, 5, 2): sorted 0, 2, 3, 5, 50 -> ranks client2 0, client4 1, client0 2,
    # client3 3, client1 4. Sorted slopes: s01 = 2, s02 = 1.5, s03 = 5/3, s04 = 12.5, s12 = 1, s13 = 1.5,
    # s14 = 16, s23 = 2, s24 = 23.5, s34 = 45. Inner medians (four values, mean of the middle two):
    # row0 {1.5, 5/3, 2, 12.5} -> 11/6, row1 {1, 1.5, 2, 16} -> 1.75, row2 {1, 1.5, 2, 23.5} -> 1.75,
    # row3 {1.5, 5/3, 2, 45} -> 11/6, row4 {12.5, 16, 23.5, 45} -> 19.75 -> b1 = 11/6.
    b1 = 11 / 6
    # y - b1 x = 0, 1/6, -2/3, -1/2, 50 - 22/3 -> b0 = 0
    b0 = sorted([0, 2 - b1, 3 - 2 * b1, 5 - 3 * b1, 50 - 4 * b1])[2]
    assert b0 == 0
    sorted_y = [0, 2, 3, 5, 50]
    fit = [b0 + b1 * x for x in range(k)]
    r = [y - f for y, f in zip(sorted_y, fit)]                  # 0, 1/6, -2/3, -1/2, 128/3
    tau = 1.48 * sorted(abs(v) for v in r)[2] * (1 + 5 / 4)     # med|r| = 1/2 -> 1.665
    s = [math.sqrt(1 - (1 / 5 + (x - 2) ** 2 / 10)) for x in range(k)]
    w_sorted = [1.0 if v == 0 else min(1.0, z * sk * tau / abs(v)) for v, sk in zip(r, s)]
    assert w_sorted[:4] == [1.0] * 4 and w_sorted[4] <= 0.1     # only the outlier leaves the band
    w_sorted[4] = 0.0
    std = _std(w_sorted)                                        # sqrt(0.2)
    rank_of_client = [2, 4, 0, 3, 1]
    scores = [w_sorted[rk] * std for rk in rank_of_client]
    weights = [sc / sum(scores) for sc in scores]               # 0.25 each, 0 for client1
    corrected = [3, fit[4], 0, 5, 2]
    aggregate = sum(w * c for w, c in zip(weights, corrected))  # (3 + 0 + 5 + 2) / 4 = 2.5
    assert math.isclose(aggregate, 2.5)
    _check([[3], [50], [0], [5], [2]], [aggregate], weights)


def test_paper_k5_gaussian_weighting():
    lam, k = 2.0, 5
    # Same column as above: line 11/6 x, residuals (by rank) 0, 1/6, -2/3, -1/2, 128/3, tau = 1.665.
    # Gaussian confidence exp(-e^2 / (2 lambda^2)), no leverage term; the outlier's is ~e^-82 <= delta.
    b1 = 11 / 6
    r = [y - b1 * x for x, y in enumerate([0, 2, 3, 5, 50])]
    tau = 1.48 * 0.5 * (1 + 5 / 4)
    w_sorted = [math.exp(-(v / tau) ** 2 / (2 * lam ** 2)) for v in r]
    assert w_sorted[4] < 1e-30
    w_sorted[4] = 0.0
    std = _std(w_sorted)
    rank_of_client = [2, 4, 0, 3, 1]
    scores = [w_sorted[rk] * std for rk in rank_of_client]
    weights = [sc / sum(scores) for sc in scores]
    corrected = [3, b1 * 4, 0, 5, 2]
    aggregate = sum(w * c for w, c in zip(weights, corrected))
    _check([[3], [50], [0], [5], [2]], [aggregate], weights, weighting="gaussian", lambda_=lam)


def test_paper_k5_theil_sen_line():
    k = 5
    z = 2.0 * math.sqrt(2 / k)
    # Theil-Sen: the median of all ten slopes 1, 1.5, 1.5, 5/3, 2, 2, 12.5, 16, 23.5, 45 -> (2 + 2)/2 = 2.
    b1 = 2.0
    b0 = sorted(y - b1 * x for x, y in enumerate([0, 2, 3, 5, 50]))[2]   # med(0, 0, -1, -1, 42) = 0
    fit = [b0 + b1 * x for x in range(k)]
    r = [y - f for y, f in zip([0, 2, 3, 5, 50], fit)]         # 0, 0, -1, -1, 42
    tau = 1.48 * sorted(abs(v) for v in r)[2] * (1 + 5 / 4)     # med|r| = 1 -> 3.33
    s = [math.sqrt(1 - (1 / 5 + (x - 2) ** 2 / 10)) for x in range(k)]
    w_sorted = [1.0 if v == 0 else min(1.0, z * sk * tau / abs(v)) for v, sk in zip(r, s)]
    w_sorted = [0.0 if w <= 0.1 else w for w in w_sorted]
    assert w_sorted[4] == 0.0 and w_sorted[:4] == [1.0] * 4
    std = _std(w_sorted)
    rank_of_client = [2, 4, 0, 3, 1]
    scores = [w_sorted[rk] * std for rk in rank_of_client]
    weights = [sc / sum(scores) for sc in scores]
    corrected = [3, fit[4], 0, 5, 2]
    aggregate = sum(w * c for w, c in zip(weights, corrected))
    _check([[3], [50], [0], [5], [2]], [aggregate], weights, estimator="theil_sen")


def test_paper_and_reference_differ_where_documented():
    # reference: scale 1.4826 on |r| without its smallest value + 1e-7, weights max-normalised and
    # squared; paper: 1.48 on all |r|, W / sum W. On the K=4 case above they give different weights.
    u = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [4.0, 1.0]])
    _, paper = residual_reweight(u, variant="paper", lambda_=0.2, thresh=0.4)
    _, reference = residual_reweight(u, variant="reference", lambda_=0.2, thresh=0.4)
    assert not torch.allclose(paper, reference)
