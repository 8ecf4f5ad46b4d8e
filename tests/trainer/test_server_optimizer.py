"""Server optimizers: the aggregate as negative pseudo-gradient, checked by hand, against Flower's strategies,
through the round loop with every kind of rule, and in checkpoints."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from tests.helpers import TinyNet, fedavg, make_dm, make_trainer

from fl_lightning.optim import ServerAdam, Yogi
from fl_lightning.param_layout import ParamLayout
from fl_lightning.trainer.global_model import GlobalModel
from fl_lightning.trainer.server_optimizer import (as_optimizer_factory, fedadagrad, fedadam, fedavgm, fedyogi)

UPDATES = [[0.5, -1.0], [0.25, 0.5], [-0.75, 0.125]]


def _global(spec, start=(1.0, 2.0)):
    module = TinyNet(hidden=1, num_classes=1)
    with torch.no_grad():
        params = [p for p in module.parameters()]
        for p in params:
            p.zero_()
    layout = ParamLayout.from_module(module)
    model = GlobalModel(module, layout, spec)
    model.params[:2] = torch.tensor(start)
    return model


def _run(spec, updates=UPDATES):
    model = _global(spec)
    seen = []
    for u in updates:
        update = torch.zeros_like(model.params)
        update[:2] = torch.tensor(u)
        assert model.step(update) == ""
        seen.append(model.params[:2].tolist())
    return seen


def test_fedavgm_by_hand():
    lr, beta = 0.5, 0.9
    x, m = [1.0, 2.0], None
    expected = []
    for u in UPDATES:
        g = [-v for v in u]
        m = g if m is None else [beta * a + b for a, b in zip(m, g)]
        x = [xi - lr * mi for xi, mi in zip(x, m)]
        expected.append(x)
    assert np.allclose(_run(fedavgm(lr, beta)), expected, rtol=1e-6)


@pytest.mark.parametrize("rule", ["adam", "yogi", "adagrad"])
def test_adaptive_rules_by_hand(rule):
    """Reddi et al. Algorithm 2 with Flower's conventions (v_0 = 0; FedAdam's bias correction at round + 1)."""
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    x, m, v = [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]
    expected = []
    for t, u in enumerate(UPDATES, start=1):
        if rule == "adagrad":
            m = list(u)
            v = [vi + ui * ui for vi, ui in zip(v, u)]
            scale = lr
        else:
            m = [b1 * mi + (1 - b1) * ui for mi, ui in zip(m, u)]
            if rule == "adam":
                v = [b2 * vi + (1 - b2) * ui * ui for vi, ui in zip(v, u)]
                scale = lr * math.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1))
            else:
                v = [vi - (1 - b2) * ui * ui * math.copysign(1.0, vi - ui * ui) if vi != ui * ui else vi
                     for vi, ui in zip(v, u)]
                scale = lr
        x = [xi + scale * mi / (math.sqrt(vi) + tau) for xi, mi, vi in zip(x, m, v)]
        expected.append(x)
    spec = {"adam": fedadam(lr, (b1, b2), tau), "yogi": fedyogi(lr, (b1, b2), tau),
            "adagrad": fedadagrad(lr, tau)}[rule]
    assert np.allclose(_run(spec), expected, rtol=1e-5, atol=1e-7)


def test_sgd_lr_one_is_the_default_step():
    plain = _run(None)
    sgd = _run(functools.partial(torch.optim.SGD, lr=1.0))
    assert plain == sgd


def _flower_strategy(name, initial):
    pytest.importorskip("flwr", reason="the [flower] extra")
    from flwr.common import ndarrays_to_parameters
    from flwr.server import strategy

    params = ndarrays_to_parameters(initial)
    return {
        "FedAvgM": lambda: strategy.FedAvgM(initial_parameters=params, server_learning_rate=0.7, server_momentum=0.9),
        "FedAdam": lambda: strategy.FedAdam(initial_parameters=params, eta=0.05, beta_1=0.9, beta_2=0.99, tau=1e-3),
        "FedYogi": lambda: strategy.FedYogi(initial_parameters=params, eta=0.05, beta_1=0.9, beta_2=0.99, tau=1e-3),
        "FedAdagrad": lambda: strategy.FedAdagrad(initial_parameters=params, eta=0.05, tau=1e-3),
    }[name]()


OURS = {"FedAvgM": fedavgm(0.7, 0.9), "FedAdam": fedadam(0.05, (0.9, 0.99), 1e-3),
        "FedYogi": fedyogi(0.05, (0.9, 0.99), 1e-3), "FedAdagrad": fedadagrad(0.05, 1e-3)}


@pytest.mark.parametrize("name", sorted(OURS))
def test_matches_flowers_strategy(name):
    """Flower's own strategy class and ours get the same clients' models for 4 rounds: same global models."""
    pytest.importorskip("flwr", reason="the [flower] extra")
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    module = TinyNet(hidden=3, num_classes=2)
    layout = ParamLayout.from_module(module)
    ours = GlobalModel(module, layout, OURS[name])

    def arrays(flat):
        return [flat[s.slice].view(s.shape).double().numpy().copy() for s in layout.params]

    flower = _flower_strategy(name, arrays(ours.params))
    current = arrays(ours.params)
    g = torch.Generator().manual_seed(0)
    for server_round in range(1, 5):
        clients = [ours.params + 0.1 * torch.randn(ours.params.shape, generator=g) for _ in range(3)]
        sizes = [10, 20, 30]
        results = [(None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays(c)), n, {}))
                   for c, n in zip(clients, sizes)]
        new, _ = flower.aggregate_fit(server_round, results, [])
        current = parameters_to_ndarrays(new)
        share = torch.tensor(sizes, dtype=torch.float32) / sum(sizes)
        update = share @ torch.stack(clients) - ours.params
        assert ours.step(update) == ""
        for mine, theirs in zip(arrays(ours.params), current):
            np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)


def test_non_finite_step_is_undone():
    """A finite aggregate whose momentum step overflows: the model and the optimizer's state stay as they were."""
    model = _global(fedavgm(1.0, 0.9))
    big = torch.full_like(model.params, 2e38)
    assert model.step(big) == ""  # x = 2e38, buffer = -2e38: finite
    before = model.params.clone(), model.server_optimizer.state_dict()
    assert model.step(big) == "parameters"  # buffer = -3.8e38: Inf
    assert torch.equal(model.params, before[0])
    after = model.server_optimizer.state_dict()["state"]
    assert all(torch.equal(after[i]["momentum_buffer"], before[1]["state"][i]["momentum_buffer"]) for i in after)


def test_specs_from_python_and_yaml_and_bad_ones():
    for spec in [(torch.optim.SGD, {"lr": 1.0}), {"class_path": "torch.optim.SGD", "init_args": {"lr": 1.0}},
                 {"class_path": "Yogi"}, functools.partial(ServerAdam, lr=0.1)]:
        assert callable(as_optimizer_factory(spec))
    with pytest.raises(TypeError, match="class_path"):
        as_optimizer_factory({"init_args": {}})
    with pytest.raises(TypeError, match="not an instance"):
        as_optimizer_factory(torch.optim.SGD([torch.zeros(1)], lr=1.0))
    with pytest.raises(TypeError, match="cannot be imported"):
        as_optimizer_factory({"class_path": "torch.optim.NoSuch"})
    with pytest.raises(ValueError, match="lr must be > 0"):
        Yogi([torch.zeros(1)], lr=0.0)


@pytest.mark.parametrize("aggregator", ["FedAvg", "Krum", "ResidualReweight", "NNM", "Bucketing", "ARC"])
def test_composes_with_rules_and_pre_aggregators(tmp_path, aggregator, one_thread):
    from fl_lightning import aggregators as A

    rule = {"FedAvg": A.FedAvg(), "Krum": A.Krum(f=1), "ResidualReweight": A.ResidualReweight(),
            "NNM": A.NNM(f=1, inner=A.TrimmedMean(f=1)), "Bucketing": A.Bucketing(s=2, inner=A.CoordinateMedian()),
            "ARC": A.ARC(f=1, inner=A.FedAvg())}[aggregator]
    plain = make_trainer(tmp_path / "a", aggregator=rule, max_batches_per_epoch=2, checkpoint_every=0)
    plain.fit(TinyNet(), make_dm(num_clients=5))
    trainer = make_trainer(tmp_path / "b", aggregator=rule, max_batches_per_epoch=2, checkpoint_every=0,
                           server_optimizer=fedavgm(1.0, 0.9))
    trainer.fit(TinyNet(), make_dm(num_clients=5))
    state = trainer.global_model.server_optimizer.state_dict()["state"]
    assert state and all(torch.isfinite(s["momentum_buffer"]).all() for s in state.values())
    # round 1's momentum is its aggregate: the runs agree after round 1, differ after round 2
    assert not torch.equal(plain.global_params, trainer.global_params)
    assert "SGD" in trainer.hparams()["server_optimizer"]


def test_state_is_checkpointed_and_restored(tmp_path, one_thread):
    trainer = make_trainer(tmp_path, rounds=2, max_batches_per_epoch=2, server_optimizer=fedyogi(0.05))
    trainer.fit(TinyNet(), make_dm())
    saved = torch.load(trainer.checkpoint_path, weights_only=True)["server_optimizer"]
    assert set(saved["state"]) == set(range(4)) and float(saved["state"][0]["step"]) == 2.0
    resumed = make_trainer(tmp_path, rounds=2, max_batches_per_epoch=2, server_optimizer=fedyogi(0.05))
    resumed.fit(TinyNet(), make_dm(), ckpt_path="last")
    live = resumed.global_model.server_optimizer.state_dict()["state"]
    assert all(torch.equal(live[i]["exp_avg_sq"], saved["state"][i]["exp_avg_sq"]) for i in saved["state"])
