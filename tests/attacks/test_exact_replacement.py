"""Model replacement's exact boost: 1 / the attacker's weight under the rule's own weighting."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from fl_lightning.aggregators import CoordinateMedian, FedAvg
from fl_lightning.attacks import ModelReplacement
from tests.attacks.conftest import round_context, setup_context

SAMPLES = torch.tensor([12.0, 30.0, 18.0, 40.0])


def _attack(scale, clients=(0,)) -> ModelReplacement:
    attack = ModelReplacement(scale=scale, rounds=None, clients=list(clients))
    attack.setup(setup_context(num_clients=4))
    return attack


def _ctx(aggregator):
    ctx = round_context([0, 1, 2, 3], width=6)
    return dataclasses.replace(ctx, num_samples=SAMPLES, weighting=aggregator.nominal_weights)


@pytest.mark.parametrize("weighted,expected", [(True, 100.0 / 12.0), (False, 4.0)])
def test_exact_boost_is_one_over_the_attackers_fedavg_weight(weighted: bool, expected: float) -> None:
    aggregator = FedAvg(weighted=weighted)
    ctx = _ctx(aggregator)
    attack = _attack("exact")
    assert attack.boost(ctx, [0]) == pytest.approx(expected, rel=1e-6)
    # the point of the boost: when the honest updates cancel, FedAvg's result is the attacker's own update
    honest = torch.randn(3, 6)
    updates = torch.cat([torch.randn(1, 6), honest - honest.mean(0) if not weighted else
                         honest - (SAMPLES[1:, None] * honest).sum(0) / SAMPLES[1:].sum()])
    poisoned = attack.poison_updates(updates, ctx)
    assert torch.allclose(aggregator.aggregate(poisoned, ctx).update, updates[0], atol=1e-5)


def test_exact_boost_under_a_robust_rule_is_the_plain_mean_and_numbers_stay_as_given() -> None:
    ctx = _ctx(CoordinateMedian())
    assert _attack("exact").boost(ctx, [0]) == pytest.approx(4.0)
    assert _attack(100).boost(ctx, [0]) == 100.0
    assert _attack("exact", clients=(0, 1)).boost(ctx, [0, 1]) == pytest.approx(2.0)


def test_an_unknown_scale_word_is_refused() -> None:
    with pytest.raises(ValueError, match=r"scale must be a positive number or \"exact\", got 'exactly'"):
        ModelReplacement(scale="exactly")
