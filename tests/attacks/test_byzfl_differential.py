"""Our functional attacks against ByzFL's (an independent implementation) on random and adversarial inputs.

Convention differences, each tested where it is mapped:

- SignFlip: ByzFL's ``SignFlipping`` sends ``-mean(honest)`` (omniscient); ours reverses the attacker's
  *own* update, ``-scale * own``. They agree when the attacker's own update is the honest mean.
- ALIE: ByzFL sends ``mean + tau * std``; ours ``mean - z * std`` (Baruch et al.'s sign), so
  ``tau = -z``. Both use the unbiased std.
- IPM: the same formula; ByzFL's ``tau`` is our ``epsilon``.
- Gaussian: ByzFL's ``Gaussian(mu, sigma)`` sends pure noise ``N(mu, sigma^2)``; ours (the residual-
  reweighting paper's) multiplies the attacker's model by ``N(1, sigma^2)``. With a model of all ones
  and a zero global model ours sends ``1 + sigma z``, which must be distributed as ByzFL's with
  ``mu = 1``; the two draw from different generators, so the samples are compared by a KS test.
- Inf: identical (rows of ``+inf``).
- Mimic: ByzFL's ``Mimic(epsilon)`` copies honest row ``epsilon``; ours ``victim=epsilon`` (ours may
  also choose the victim itself, which ByzFL does not).
- Optimal ALIE / IPM: the same expansion-then-contraction line search (``start``, ``delta``,
  ``evals``, ``ratio``) maximising ``||agg([honest; attackers]) - mean(honest)||``. ByzFL clips the
  rows first by default (``pre_agg_list=[Clipping()]``); it is passed ``pre_agg_list=[]`` here so
  that both probe the same rule. ByzFL searches ``tau`` (ALIE: ``tau = -z``, so its ``start`` and
  ``delta`` are our negatives) from ``start=0``; our defaults start at the plain attack's parameter
  (paper ``z`` / ``epsilon=0.5``), so ``start=0`` is passed explicitly. ByzFL's ``TrMean(f)`` trims
  ``f`` values at each end: ours is ``trimmed_mean(beta=f/K)``.
ByzFL computes in the input's precision (NumPy float64 here); ours in float64 tensors.
"""
from __future__ import annotations

import byzfl  # the test extra brings it (and seaborn, which its package __init__ imports): never skipped
import numpy as np
import pytest
import torch

from fl_lightning.aggregators.functional import coordinate_median, fedavg, trimmed_mean
from fl_lightning.attacks import functional as F


def _inputs(kind: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(9, 12, generator=g, dtype=torch.float64)
    if kind == "shifted":            # a common step much larger than the spread
        return torch.randn(9, 12, generator=g, dtype=torch.float64) * 0.1 + 5.0
    if kind == "outlier":            # one honest row far away, duplicated rows
        rows = torch.randn(9, 12, generator=g, dtype=torch.float64)
        rows[0] = 1e4
        rows[1] = rows[2]
        return rows
    raise ValueError(kind)


KINDS = ["random", "shifted", "outlier"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_closed_form_attacks_agree(kind, seed):
    honest = _inputs(kind, seed)
    arr = honest.numpy()
    mean = honest.mean(0, keepdim=True)
    assert np.allclose(F.sign_flip(mean, 1.0)[0].numpy(), byzfl.SignFlipping()(arr))
    for z in (0.0, 1.0, 2.5):
        assert np.allclose(F.alie(honest, 2, z)[0].numpy(), byzfl.ALittleIsEnough(tau=-z)(arr))
    for eps in (0.5, 2.0):
        assert np.allclose(F.ipm(honest, 2, eps)[0].numpy(), byzfl.InnerProductManipulation(tau=eps)(arr))
    for victim in (0, 4, 8):
        assert np.array_equal(F.mimic(honest, 3, victim)[0].numpy(), byzfl.Mimic(epsilon=victim)(arr))
    ours, theirs = F.inf(honest, 2).numpy(), byzfl.Inf()(arr)
    assert np.array_equal(ours[0], theirs) and np.array_equal(ours[1], theirs)


def test_gaussian_noise_has_byzfls_distribution_in_its_convention():
    from scipy.stats import ks_2samp

    n, sigma = 20_000, 0.7
    noise = torch.randn(1, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = F.gaussian_noise(torch.ones(1, n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), sigma, noise)
    np.random.seed(0)
    theirs = byzfl.Gaussian(mu=1.0, sigma=sigma)(np.zeros((3, n)))
    assert ks_2samp(ours[0].numpy(), theirs).pvalue > 1e-3
    assert abs(float(ours.mean()) - float(np.mean(theirs))) < 0.05


RULES = {  # ours, ByzFL's (both trim / take the median of the 12 = 9 honest + 3 attacker rows)
    "mean": (fedavg, lambda: byzfl.Average()),
    "median": (coordinate_median, lambda: byzfl.Median()),
    "trimmed_mean": (lambda u: trimmed_mean(u, beta=3 / 12 + 1e-9), lambda: byzfl.TrMean(f=3)),
}


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(2))
def test_optimal_attacks_agree(rule, kind, seed):
    honest = _inputs(kind, seed)
    ours_rule, theirs_rule = RULES[rule]
    settings = dict(delta=10.0, evals=20, ratio=0.8)
    theirs = byzfl.Optimal_ALittleIsEnough(agg=theirs_rule(), pre_agg_list=[], f=3, start=0.0, delta=-10.0,
                                           evals=20, ratio=0.8)(honest.numpy())
    ours = F.optimal_alie(honest, 3, ours_rule, start=0.0, **settings)
    assert ours.shape == (3, 12)
    assert np.allclose(ours[0].numpy(), theirs, rtol=1e-9, atol=1e-9)
    theirs = byzfl.Optimal_InnerProductManipulation(agg=theirs_rule(), pre_agg_list=[], f=3, start=0.0,
                                                    delta=10.0, evals=20, ratio=0.8)(honest.numpy())
    ours = F.optimal_ipm(honest, 3, ours_rule, start=0.0, **settings)
    assert np.allclose(ours[0].numpy(), theirs, rtol=1e-9, atol=1e-9)
