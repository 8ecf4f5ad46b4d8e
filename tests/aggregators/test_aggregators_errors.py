"""Every precondition and bad input gives an error that says what was wrong.

One exception type per kind of mistake (fl_lightning.checks): a setting of the wrong type raises
``TypeError``, a value of the right type that the rule cannot use ``ValueError``.
"""
from __future__ import annotations

import math
import re

import pytest
import torch

from fl_lightning.aggregators import functional as F


def _u(k: int = 6, n: int = 4) -> torch.Tensor:
    return torch.randn(k, n, generator=torch.Generator().manual_seed(k * 100 + n))


def test_residual_reweight_needs_three_finite_clients():
    with pytest.raises(ValueError, match=re.escape("residual_reweight needs K >= 3 finite clients, got 2")):
        F.residual_reweight(_u(2))
    u = _u(3)
    u[1, 0] = math.nan
    with pytest.raises(ValueError, match=re.escape("residual_reweight needs K >= 3 finite clients, got 2")):
        F.residual_reweight(u)


@pytest.mark.parametrize("option, value, valid", [
    ("estimator", "ols", "repeated_median, theil_sen, median"),
    ("weighting", "tukey", "huber, gaussian"),
    ("variant", "v2", "reference, paper"),
])
def test_unknown_residual_reweight_choices_list_the_valid_ones(option, value, valid):
    with pytest.raises(ValueError, match=re.escape(f"unknown {option} {value!r}; valid: {valid}")):
        F.residual_reweight(_u(), **{option: value})


@pytest.mark.parametrize("kwargs, error, message", [
    ({"lambda_": 0.0}, ValueError, "lambda_ must be a finite number > 0"),
    ({"lambda_": -1.0}, ValueError, "lambda_ must be a finite number > 0"),
    ({"lambda_": math.inf}, ValueError, "lambda_ must be a finite number > 0"),
    ({"thresh": -0.1}, ValueError, "thresh must be a finite number >= 0 and <= 1"),
    ({"thresh": 1.5}, ValueError, "thresh must be a finite number >= 0 and <= 1"),
    ({"chunk_size": 0}, ValueError, "chunk_size must be an int >= 1"),
    # a float chunk size is a wrong type, no longer a wrong value
    ({"chunk_size": 2.5}, TypeError, "chunk_size must be an int >= 1"),
])
def test_residual_reweight_rejects_bad_hyper_parameters(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        F.residual_reweight(_u(), **kwargs)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(5), "must have shape [K, N]"),
    (torch.zeros(2, 3, 4), "must have shape [K, N]"),
    (torch.zeros(4, 3, dtype=torch.int64), "must be floating point"),
])
@pytest.mark.parametrize("rule", [F.fedavg, F.coordinate_median, F.trimmed_mean, F.repeated_median,
                                  F.residual_reweight, F.geometric_median, F.foolsgold_weights,
                                  lambda u: F.krum(u, 0), lambda u: F.bulyan(u, 0),
                                  lambda u: F.centered_clipping(u), lambda u: F.norm_clipping(u, 1.0)])
def test_every_rule_checks_its_input_matrix(rule, bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        rule(bad)


def test_rules_without_any_finite_row_say_so():
    u = torch.full((4, 3), math.nan)
    for rule in (F.fedavg, F.coordinate_median, F.trimmed_mean, F.geometric_median, F.foolsgold_weights,
                 F.centered_clipping, lambda x: F.norm_clipping(x, 1.0)):
        with pytest.raises(ValueError, match="needs at least 1 finite client, got 0 of 4"):
            rule(u)


@pytest.mark.parametrize("beta, error", [(-0.1, ValueError), (0.5, ValueError), (0.7, ValueError),
                                         ("0.2", TypeError)])   # a string is a wrong type, not a wrong value
def test_trimmed_mean_checks_beta(beta, error):
    with pytest.raises(error, match=r"beta \(the share trimmed at each end\) must be a (finite )?number >= 0 and < 0\.5"):
        F.trimmed_mean(_u(), beta)


def test_trimmed_mean_checks_its_count():
    with pytest.raises(ValueError, match=re.escape("trimmed_mean needs K > 2f finite clients: with f=3 that is at "
                                                   "least 7, got K=6")):
        F.trimmed_mean(_u(6), f=3)
    with pytest.raises(ValueError, match="give beta .* or f .*, not both"):
        F.trimmed_mean(_u(6), 0.1, f=1)
    with pytest.raises(TypeError, match=re.escape("f (the values trimmed at each end) must be an int >= 0")):
        F.trimmed_mean(_u(6), f=1.0)


def test_fedavg_checks_its_weights():
    with pytest.raises(ValueError, match=re.escape("weights must have shape (6,)")):
        F.fedavg(_u(), torch.ones(5))
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        F.fedavg(_u(), torch.tensor([1.0, -1, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="weights sum to 0"):
        F.fedavg(_u(), torch.zeros(6))


def test_krum_states_its_rule_and_numbers():
    with pytest.raises(ValueError, match=re.escape("krum needs K > 2f + 2 finite clients: with f=2 that is at "
                                                   "least 7, got K=6")):
        F.krum(_u(6), f=2)
    with pytest.raises(ValueError, match=re.escape("krum needs m <= K - f: m=6, K=6 finite clients, f=1")):
        F.krum(_u(6), f=1, m=6)
    with pytest.raises(ValueError, match="f .* must be an int >= 0"):
        F.krum(_u(6), f=-1)
    with pytest.raises(ValueError, match="m .* must be an int >= 1"):
        F.krum(_u(6), f=1, m=0)
    with pytest.raises(TypeError, match="f .* must be an int >= 0"):
        F.krum(_u(6), f=1.0)


def test_bulyan_states_its_rule_and_numbers():
    with pytest.raises(ValueError, match=re.escape("bulyan needs K >= 4f + 3 finite clients: with f=2 that is at "
                                                   "least 11, got K=10")):
        F.bulyan(_u(10), f=2)
    u = _u(7)
    u[0, 0] = math.inf
    with pytest.raises(ValueError, match=re.escape("with f=1 that is at least 7, got K=6")):
        F.bulyan(u, f=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"tol": 0.0}, "tol must be a finite number > 0"),
    ({"eps": -1.0}, "eps must be a finite number > 0"),
    ({"max_iter": 0}, "max_iter must be an int >= 1"),
    ({"tol": math.inf}, "tol must be a finite number > 0"),
    ({"weights": torch.ones(3)}, "weights must have shape (6,) (one per client)"),
    ({"weights": -torch.ones(6)}, "weights must be finite and >= 0"),
    ({"weights": torch.zeros(6)}, "the finite clients' weights sum to 0"),
])
def test_geometric_median_checks_its_options(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        F.geometric_median(_u(), **kwargs)


def test_clipping_rules_check_their_options():
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        F.centered_clipping(_u(), tau=0.0)
    with pytest.raises(ValueError, match="iters must be an int >= 1"):
        F.centered_clipping(_u(), iters=0)
    with pytest.raises(ValueError, match=re.escape("center must be a finite tensor of shape (4,)")):
        F.centered_clipping(_u(), center=torch.zeros(3))
    with pytest.raises(ValueError, match="max_norm must be a finite number > 0"):
        F.norm_clipping(_u(), 0.0)
    with pytest.raises(ValueError, match=re.escape("norm_clipping: weights must have shape (6,)")):
        F.norm_clipping(_u(), 1.0, torch.ones(2))
    with pytest.raises(ValueError, match="confidence must be a finite number > 0"):
        F.foolsgold_weights(_u(), confidence=0.0)


def test_robust_line_and_skip_columns_check_their_inputs():
    with pytest.raises(ValueError, match="robust_line needs K >= 2 finite clients, got 1"):
        F.robust_line(_u(1))
    with pytest.raises(ValueError, match=re.escape("skip_columns must be a bool tensor of shape (4,)")):
        F.residual_reweight_details(_u(), skip_columns=torch.zeros(4))


def test_a_given_finite_mask_is_checked_and_used_instead_of_a_scan():
    u = _u(6)
    u[2, 1] = math.nan
    mask = torch.arange(6) != 2
    torch.testing.assert_close(F.krum(u, 1, finite=mask), F.krum(u, 1))
    torch.testing.assert_close(F.coordinate_median(u, finite=mask), F.coordinate_median(u))
    with pytest.raises(ValueError, match=re.escape("krum: finite must be a bool tensor of shape (6,)")):
        F.krum(u, 1, finite=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match=re.escape("fedavg: finite must be a bool tensor of shape (6,)")):
        F.fedavg(u, finite=mask.float())
