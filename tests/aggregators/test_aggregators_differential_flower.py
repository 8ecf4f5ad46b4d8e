"""Differential tests against the aggregation functions of Flower's strategies (flwr.server.strategy.aggregate)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_lightning.aggregators import functional as F

flower = pytest.importorskip("flwr.server.strategy.aggregate")   # in the test extra: this runs in CI


def _inputs(seed: int, k: int = 11, n: int = 7) -> list[torch.Tensor]:
    """A random matrix and an adversarial one (two rows shifted far, one huge)."""
    g = torch.Generator().manual_seed(seed)
    plain = torch.randn(k, n, generator=g, dtype=torch.float64)
    attacked = plain.clone()
    attacked[3] += 40.0
    attacked[8] = 1e5 * torch.randn(n, generator=g, dtype=torch.float64)
    return [plain, attacked]


def _results(u: torch.Tensor, split: int = 3) -> list[tuple[list[np.ndarray], int]]:
    """Flower's input: each client's parameters as a list of layers (the columns split in two), equal counts."""
    return [([row[:split].numpy().copy(), row[split:].numpy().copy()], 1) for row in u]


def _flat(layers) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([np.asarray(layer).ravel() for layer in layers]))


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours.double(), theirs.double(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_krum_and_multi_krum_match_flower(seed):
    # both score K - f - 2 nearest neighbours; Flower's Multi-Krum averages with the sample counts,
    # which are equal here, so it is our unweighted mean of the m best
    for u in _inputs(seed):
        _close(F.krum(u, 2), _flat(flower.aggregate_krum(_results(u), num_malicious=2, to_keep=0)))
        _close(F.krum(u, 2, m=5), _flat(flower.aggregate_krum(_results(u), num_malicious=2, to_keep=5)))


def _flower_bulyan_picks(u: torch.Tensor, f: int) -> list[int]:
    """The rows Flower's Bulyan picks, in order, by running its Krum on the shrinking set as it does."""
    results, rows, picks = _results(u), list(range(u.shape[0])), []
    for _ in range(u.shape[0] - 2 * f):
        best = flower.aggregate_krum(results, num_malicious=f, to_keep=0)
        position = flower._find_reference_weights(best, [layers for layers, _ in results])
        picks.append(rows.pop(position))
        results.pop(position)
    return picks


def _krum_scores_alive(u: torch.Tensor, alive: list[int], f: int) -> torch.Tensor:
    dist = torch.cdist(u[alive], u[alive]).square()
    near = max(len(alive) - f - 2, 1)
    return torch.sort(dist, dim=1).values[:, 1:1 + near].sum(dim=1)


@pytest.mark.parametrize("seed", range(3))
def test_bulyan_matches_flower_up_to_krum_tie_breaking(seed):
    # Both pick K - 2f rows by Krum on the shrinking set (at least one neighbour), then average per
    # coordinate the K - 4f values closest to the median. Convention difference: in the last picks a
    # Krum score counts one neighbour, so two mutual nearest neighbours tie exactly; Flower takes the
    # lower row index, we take the lower sum of all distances (independent of the clients' order).
    f = 2
    for u in _inputs(seed):
        picks = _flower_bulyan_picks(u, f)
        theirs = _flat(flower.aggregate_bulyan(_results(u), num_malicious=f, aggregation_rule=flower.aggregate_krum,
                                               to_keep=0))
        # the second stage agrees exactly given the same picks
        _close(F.bulyan(u, f, selection=torch.tensor(picks)), theirs)
        # and each of Flower's picks is a lowest Krum score, so where our pick differs it is a tie
        ours = F.bulyan_selection(u, f).tolist()
        alive = list(range(u.shape[0]))
        for pick in picks:
            scores = _krum_scores_alive(u, alive, f)
            assert float(scores[alive.index(pick)]) <= float(scores.min()) * (1 + 1e-9) + 1e-12
            alive.remove(pick)
        if sorted(ours) == sorted(picks):
            _close(F.bulyan(u, f), theirs)


def test_bulyan_equals_flower_where_no_krum_tie_arises():
    # f = 0: every pick scores K - 2 >= 1 neighbours over distinct rows, no exact tie; both keep all
    # rows and take the mean of the K values closest to the median, i.e. the mean
    u = _inputs(4)[1][[0, 3, 5, 8, 9]]
    theirs = _flat(flower.aggregate_bulyan(_results(u), num_malicious=0, aggregation_rule=flower.aggregate_krum,
                                           to_keep=0))
    _close(F.bulyan(u, 0), theirs)
    _close(F.bulyan(u, 0), u.mean(dim=0))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [10, 11])
def test_median_and_trimmed_mean_match_flower(seed, k):
    for u in _inputs(seed, k=k):
        _close(F.coordinate_median(u), _flat(flower.aggregate_median(_results(u))))
        # Flower floors proportiontocut * K without a tolerance; 0.25 * K is far from an integer here
        _close(F.trimmed_mean(u, 0.25), _flat(flower.aggregate_trimmed_avg(_results(u), proportiontocut=0.25)))


def test_trimmed_mean_rounding_differs_from_flower_only_just_under_an_integer():
    # beta = 1/49 on K = 49: beta * K is 0.99999... in floating point. Flower trims nothing; we take it
    # as the f / K the user meant and trim one value at each end, which is trimmed_mean(f=1)
    u = _inputs(0, k=49)[1]
    _close(F.trimmed_mean(u, 1 / 49), F.trimmed_mean(u, f=1))
    _close(F.trimmed_mean(u, f=0), _flat(flower.aggregate_trimmed_avg(_results(u), proportiontocut=1 / 49)))


@pytest.mark.parametrize("seed", range(3))
def test_fedavg_matches_flower_weighted_average(seed):
    u = _inputs(seed)[0]
    counts = torch.arange(1, u.shape[0] + 1)
    results = [(layers, int(c)) for (layers, _), c in zip(_results(u), counts)]
    _close(F.fedavg(u, counts.double()), _flat(flower.aggregate(results)))
