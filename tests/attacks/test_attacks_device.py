"""Attacks, attack metrics and ClassAccuracy keep their work on the device of their inputs.

The device is simulated (see :mod:`tests.aggregators.simulated_device`): a tensor left on the CPU
where the round's tensors live on the device fails exactly as it would on CUDA, and every result
must equal, bit for bit, the same call on the CPU.
"""
from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace
from typing import Any, Callable

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from fl_lightning.aggregators import CoordinateMedian, Krum, TrimmedMean
from fl_lightning.aggregators import functional as AF
from fl_lightning.attacks import (
    ALIE, ATTACKS, IPM, FangKrum, FangTrimmedMean, FeatureBackdoor, GaussianNoise, Inf, LabelFlip, Mimic, MinMax,
    MinSum, MixRate, ModelReplacement, OptimalALIE, OptimalIPM, PixelBackdoor, SignFlip, poison_round_updates,
)
from fl_lightning.attacks import functional as F
from fl_lightning.callbacks import ClassAccuracy
from fl_lightning.context import RoundContext
from fl_lightning.data.base import TensorData
from fl_lightning.metrics import AttackSuccessRate, BackdoorSuccessRate, DetectionPrecisionRecall
from fl_lightning.metrics import functional as MF
from tests.aggregators.simulated_device import (
    DEVICE, SimulatedDevice, assert_same_on_device, on_device, to_cpu, to_device,
)
from tests.attacks.conftest import round_context, setup_context

K, N = 10, 8
ATTACKERS = [2, 7]


def _updates(with_nan: bool = False) -> Tensor:
    updates = torch.randn(K, N, generator=torch.Generator().manual_seed(5))
    if with_nan:
        updates[4, 1] = math.nan
    return updates


def _ctx(updates: Tensor, scanned: bool) -> RoundContext:
    ctx = round_context(range(K), width=N, round_idx=3, seed=11)
    return dataclasses.replace(ctx, num_samples=torch.arange(5.0, 5.0 + K),
                               finite=torch.isfinite(updates).all(dim=1) if scanned else None)


def _on_device(ctx: RoundContext) -> RoundContext:
    """The context as the trainer builds it with ``accelerator="cuda"``: every tensor on the device."""
    moved = {field.name: to_device(getattr(ctx, field.name)) for field in dataclasses.fields(ctx)
             if isinstance(getattr(ctx, field.name), Tensor)}
    return dataclasses.replace(ctx, **moved)


# -- model poisoning: every attack class -----------------------------------------------------------------
MODEL_ATTACKS: dict[str, Callable[[], Any]] = {
    "SignFlip": lambda: SignFlip(scale=3.0, clients=ATTACKERS),
    "ALIE": lambda: ALIE(clients=ATTACKERS),
    "IPM": lambda: IPM(clients=ATTACKERS),
    "Mimic": lambda: Mimic(clients=ATTACKERS),
    "Inf": lambda: Inf(clients=ATTACKERS),
    "MinMax": lambda: MinMax(perturbation="std", clients=ATTACKERS),
    "MinSum": lambda: MinSum(perturbation="sign", clients=ATTACKERS),
    "FangKrum": lambda: FangKrum(clients=ATTACKERS),
    "FangTrimmedMean": lambda: FangTrimmedMean(clients=ATTACKERS),
    "OptimalALIE": lambda: OptimalALIE(aggregator=TrimmedMean(beta=0.2), clients=ATTACKERS, evals=5),
    "OptimalIPM": lambda: OptimalIPM(aggregator=Krum(f=2), clients=ATTACKERS, evals=5),
    "GaussianNoise": lambda: GaussianNoise(sigma=0.5, clients=ATTACKERS),
    "MixRate": lambda: MixRate(rate=0.3, clients=ATTACKERS),
    "MixRate(mean)": lambda: MixRate(rate=0.3, clients=ATTACKERS, blend_with="mean"),
    "ModelReplacement": lambda: ModelReplacement(scale=10.0, rounds=None, clients=ATTACKERS),
}


def _poisoned(build: Callable[[], Any], device: bool, with_nan: bool, scanned: bool) -> Tensor:
    attack = build()
    attack.setup(setup_context(num_clients=K))
    updates = _updates(with_nan)
    ctx = _ctx(updates, scanned)
    if device:
        updates, ctx = to_device(updates), _on_device(ctx)
    return poison_round_updates([attack], updates, ctx)


@pytest.mark.parametrize("scanned", [True, False], ids=["ctx.finite", "scan"])
@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan-row"])
@pytest.mark.parametrize("name", list(MODEL_ATTACKS))
def test_model_poisoning_attack_runs_on_the_updates_device(name, with_nan, scanned):
    on_cpu = _poisoned(MODEL_ATTACKS[name], False, with_nan, scanned)
    assert not torch.equal(on_cpu[ATTACKERS].nan_to_num(), _updates(with_nan)[ATTACKERS].nan_to_num())
    with SimulatedDevice():
        on_dev = _poisoned(MODEL_ATTACKS[name], True, with_nan, scanned)
    assert_same_on_device(on_dev, on_cpu)


def test_every_model_poisoning_attack_is_checked():
    rewrites = {name for name, cls in ATTACKS.items() if "poison_updates" in _defined(cls)}
    assert rewrites <= {name.split("(")[0] for name in MODEL_ATTACKS}


def _defined(cls: type) -> set[str]:
    """Methods ``cls`` or one of its bases below ``Attack`` defines."""
    from fl_lightning.attacks import Attack

    return {name for klass in cls.__mro__ if klass is not Attack and issubclass(klass, Attack)
            for name in vars(klass)}


# -- model poisoning: the functions ----------------------------------------------------------------------
def _honest() -> Tensor:
    return _updates()[:7]


FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Any]] = {
    "sign_flip": lambda honest, own: F.sign_flip(own, 2.0),
    "alie": lambda honest, own: F.alie(honest, 3),
    "ipm": lambda honest, own: F.ipm(honest, 3),
    "gaussian_noise": lambda honest, own: F.gaussian_noise(own, honest[0], 0.5,
                                                           torch.randn(own.shape, generator=torch.Generator())),
    "inf": lambda honest, own: F.inf(honest, 3),
    "mimic_victim": lambda honest, own: F.mimic_victim(honest),
    "mimic": lambda honest, own: F.mimic(honest, 3),
    "perturbation": lambda honest, own: [F.perturbation(honest, kind) for kind in F.PERTURBATIONS],
    "min_max": lambda honest, own: F.min_max(honest, 3),
    "min_sum": lambda honest, own: F.min_sum(honest, 3, "std"),
    "fang_trimmed_mean": lambda honest, own: F.fang_trimmed_mean(
        honest, 3, generator=torch.Generator().manual_seed(1)),
    "fang_krum_lambda_bound": lambda honest, own: F.fang_krum_lambda_bound(honest, 3),
    "fang_krum": lambda honest, own: F.fang_krum(honest, 2),
    "attack_distance": lambda honest, own: F.attack_distance(honest, own, AF.coordinate_median),
    "optimal_alie": lambda honest, own: F.optimal_alie(honest, 3, AF.coordinate_median, evals=5),
    "optimal_ipm": lambda honest, own: F.optimal_ipm(honest, 3, lambda u: AF.krum(u, 2), evals=5),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_attack_function_runs_on_the_updates_device(name):
    honest, own = _honest(), _updates()[7:]
    on_cpu = FUNCTIONS[name](honest, own)
    with SimulatedDevice():
        on_dev = FUNCTIONS[name](to_device(honest), to_device(own))
    assert_same_on_device(on_dev, on_cpu)


def test_every_attack_function_is_checked():
    public = {name for name in dir(F) if not name.startswith("_") and callable(getattr(F, name))
              and getattr(getattr(F, name), "__module__", None) == F.__name__}
    assert public - {"alie_paper_z", "line_search"} <= set(FUNCTIONS)   # the two take no tensor


# -- data poisoning ----------------------------------------------------------------------------------------
def _images() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(2)
    targets = torch.randint(0, 10, (12,), generator=g)
    targets[:5] = 3                                  # the source class of the LabelFlip cases
    return torch.rand(12, 3, 8, 8, generator=g), targets


def _ready(attack):
    attack.setup(setup_context(num_clients=K, input_shape=(3, 8, 8)))
    return attack


DATA_ATTACKS: dict[str, Callable[[Tensor, Tensor], Any]] = {
    "LabelFlip(all)": lambda x, y: _ready(LabelFlip(clients=1)).flip(y),
    "LabelFlip(source->target)": lambda x, y: _ready(LabelFlip(source=3, target=5, clients=1)).flip(y),
    "LabelFlip(source->spread)": lambda x, y: _ready(LabelFlip(source=3, clients=1)).flip(y),
    "PixelBackdoor.poison_batch": lambda x, y: _ready(PixelBackdoor(target=1, poison_per_batch=5)).poison_batch(
        0, x, y, torch.Generator().manual_seed(4)),
    "PixelBackdoor(plus, per-channel values)": lambda x, y: _ready(
        PixelBackdoor(target=1, pattern="plus", value=[1.0, 2.0, 3.0], location="bottom-right")).apply_trigger(x),
    "PixelBackdoor(cross, batch maximum)": lambda x, y: _ready(
        PixelBackdoor(target=1, pattern="cross", value=None)).apply_trigger(x),
    "FeatureBackdoor": lambda x, y: FeatureBackdoor([0, 5], [9.0, -9.0], target=1, poison_per_batch=4).poison_batch(
        0, x.flatten(1), y, torch.Generator().manual_seed(4)),
    "FeatureBackdoor.above_max": lambda x, y: FeatureBackdoor.above_max(x.flatten(1), [0, 5]),
}


@pytest.mark.parametrize("name", list(DATA_ATTACKS))
def test_data_poisoning_runs_on_the_batch_device(name):
    inputs, targets = _images()
    on_cpu = DATA_ATTACKS[name](inputs, targets)
    with SimulatedDevice():
        on_dev = DATA_ATTACKS[name](to_device(inputs), to_device(targets))
    assert_same_on_device(on_dev, on_cpu)


# -- metrics -----------------------------------------------------------------------------------------------
METRICS: dict[str, Callable[[], Any]] = {
    "AttackSuccessRate(all)": lambda: AttackSuccessRate(None, None),
    "AttackSuccessRate(3->5)": lambda: AttackSuccessRate(3, 5),
    "AttackSuccessRate(3->any)": lambda: AttackSuccessRate(3, None),
    "BackdoorSuccessRate": lambda: BackdoorSuccessRate(5),
}


def _metric_value(build: Callable[[], Any], device: bool) -> Tensor:
    g = torch.Generator().manual_seed(8)
    metric = build()
    if device:
        metric = metric.to(DEVICE)          # what evaluation does with every attack metric
    for _ in range(2):
        preds, targets = torch.randint(0, 10, (50,), generator=g), torch.randint(0, 10, (50,), generator=g)
        metric.update(*((to_device(preds), to_device(targets)) if device else (preds, targets)))
    return metric.compute()


@pytest.mark.parametrize("name", list(METRICS))
def test_attack_metric_runs_on_the_predictions_device(name):
    on_cpu = _metric_value(METRICS[name], False)
    with SimulatedDevice():
        on_dev = _metric_value(METRICS[name], True)
    assert_same_on_device(on_dev, on_cpu)


def test_detection_metric_runs_on_the_flags_device():
    flags = torch.tensor([True, False, True, True, False])

    def run(device: bool) -> Any:
        metric = DetectionPrecisionRecall()
        if device:
            metric = metric.to(DEVICE)
        mask = to_device(flags) if device else flags
        return metric(mask, [1, 2, 9], [0, 1, 2, 3, 4]), metric.compute(), \
            MF.detection_counts(mask, [2], [0, 1, 2, 3, 4])

    on_cpu = run(False)
    with SimulatedDevice():
        on_dev = run(True)
    assert_same_on_device(on_dev, on_cpu)


# -- ClassAccuracy -------------------------------------------------------------------------------------------
class _OnDeviceClassifier(L.LightningModule):
    """A fixed linear classifier whose weight lives on the simulated device, as a module moved to CUDA."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)

    @property
    def device(self) -> torch.device:                   # what LightningModule.to(...) would record
        return self.weight.device

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs @ self.weight


def _class_accuracy(device: bool) -> dict[str, float]:
    g = torch.Generator().manual_seed(9)
    test = TensorData(torch.randn(60, 4, generator=g), torch.randint(0, 3, (60,), generator=g))
    weight = torch.randn(4, 3, generator=g)
    module = _OnDeviceClassifier(to_device(weight) if device else weight)
    trainer = SimpleNamespace(module=module, datamodule=SimpleNamespace(test=test, num_classes=3))
    record = SimpleNamespace(metrics={})
    ClassAccuracy(classes=[0, 1, 2], batch_size=16).on_round_end(trainer, record)
    return record.metrics


def test_class_accuracy_evaluates_on_the_module_device():
    on_cpu = _class_accuracy(False)
    assert set(on_cpu) == {"test/acc_class0", "test/acc_class1", "test/acc_class2"}
    with SimulatedDevice():
        on_dev = _class_accuracy(True)
    assert on_dev == on_cpu
