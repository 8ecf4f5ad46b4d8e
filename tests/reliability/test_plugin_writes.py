"""Plug-ins cannot change what they don't own: an attack or an aggregator writing in place into the global model,
the sample counts or an honest client's row fails the fit naming the plug-in (issue 20, item 8)."""
from __future__ import annotations

import pytest
import torch

from fl_lightning import AggregationResult, Attack
from fl_lightning.aggregators import FedAvg
from tests.helpers import TinyNet, make_dm, make_trainer
from tests.reliability.faults import GlobalLog

pytestmark = pytest.mark.usefixtures("one_thread")


class MovesGlobalModel(Attack):
    """``ctx.global_params.add_(value)``: the live global model, were it not protected."""

    def __init__(self, value: float = 5.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.value = value

    def poison_updates(self, updates, ctx):
        ctx.global_params.add_(self.value)
        return updates


class WritesHonestRow(Attack):
    """Scales its own rows, but also writes into the first honest row in place; returns a copy or the input."""

    def __init__(self, copy: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.copy = copy

    def poison_updates(self, updates, ctx):
        own = self.attacker_rows(ctx)
        honest = next(r for r in range(len(updates)) if r not in own)
        updates[honest].mul_(-3.0)
        out = updates.clone() if self.copy else updates
        out[own] *= 2.0
        return out


class ScalesOwnRows(Attack):
    """A well-behaved attack: writes its own rows in place and returns the input."""

    def poison_updates(self, updates, ctx):
        for row in self.attacker_rows(ctx):
            updates[row].mul_(4.0)
        return updates


class NormalisingAggregator(FedAvg):
    """A FedAvg that normalises the client rows in place (or the sample counts) before averaging."""

    def __init__(self, target: str = "updates") -> None:
        super().__init__()
        self.target = target

    def aggregate(self, updates, ctx):
        if self.target == "updates":
            updates.div_(updates.norm(dim=1, keepdim=True))
        elif self.target == "num_samples":
            ctx.num_samples.fill_(1.0)
        else:
            ctx.global_params.zero_()
        return super().aggregate(updates, ctx)


def _fit(tmp_path, **kwargs):
    trainer = make_trainer(tmp_path, rounds=2, max_batches_per_epoch=1, **kwargs)
    module = TinyNet()
    trainer.fit(module, make_dm(num_clients=4))
    return trainer, module


def test_an_attack_moving_the_global_model_fails_naming_it(tmp_path) -> None:
    with pytest.raises(RuntimeError, match=r"MovesGlobalModel.poison_updates wrote in place into "
                                           r"ctx.global_params, which it does not own"):
        _fit(tmp_path, attacks=[MovesGlobalModel(value=float("nan"), clients=[1])])


@pytest.mark.parametrize("copy", [True, False])
def test_an_attack_writing_an_honest_row_in_place_fails_naming_it(tmp_path, copy: bool) -> None:
    with pytest.raises(RuntimeError, match=r"WritesHonestRow.poison_updates wrote in place into updates rows \[0\]"):
        _fit(tmp_path, attacks=[WritesHonestRow(copy=copy, clients=[2])])


def test_an_attack_writing_its_own_rows_in_place_is_fine(tmp_path) -> None:
    trainer, _ = _fit(tmp_path, attacks=[ScalesOwnRows(clients=[2])])
    assert len(trainer.history) == 2


@pytest.mark.parametrize("target,what", [("updates", "updates rows"), ("num_samples", "ctx.num_samples"),
                                         ("global", "ctx.global_params")])
def test_an_aggregator_writing_its_inputs_in_place_fails_naming_it(tmp_path, target: str, what: str) -> None:
    with pytest.raises(RuntimeError, match=rf"NormalisingAggregator.aggregate wrote in place into {what}"):
        _fit(tmp_path, aggregator=NormalisingAggregator(target))


def test_the_global_model_is_untouched_when_an_attack_is_refused(tmp_path) -> None:
    log = GlobalLog()
    trainer = make_trainer(tmp_path, rounds=2, max_batches_per_epoch=1, callbacks=[log],
                           attacks=[MovesGlobalModel(value=float("nan"), clients=[1], rounds=[1])])
    with pytest.raises(RuntimeError, match="MovesGlobalModel"):
        trainer.fit(TinyNet(), make_dm(num_clients=4))
    assert len(log.params) == 1, "round 0 ran, round 1 was refused"
    assert torch.equal(trainer.global_params, log.params[0]), "the refused write never reached the global model"


def test_diagnostics_default_is_not_shared_between_results() -> None:
    first, second = AggregationResult(torch.zeros(2)), AggregationResult(torch.ones(2))
    first.diagnostics["x"] = 1
    assert second.diagnostics == {} and AggregationResult(torch.zeros(1)).diagnostics == {}
