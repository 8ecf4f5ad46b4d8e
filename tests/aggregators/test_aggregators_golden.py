"""Every golden case and mode of the published implementation, through the functional API and classes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_lightning.aggregators import FoolsGold, ResidualReweight
from fl_lightning.aggregators import functional as F
from fl_lightning.context import RoundContext
from fl_lightning.param_layout import ParamLayout, ParamSpec

RR_MODES = {"irls": ("repeated_median", "huber"), "irls_median": ("median", "huber"),
            "irls_theilsen": ("theil_sen", "huber"), "irls_gaussian": ("repeated_median", "gaussian")}


def _rr_modes(case):
    return [m for base in RR_MODES for m in case.modes(base)]


def _rr(case, mode, **kwargs):
    estimator, weighting = RR_MODES[mode.split("@")[0]]
    opts = case.options(mode)
    return F.residual_reweight_details(case.matrix(), lambda_=opts["Lambda"], thresh=opts["thresh"],
                                       estimator=estimator, weighting=weighting, **kwargs)


def _raw_scores_are_noise(case, mode) -> bool:
    # golden README: where every raw score is below 1e-4 the reference's weights are rounding noise
    return bool(np.all(case.array("mode", mode, "reweight_sum_raw") < 1e-4))


def test_residual_reweight_matches_every_golden_mode(golden_case):
    case = golden_case
    assert _rr_modes(case), "every golden case has residual-reweighting modes"
    for mode in _rr_modes(case):
        details = _rr(case, mode)
        torch.testing.assert_close(details.aggregate, case.output(mode), rtol=1e-4, atol=1e-5, msg=mode)
        weights = torch.from_numpy(case.array("mode", mode, "client_weights"))
        excluded = case.info["modes"][mode]["excluded_invalid_clients"]
        assert torch.all(details.client_weights[excluded] == 0), mode
        torch.testing.assert_close(details.client_weights.sum(), torch.tensor(1.0), msg=mode)
        if not _raw_scores_are_noise(case, mode):
            torch.testing.assert_close(details.client_weights, weights, rtol=1e-3, atol=1e-6, msg=mode)
            valid = [k for k in range(case.k) if k not in excluded]
            raw = torch.from_numpy(case.array("mode", mode, "reweight_sum_raw"))
            torch.testing.assert_close(details.raw_scores[valid], raw, rtol=1e-3, atol=1e-6, msg=mode)


def test_residual_reweight_two_field_result_matches_details(golden_case):
    u = golden_case.matrix()
    aggregate, weights = F.residual_reweight(u)
    details = F.residual_reweight_details(u)
    assert torch.equal(aggregate, details.aggregate) and torch.equal(weights, details.client_weights)


@pytest.mark.parametrize("chunk_size", [1, 7])
def test_residual_reweight_golden_does_not_depend_on_chunking(golden_case, chunk_size):
    if golden_case.matrix().shape[1] > 600:
        chunk_size *= 97                     # same coverage of chunk borders, a hundredth of the ops
    for mode in _rr_modes(golden_case):
        whole, chunked = _rr(golden_case, mode), _rr(golden_case, mode, chunk_size=chunk_size)
        torch.testing.assert_close(chunked.aggregate, whole.aggregate, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(chunked.client_weights, whole.client_weights, rtol=1e-5, atol=1e-7)


def test_robust_line_matches_the_golden_fitted_values(golden_case):
    case = golden_case
    valid = F.finite_rows(case.matrix())
    for mode in ("irls", "irls_median", "irls_theilsen"):
        estimator = RR_MODES[mode][0]
        for param in case.vector_params():
            if not case.has("mode", mode, "debug", param, "fit"):
                continue
            y = torch.from_numpy(case.input(param).reshape(case.k, -1))[valid]
            line = F.robust_line(y, estimator=estimator)
            rank = torch.argsort(torch.argsort(y, dim=0, stable=True), dim=0).float()
            fitted = line.intercept + line.slope * rank
            expected = torch.from_numpy(case.array("mode", mode, "debug", param, "fit"))
            torch.testing.assert_close(fitted, expected, rtol=1e-4, atol=1e-6, msg=f"{mode} {param}")


def test_baselines_match_golden(golden_case):
    case = golden_case
    if case.info["nan_client"] is not None or case.info["inf_client"] is not None:
        # golden README: the reference lets NaN through or sorts it as +inf; we drop such rows instead
        u = case.matrix()
        finite = u[F.finite_rows(u)]
        torch.testing.assert_close(F.fedavg(u), finite.mean(dim=0))
        torch.testing.assert_close(F.coordinate_median(u), torch.quantile(finite, 0.5, dim=0))
        return
    u = case.matrix()
    torch.testing.assert_close(F.fedavg(u), case.output("average"), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(F.coordinate_median(u), case.output("median"), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(F.repeated_median(u), case.output("repeated"), rtol=1e-4, atol=1e-5)
    for mode in case.modes("trimmed_mean"):
        beta = case.options(mode)["alpha"]
        expected = case.output(mode)
        if int(beta * case.k) == 0:
            assert torch.isnan(expected).all(), "the reference returns NaN when nothing is trimmed"
            expected = u.mean(dim=0)                    # where we deliberately differ: the plain mean
        torch.testing.assert_close(F.trimmed_mean(u, beta), expected, rtol=1e-4, atol=1e-5, msg=mode)


def _layout(case, params):
    specs, offset = [], 0
    for name in params:
        shape = tuple(case.info["params"][name]["shape_per_client"])
        numel = int(np.prod(shape)) if shape else 1
        specs.append(ParamSpec(name, shape, offset, numel))
        offset += numel
    return ParamLayout(tuple(specs), (), ())


def _float_params(case):
    return [p for p in case.info["param_order"] if case.info["params"][p]["dtype"].startswith("float")]


def _context(case, params):
    layout = _layout(case, params)
    return RoundContext(round=0, client_ids=list(range(case.k)), num_samples=torch.ones(case.k),
                        layout=layout, global_params=torch.zeros(layout.num_params))


def _stacked(case, params):
    return torch.from_numpy(np.concatenate([case.input(p).reshape(case.k, -1).astype(np.float32) for p in params],
                                           axis=1))


def test_foolsgold_matches_golden(golden_case):
    case = golden_case
    mode = case.info["modes"]["fg"]
    params = _float_params(case)
    u = _stacked(case, params)
    layer = mode["similarity_layer"]
    features = torch.from_numpy(case.input(layer).reshape(case.k, -1))
    if mode["status"] != "ok":
        # the reference crashes on a NaN client; we give it weight 0 and keep going
        weights = F.foolsgold_weights(features)
        assert weights[case.info["nan_client"]] == 0 and torch.isfinite(weights).all()
        return
    expected = torch.from_numpy(case.array("mode", "fg", "client_weights"))
    torch.testing.assert_close(F.foolsgold_weights(features).double(), expected, rtol=1e-5, atol=1e-6)
    result = FoolsGold(param=layer).aggregate(u, _context(case, params))
    outputs = [p for p in params if case.has("mode", "fg", "out", p)]
    torch.testing.assert_close(result.update[_columns(case, params, outputs)], case.output("fg", outputs),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.diagnostics["foolsgold_wv"].double(), expected, rtol=1e-5, atol=1e-6)


def _columns(case, params, wanted):
    layout = _layout(case, params)
    return torch.cat([torch.arange(layout.param(p).offset, layout.param(p).offset + layout.param(p).numel)
                      for p in wanted])


def test_residual_reweight_class_averages_0_dim_parameters_like_the_reference(golden_case):
    case = golden_case
    params = _float_params(case)
    scalars = [p for p in params if case.input(p).ndim == 1]
    u = _stacked(case, params)
    result = ResidualReweight().aggregate(u, _context(case, params))
    torch.testing.assert_close(result.update, case.output("irls", params), rtol=1e-4, atol=1e-5)
    if scalars:
        weights = torch.from_numpy(case.array("mode", "irls", "client_weights"))
        for p in scalars:
            expected = (weights * torch.from_numpy(case.input(p))).sum()
            torch.testing.assert_close(result.update[_columns(case, params, [p])][0], expected)
