"""Every aggregator keeps its work on the device of the updates, and computes there what it computes on the CPU.

The device is simulated (see :mod:`tests.aggregators.simulated_device`): a tensor left on the CPU
where the round's tensors live on the device fails exactly as it would on CUDA.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import pytest
import torch
from torch import Tensor, nn

from fl_lightning.aggregators import AGGREGATORS, PRE_AGGREGATORS, get_aggregator
from fl_lightning.aggregators import functional as F
from fl_lightning.context import RoundContext
from fl_lightning.param_layout import ParamLayout
from tests.aggregators.simulated_device import (
    SimulatedDevice, assert_same_on_device, on_device, to_cpu, to_device,
)

K, OUT, IN = 9, 2, 3


class _Net(nn.Module):
    """A linear layer and a 0-dim parameter (residual reweighting treats those columns apart)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(IN, OUT)
        self.temperature = nn.Parameter(torch.tensor(1.0))


LAYOUT = ParamLayout.from_module(_Net())          # N = 9
N = LAYOUT.num_params

#: constructor arguments of each rule for K = 9 clients (f = 1 wherever the rule tolerates f)
ARGS: dict[str, dict[str, Any]] = {
    "krum": {"f": 1}, "multi_krum": {"f": 1}, "bulyan": {"f": 1}, "mda": {"f": 1}, "monna": {"f": 1},
    "meamed": {"f": 1}, "caf": {"f": 1}, "smea": {"f": 1}, "dnc": {"f": 1, "sub_dim": 5, "niters": 3},
    "fltrust": {"root_samples": 10}, "trimmed_mean": {"beta": 0.2}, "norm_clipping": {"max_norm": 1.0},
    "centered_clipping": {"center": "previous"}, "geometric_median": {"weighted": True},
    "fedavg": {"weighted": True},
}

#: each pre-aggregator around two inner rules: one with client weights, one coordinate-wise
PRE_CASES = [(pre, inner) for pre in PRE_AGGREGATORS for inner in ("fedavg", "trimmed_mean")] + \
    [("nnm", "krum"), ("bucketing", "foolsgold"), ("arc", "residual_reweight")]


def _build(name: str, inner: str | None = None):
    if inner is None:
        return get_aggregator(name, **ARGS.get(name, {}))
    f = {"nnm": {"f": 1}, "arc": {"f": 1}, "bucketing": {"s": 2}}[name]
    return get_aggregator(name, inner=get_aggregator(inner, **ARGS.get(inner, {})), **f)


def _round(round_idx: int, with_nan: bool, scanned: bool) -> tuple[Tensor, RoundContext]:
    """A round of K clients: spread-out updates, two near-duplicates, optionally one NaN row."""
    g = torch.Generator().manual_seed(round_idx)
    updates = torch.randn(K, N, generator=g)
    updates[1] = updates[0] + 1e-3                   # a sybil pair (FoolsGold, FLAME's clusters)
    updates[K - 1] *= 20                             # one outlier every rule should notice
    if with_nan:
        updates[3, 2] = math.nan
    ctx = RoundContext(round=round_idx, client_ids=list(range(K)),
                       num_samples=torch.arange(10.0, 10.0 + K), layout=LAYOUT,
                       global_params=torch.randn(N, generator=g), seed=7, num_clients=K,
                       reference_update=torch.randn(N, generator=g).abs(),
                       finite=torch.isfinite(updates).all(dim=1) if scanned else None)
    return updates, ctx


def _on_device(ctx: RoundContext) -> RoundContext:
    """The context as the trainer builds it with ``accelerator="cuda"``: every tensor on the device."""
    moved = {field.name: to_device(getattr(ctx, field.name)) for field in dataclasses.fields(ctx)
             if isinstance(getattr(ctx, field.name), Tensor)}
    return dataclasses.replace(ctx, **moved)


def _two_rounds(build: Callable[[], Any], device: bool, with_nan: bool, scanned: bool) -> list[Any]:
    """Two rounds with one aggregator (stateful rules carry memory into the second)."""
    aggregator, results = build(), []
    for round_idx in range(2):
        updates, ctx = _round(round_idx, with_nan, scanned)
        if device:
            updates, ctx = to_device(updates), _on_device(ctx)
        results.append(aggregator.aggregate(updates, ctx))
    return results


CASES = [pytest.param(name, None, id=name) for name in AGGREGATORS] + \
    [pytest.param(pre, inner, id=f"{pre}({inner})") for pre, inner in PRE_CASES]


@pytest.mark.parametrize("scanned", [True, False], ids=["ctx.finite", "scan"])
@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan-row"])
@pytest.mark.parametrize("name, inner", CASES)
def test_aggregator_runs_on_the_updates_device(name, inner, with_nan, scanned):
    on_cpu = _two_rounds(lambda: _build(name, inner), False, with_nan, scanned)
    with SimulatedDevice():
        on_dev = _two_rounds(lambda: _build(name, inner), True, with_nan, scanned)
    assert_same_on_device(on_dev, on_cpu)


def test_every_rule_and_pre_aggregator_is_checked():
    checked = {name for name, inner in PRE_CASES} | {inner for _, inner in PRE_CASES}
    assert set(PRE_AGGREGATORS) <= checked
    assert set(AGGREGATORS) == {p.values[0] for p in CASES if p.values[1] is None}


@pytest.mark.parametrize("name", ["foolsgold", "centered_clipping"])
def test_state_loaded_from_a_cpu_checkpoint_moves_to_the_device(name):
    """A GPU run resumed from a checkpoint: the saved memory comes back on the CPU (``map_location="cpu"``)."""
    uninterrupted = _build(name)
    uninterrupted.aggregate(*_round(0, False, True))
    saved = uninterrupted.state_dict()
    expected = uninterrupted.aggregate(*_round(1, False, True))
    resumed = _build(name)
    resumed.load_state_dict(saved)
    updates, ctx = _round(1, False, True)
    with SimulatedDevice():
        got = resumed.aggregate(to_device(updates), _on_device(ctx))
    assert_same_on_device(got, expected)


# -- the functional rules --------------------------------------------------------------------------------
def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(3)


#: every public function of ``aggregators.functional`` that takes the [K, N] updates, with its arguments
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "fedavg": lambda u, fin, w: F.fedavg(u, w, finite=fin),
    "coordinate_median": lambda u, fin, w: F.coordinate_median(u, finite=fin),
    "trimmed_mean": lambda u, fin, w: F.trimmed_mean(u, 0.2, finite=fin),
    "repeated_median": lambda u, fin, w: F.repeated_median(u, finite=fin),
    "meamed": lambda u, fin, w: F.meamed(u, 1, finite=fin),
    "residual_reweight": lambda u, fin, w: F.residual_reweight(u, finite=fin),
    "residual_reweight_details": lambda u, fin, w: F.residual_reweight_details(
        u, finite=fin, skip_columns=torch.arange(N, device=u.device) == N - 1),
    "residual_reweight_paper_gaussian": lambda u, fin, w: F.residual_reweight(
        u, variant="paper", weighting="gaussian", estimator="theil_sen", finite=fin),
    "robust_line": lambda u, fin, w: F.robust_line(u, estimator="theil_sen", variant="paper", finite=fin),
    "foolsgold_weights": lambda u, fin, w: F.foolsgold_weights(u, finite=fin),
    "krum": lambda u, fin, w: F.krum(u, 1, finite=fin),
    "krum_ranking": lambda u, fin, w: F.krum_ranking(u, 1, finite=fin),
    "krum_scores": lambda u, fin, w: F.krum_scores(u, 1, finite=fin),
    "krum_select": lambda u, fin, w: F.krum_select(u, 1, 3, finite=fin),
    "bulyan": lambda u, fin, w: F.bulyan(u, 1, finite=fin),
    "bulyan_selection": lambda u, fin, w: F.bulyan_selection(u, 1, finite=fin),
    "mda_selection": lambda u, fin, w: F.mda_selection(u, 1, finite=fin),
    "monna_selection": lambda u, fin, w: F.monna_selection(u, 1, trusted=0, finite=fin),
    "geometric_median": lambda u, fin, w: F.geometric_median(u, w, finite=fin),
    "weiszfeld": lambda u, fin, w: F.weiszfeld(u, finite=fin),
    "centered_clipping": lambda u, fin, w: F.centered_clipping(u, tau=0.5, finite=fin),
    "centered_clipping_center": lambda u, fin, w: F.centered_clipping(u, center=u[0].nan_to_num(), finite=fin),
    "norm_clipping": lambda u, fin, w: F.norm_clipping(u, 1.0, w, finite=fin),
    "caf_details": lambda u, fin, w: F.caf_details(u, 1, finite=fin),
    "smea_selection": lambda u, fin, w: F.smea_selection(u, 1, finite=fin),
    "dnc_selection": lambda u, fin, w: F.dnc_selection(u, 1, sub_dim=4, niters=3, generator=_generator(),
                                                       finite=fin),
    "cosine_distances": lambda u, fin, w: F.cosine_distances(u, finite=fin),
    "flame_details": lambda u, fin, w: F.flame_details(u, generator=_generator(), finite=fin),
    "fltrust_details": lambda u, fin, w: F.fltrust_details(u, u[0].nan_to_num().abs(), finite=fin),
    "bucketing": lambda u, fin, w: F.bucketing(u, 2, _generator(), finite=fin),
    "bucket_indices": lambda u, fin, w: F.bucket_indices(u.shape[0], 2, _generator()),
    "nnm": lambda u, fin, w: F.nnm(u, 1, finite=fin),
    "nnm_weights": lambda u, fin, w: F.nnm_weights(u, 1, finite=fin),
    "arc": lambda u, fin, w: F.arc(u, 2, finite=fin),
    "arc_scales": lambda u, fin, w: F.arc_scales(u, 2, finite=fin),
    "finite_rows": lambda u, fin, w: F.finite_rows(u),
    "row_distances": lambda u, fin, w: F.row_distances(u, u[0].nan_to_num(), finite=fin),
}


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan-row"])
@pytest.mark.parametrize("given_mask", [True, False], ids=["finite=mask", "finite=None"])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_functional_rule_runs_on_the_updates_device(name, given_mask, with_nan):
    updates, ctx = _round(0, with_nan, True)
    finite = ctx.finite if given_mask else None
    on_cpu = FUNCTIONS[name](updates, finite, ctx.num_samples)
    with SimulatedDevice():
        on_dev = FUNCTIONS[name](to_device(updates), None if finite is None else to_device(finite),
                                 to_device(ctx.num_samples))
    if name == "bucket_indices":                 # a list of index tensors, on the CPU by design: it has no input
        assert [t.tolist() for t in on_dev] == [t.tolist() for t in on_cpu]
        return
    assert_same_on_device(on_dev, on_cpu)


def test_every_public_rule_is_checked():
    takes_updates = {name for name in F.__all__ if callable(getattr(F, name)) and name[0].islower()
                     and name not in {"check_byzantine_count", "check_residual_reweight_options",
                                      "check_trim_share", "trimmed_count", "arc_clip_count"}}
    covered = {name for name in FUNCTIONS} | {name.rsplit("_", 1)[0] for name in FUNCTIONS}
    missing = {name for name in takes_updates if name not in covered and f"{name}_details" not in covered
               and f"{name}_selection" not in covered}
    assert not missing, f"functional rules without a device test: {sorted(missing)}"


def test_the_simulated_device_catches_a_cpu_tensor_mixed_in():
    """The check itself: a CPU ``[K]`` tensor meeting the device's updates fails, as on CUDA."""
    with SimulatedDevice():
        updates = to_device(torch.randn(K, N))
        with pytest.raises(RuntimeError, match="same device"):
            updates.sum(dim=1) + torch.ones(K)
        with pytest.raises(TypeError, match="numpy"):
            updates.numpy()
        with pytest.raises(RuntimeError, match="generator"):
            torch.randperm(K, generator=torch.Generator(), device=updates.device)
        with pytest.raises(RuntimeError, match="same device"):
            updates.index_select(0, torch.tensor([0, 2]))
        assert on_device(torch.zeros(K, device=updates.device) + updates.sum(dim=1))
        # what works on CUDA works here: list indices, 0-dim CPU scalars, shapes of composite ops
        assert to_cpu(updates[[0, 2]]).equal(to_cpu(updates)[[0, 2]])
        assert on_device(updates * torch.tensor(2.0))
        weights = to_device(torch.rand(K))
        assert (weights @ updates).shape == (N,) and on_device(weights @ updates)
