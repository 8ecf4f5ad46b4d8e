"""The aggregator classes: results, diagnostics, hyper-parameter checks, state and the registry."""
from __future__ import annotations

import io
import math
import re

import pytest
import torch
from torch import nn

from fl_lightning.aggregators import (
    AGGREGATORS, AggregationResult, Aggregator, Bulyan, CenteredClipping, FedAvg, FoolsGold, GeometricMedian,
    Krum, MultiKrum, NormClipping, ResidualReweight, TrimmedMean, get_aggregator,
)
from fl_lightning.aggregators import functional as F
from fl_lightning.context import RoundContext, SetupContext
from fl_lightning.param_layout import ParamLayout

LAYOUT = ParamLayout.from_module(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))


def _ctx(k: int, ids: list[int] | None = None, samples: torch.Tensor | None = None,
         reference: torch.Tensor | None = None) -> RoundContext:
    return RoundContext(round=0, client_ids=ids if ids is not None else list(range(k)),
                        num_samples=samples if samples is not None else torch.arange(1.0, k + 1),
                        layout=LAYOUT, global_params=torch.zeros(LAYOUT.num_params), reference_update=reference)


def _updates(k: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, LAYOUT.num_params, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_every_aggregator_returns_a_well_formed_result(name):
    k = 9
    u = _updates(k)
    u[4, 3] = math.nan
    reference = torch.cat([u[:4], u[5:]]).mean(dim=0)           # the server's update (FLTrust reads it)
    result = AGGREGATORS[name]().aggregate(u, _ctx(k, reference=reference))
    assert isinstance(result, AggregationResult)
    assert result.update.shape == (LAYOUT.num_params,) and torch.isfinite(result.update).all()
    if result.client_weights is not None:
        assert result.client_weights.shape == (k,)
        assert torch.all(result.client_weights >= 0) and result.client_weights[4] == 0
        torch.testing.assert_close(result.client_weights.sum(), torch.tensor(1.0))
    flagged = result.diagnostics["flagged"]
    assert flagged.dtype == torch.bool and flagged.shape == (k,) and bool(flagged[4])


def test_residual_reweight_flags_the_attacker_and_reports_its_diagnostics():
    u = _updates(10)
    u[7] = 50.0
    result = ResidualReweight().aggregate(u, _ctx(10))
    assert result.diagnostics["flagged"].tolist() == [k == 7 for k in range(10)]
    assert 0 < result.diagnostics["replaced_fraction"] <= 0.2
    confidence = result.diagnostics["mean_confidence"]
    assert confidence.shape == (10,) and confidence[7] < 0.1 and torch.all(confidence[:7] > 0.5)
    torch.testing.assert_close(result.update, F.residual_reweight(u).aggregate)


def test_residual_reweight_class_passes_its_options_through():
    u = _updates(8)
    agg = ResidualReweight(lambda_=1.0, thresh=0.2, estimator="theil_sen", weighting="gaussian", variant="paper",
                           chunk_size=5)
    expected = F.residual_reweight(u, lambda_=1.0, thresh=0.2, estimator="theil_sen", weighting="gaussian",
                                   variant="paper")
    torch.testing.assert_close(agg.aggregate(u, _ctx(8)).update, expected.aggregate, rtol=1e-5, atol=1e-6)


def test_fedavg_weights_clients_by_their_sample_counts():
    u = _updates(4)
    samples = torch.tensor([1.0, 1.0, 2.0, 4.0])
    result = FedAvg().aggregate(u, _ctx(4, samples=samples))
    torch.testing.assert_close(result.client_weights, samples / 8)
    torch.testing.assert_close(result.update, (samples / 8) @ u)
    torch.testing.assert_close(FedAvg(weighted=False).aggregate(u, _ctx(4, samples=samples)).update, u.mean(0))


def test_krum_selects_and_flags_like_the_functional_rule():
    u = _updates(7)
    u[2] += 30
    result = Krum(f=1).aggregate(u, _ctx(7))
    chosen = int(F.krum_select(u, 1)[0])
    torch.testing.assert_close(result.update, u[chosen])
    assert result.client_weights[chosen] == 1 and int(result.diagnostics["flagged"].sum()) == 6
    multi = MultiKrum(f=1).aggregate(u, _ctx(7))
    assert bool(multi.diagnostics["flagged"][2]) and int((multi.client_weights > 0).sum()) == 6
    torch.testing.assert_close(Krum(f=1, m=3).aggregate(u, _ctx(7)).update, F.krum(u, 1, m=3))


def test_bulyan_flags_the_clients_its_krum_stage_drops():
    u = _updates(7)
    u[5] -= 40
    result = Bulyan(f=1).aggregate(u, _ctx(7))
    assert bool(result.diagnostics["flagged"][5]) and int(result.diagnostics["flagged"].sum()) == 2
    torch.testing.assert_close(result.update, F.bulyan(u, 1))


def test_geometric_median_and_clipping_classes_match_their_functions():
    u = _updates(6)
    torch.testing.assert_close(GeometricMedian().aggregate(u, _ctx(6)).update, F.geometric_median(u))
    torch.testing.assert_close(CenteredClipping(tau=0.5, iters=2).aggregate(u, _ctx(6)).update,
                               F.centered_clipping(u, tau=0.5, iters=2))
    result = NormClipping(max_norm=2.0).aggregate(u, _ctx(6))
    torch.testing.assert_close(result.update, F.norm_clipping(u, 2.0))
    assert result.diagnostics["flagged"].tolist() == (u.norm(dim=1) > 2.0).tolist()


def test_centered_clipping_previous_center_is_kept_in_its_state():
    u1, u2 = _updates(5, 1), _updates(5, 2)
    first = CenteredClipping(tau=0.5, center="previous")
    first.aggregate(u1, _ctx(5))
    second = CenteredClipping(tau=0.5, center="previous")
    second.load_state_dict(first.state_dict())
    expected = F.centered_clipping(u2, tau=0.5, center=first.state_dict()["previous"])
    torch.testing.assert_close(second.aggregate(u2, _ctx(5)).update, expected)
    torch.testing.assert_close(first.aggregate(u2, _ctx(5)).update, expected)


def test_foolsgold_remembers_clients_by_id_across_rounds():
    fg = FoolsGold()
    spec = LAYOUT.output_layer_weight()
    u1, u2 = _updates(4, 1), _updates(4, 2)
    fg.aggregate(u1, _ctx(4, ids=[10, 11, 12, 13]))
    # round two sees the clients in another order; their histories must follow their ids
    order = [2, 0, 3, 1]
    ids = [[10, 11, 12, 13][i] for i in order]
    result = fg.aggregate(u2, _ctx(4, ids=ids))
    history = torch.stack([u1[i, spec.slice] for i in order]) + u2[:, spec.slice]
    expected_wv = F.foolsgold_weights(history.double())
    torch.testing.assert_close(result.diagnostics["foolsgold_wv"].double(), expected_wv.double(), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(result.update, (expected_wv.float() @ u2) / 4, rtol=1e-5, atol=1e-6)
    normalised = FoolsGold(use_memory=False, normalize=True).aggregate(u2, _ctx(4, ids=ids))
    wv = F.foolsgold_weights(u2[:, spec.slice])
    torch.testing.assert_close(normalised.update, (wv @ u2) / wv.sum(), rtol=1e-5, atol=1e-6)


def test_foolsgold_state_dict_round_trip_changes_nothing():
    fg = FoolsGold()
    fg.aggregate(_updates(5, 1), _ctx(5, ids=[3, 1, 4, 0, 2]))
    buffer = io.BytesIO()
    torch.save(fg.state_dict(), buffer)
    buffer.seek(0)
    restored = FoolsGold()
    restored.load_state_dict(torch.load(buffer))
    for key, value in fg.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)
    u = _updates(5, 2)
    a, b = fg.aggregate(u, _ctx(5, ids=[0, 1, 2, 3, 4])), restored.aggregate(u, _ctx(5, ids=[0, 1, 2, 3, 4]))
    assert torch.equal(a.update, b.update) and torch.equal(a.client_weights, b.client_weights)
    restored.load_state_dict({})
    assert restored.state_dict()["client_ids"].numel() == 0


def test_foolsgold_rejects_a_changed_feature_size_and_bad_state():
    fg = FoolsGold()
    fg.aggregate(_updates(3), _ctx(3))
    other = ParamLayout.from_module(nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2)))
    ctx = RoundContext(round=1, client_ids=[0, 1, 2], num_samples=torch.ones(3), layout=other,
                       global_params=torch.zeros(other.num_params))
    with pytest.raises(ValueError, match="stored history has 6 values but this round's features have 10"):
        fg.aggregate(torch.randn(3, other.num_params), ctx)
    with pytest.raises(ValueError, match="expects 'client_ids'"):
        fg.load_state_dict({"memory": torch.zeros(2, 3)})


# a value of the wrong type raises TypeError, a value of the right type out of range ValueError
# (fl_lightning.checks); the messages name the class and the setting
@pytest.mark.parametrize("build, error, message", [
    (lambda: TrimmedMean(beta=0.6), ValueError, "TrimmedMean: beta (the share trimmed at each end) must be"),
    (lambda: TrimmedMean(beta="0.2"), TypeError, "TrimmedMean: beta (the share trimmed at each end) must be"),
    (lambda: TrimmedMean(beta=0.1, f=1), ValueError, "TrimmedMean: give beta (a share) or f"),
    (lambda: TrimmedMean(f=-1), ValueError, "TrimmedMean: f (the values trimmed at each end) must be an int >= 0"),
    (lambda: ResidualReweight(lambda_=0), ValueError, "ResidualReweight: lambda_ must be"),
    (lambda: ResidualReweight(estimator="ols"), ValueError, "ResidualReweight: unknown estimator 'ols'"),
    (lambda: ResidualReweight(thresh=2), ValueError, "ResidualReweight: thresh must be"),
    (lambda: Krum(f=-1), ValueError, "Krum: f (the number of Byzantine clients tolerated) must be an int >= 0"),
    (lambda: Krum(f=1, m=0), ValueError, "Krum: m (the number of clients averaged) must be an int >= 1"),
    (lambda: Bulyan(f=1.5), TypeError, "Bulyan: f (the number of Byzantine clients tolerated) must be an int"),
    (lambda: GeometricMedian(tol=0), ValueError, "GeometricMedian: tol must be a finite number > 0"),
    (lambda: GeometricMedian(tol=math.inf), ValueError, "GeometricMedian: tol must be a finite number > 0"),
    (lambda: GeometricMedian(max_iter=0), ValueError, "GeometricMedian: max_iter must be an int >= 1"),
    (lambda: CenteredClipping(center="zero"), ValueError, "CenteredClipping: unknown center 'zero'"),
    (lambda: CenteredClipping(tau=-1), ValueError, "CenteredClipping: tau (the clipping radius) must be a finite number > 0"),
    (lambda: CenteredClipping(tau=math.inf), ValueError, "CenteredClipping: tau (the clipping radius) must be a finite"),
    (lambda: NormClipping(max_norm=0), ValueError, "NormClipping: max_norm must be a finite number > 0"),
    (lambda: NormClipping(max_norm=math.inf), ValueError, "NormClipping: max_norm must be a finite number > 0"),
    (lambda: FoolsGold(confidence=0), ValueError, "FoolsGold: confidence (the logit's scale) must be a finite number > 0"),
    (lambda: FoolsGold(use_memory="yes"), TypeError, "FoolsGold: use_memory must be True or False"),
    (lambda: FedAvg(weighted=1), TypeError, "FedAvg: weighted must be True or False"),
])
def test_hyper_parameters_are_checked_when_built(build, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build()


def test_foolsgold_checks_its_parameter_name_at_fit_start():
    setup = SetupContext(num_clients=4, num_rounds=1, seed=0, client_targets=[], num_classes=2, input_shape=(4,),
                         layout=LAYOUT, clients_per_round=4)
    names = ", ".join(spec.name for spec in LAYOUT.params)
    with pytest.raises(ValueError, match=re.escape(f"FoolsGold: unknown param (the parameter FoolsGold compares) "
                                                   f"'2.weigth' (did you mean '2.weight'?); valid: {names}")):
        FoolsGold(param="2.weigth").setup(setup)
    FoolsGold(param="2.weight").setup(setup)


def test_base_setup_checks_the_clients_per_round():
    setup = SetupContext(num_clients=6, num_rounds=1, seed=0, client_targets=[], num_classes=2, input_shape=(4,),
                         layout=LAYOUT, clients_per_round=6)
    with pytest.raises(ValueError, match=re.escape("Krum needs K > 2f + 2 clients per round: with f=2 that is at "
                                                   "least 7, got K=6")):
        Krum(f=2).setup(setup)
    Krum(f=1).setup(setup)


def test_k_dependent_preconditions_are_checked_by_validate():
    with pytest.raises(ValueError, match=r"Krum needs K > 2f \+ 2 clients per round: with f=2 that is at least 7, got K=6"):
        Krum(f=2).validate(6)
    with pytest.raises(ValueError, match=r"Krum needs m <= K - f \(m=5, f=1\), got K=5"):
        Krum(f=1, m=5).validate(5)
    with pytest.raises(ValueError, match=r"Bulyan needs K >= 4f \+ 3 clients per round: with f=1 that is at least 7, got K=6"):
        Bulyan(f=1).validate(6)
    with pytest.raises(ValueError, match="ResidualReweight needs at least 3 clients per round, got 2"):
        ResidualReweight().validate(2)
    Krum(f=2).validate(7)
    Bulyan(f=1).validate(7)
    assert Krum(f=2).min_clients == 7 and Bulyan(f=2).min_clients == 11 and ResidualReweight.min_clients == 3


def test_get_aggregator_by_name_class_name_or_instance():
    assert isinstance(get_aggregator("krum", f=2), Krum) and get_aggregator("krum", f=2).f == 2
    assert isinstance(get_aggregator("ResidualReweight"), ResidualReweight)
    assert isinstance(get_aggregator("coordinate_median"), AGGREGATORS["median"])
    instance = TrimmedMean(0.1)
    assert get_aggregator(instance) is instance
    with pytest.raises(ValueError, match="got an instance of TrimmedMean and keyword arguments"):
        get_aggregator(instance, beta=0.2)
    with pytest.raises(ValueError, match="unknown aggregator 'mean-shift'; valid names: fedavg, median, "
                                         "trimmed_mean, repeated_median, residual_reweight, foolsgold, krum"):
        get_aggregator("mean-shift")


def test_registry_holds_aggregator_classes_with_documented_hparams():
    for name, cls in AGGREGATORS.items():
        assert issubclass(cls, Aggregator) and cls.__doc__, name
        aggregator = cls()
        assert repr(aggregator).startswith(cls.__name__)
        assert all(not key.startswith("_") for key in aggregator.hparams())
    assert ResidualReweight(thresh=0.01).hparams()["thresh"] == 0.01


def test_classes_use_the_round_loops_finite_mask_instead_of_scanning(monkeypatch):
    import fl_lightning.aggregators._common as common

    def no_scan(updates):
        raise AssertionError("the class scanned the updates although ctx.finite was given")

    monkeypatch.setattr(common, "finite_rows", no_scan)
    u = _updates(5)
    ctx = _ctx(5)
    ctx.finite = torch.ones(5, dtype=torch.bool)
    result = FedAvg(weighted=False).aggregate(u, ctx)
    assert not bool(result.diagnostics["flagged"].any())
    torch.testing.assert_close(result.update, u.mean(dim=0))


@pytest.mark.parametrize("name", list(AGGREGATORS))
@pytest.mark.parametrize("wrapped", [False, True])
def test_no_rule_rescans_the_rows_when_the_round_loop_gave_its_finite_mask(monkeypatch, name, wrapped):
    import fl_lightning.aggregators._common as common
    import fl_lightning.aggregators.functional._base as base

    def no_scan(updates):
        raise AssertionError("the updates were scanned for NaN/Inf although ctx.finite was given")

    monkeypatch.setattr(common, "finite_rows", no_scan)
    monkeypatch.setattr(base, "finite_rows", no_scan)
    u = _updates(11)
    u[4, 0] = math.nan                                           # the mask says so: row 4 is left out
    ctx = _ctx(11, reference=u[:4].mean(dim=0))
    ctx.finite = torch.arange(11) != 4
    aggregator = AGGREGATORS[name]()
    if wrapped:
        from fl_lightning.aggregators import NNM
        aggregator = NNM(aggregator, f=1)
    result = aggregator.aggregate(u, ctx)
    assert bool(torch.isfinite(result.update).all()) and bool(result.diagnostics["flagged"][4])
