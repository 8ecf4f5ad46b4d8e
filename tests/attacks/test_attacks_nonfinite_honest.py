"""Omniscient attacks craft from the finite honest rows only: one NaN honest row must not erase the attack."""
from __future__ import annotations

import math

import pytest
import torch

from fl_lightning.aggregators.functional import coordinate_median
from fl_lightning.attacks import functional as F


def _honest(h: int = 6, n: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(h, n, generator=g) + 0.5


def _with_bad_row(honest: torch.Tensor, value: float, at: int = 2) -> torch.Tensor:
    bad = torch.full((1, honest.shape[1]), value)
    return torch.cat([honest[:at], bad, honest[at:]])


CRAFTERS = {
    "alie": lambda h: F.alie(h, 3),
    "ipm": lambda h: F.ipm(h, 3),
    "min_max": lambda h: F.min_max(h, 3),
    "min_sum": lambda h: F.min_sum(h, 3),
    "fang_trimmed_mean": lambda h: F.fang_trimmed_mean(h, 3, generator=torch.Generator().manual_seed(1)),
    "fang_krum": lambda h: F.fang_krum(h, 3, 1),
    "mimic": lambda h: F.mimic(h, 3),
    "optimal_alie": lambda h: F.optimal_alie(h, 3, coordinate_median, evals=5),
    "optimal_ipm": lambda h: F.optimal_ipm(h, 3, coordinate_median, evals=5),
}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", sorted(CRAFTERS))
def test_a_non_finite_honest_row_is_left_out_of_the_crafted_rows(name: str, bad: float) -> None:
    honest = _honest()
    expected = CRAFTERS[name](honest)
    crafted = CRAFTERS[name](_with_bad_row(honest, bad))
    assert bool(torch.isfinite(crafted).all()), f"{name} crafted non-finite rows from one bad honest row"
    torch.testing.assert_close(crafted, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["alie", "ipm", "min_max", "min_sum", "fang_trimmed_mean", "optimal_ipm"])
def test_no_finite_honest_row_is_refused_naming_the_attack(name: str) -> None:
    honest = torch.full((3, 5), math.nan)
    with pytest.raises(ValueError, match=f"{name}: every one of the 3 honest rows holds NaN or Inf"):
        CRAFTERS[name](honest)


def test_mimic_keeps_the_victim_index_into_all_rows() -> None:
    honest = _with_bad_row(_honest(), math.nan, at=0)
    assert torch.equal(F.mimic(honest, 2, victim=3), honest[3].expand(2, -1))
    with pytest.raises(ValueError, match="mimic: the victim row 0 holds NaN or Inf"):
        F.mimic(honest, 2, victim=0)


def test_fang_krum_on_zero_coordinates_returns_empty_rows() -> None:
    crafted = F.fang_krum(torch.zeros(5, 0), 2, 1)
    assert tuple(crafted.shape) == (2, 0)
