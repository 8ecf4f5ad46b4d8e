"""Attacks declare their run-time state (AttackState) and round-trip it through state_dict; compose trusts ctx.finite."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from fl_lightning.attacks import (ALIE, AttackState, GaussianNoise, Mimic, ModelReplacement, SignFlip,
                                  poison_round_updates, setup_attacks)
from fl_lightning.attacks.plan import AttackPlan
from fl_lightning.context import BatchPoisoner
from fl_lightning.data.base import TensorData


def test_setup_attacks_fills_the_declared_state_and_writes_nothing_else(make_setup):
    first, follower = GaussianNoise(clients=2), ModelReplacement(of="GaussianNoise", rounds=[1])
    second = GaussianNoise(clients=1)
    before = [set(vars(a)) for a in (first, follower, second)]
    setup_attacks([first, follower, second], make_setup(num_clients=10))
    assert [set(vars(a)) for a in (first, follower, second)] == before      # no attribute added from outside
    assert isinstance(first.state, AttackState) and first.state.ready
    assert (first.state.key, second.state.key, follower.state.key) == ("GaussianNoise", "GaussianNoise#1",
                                                                       "ModelReplacement")
    assert follower.state.followed is first and follower.attacker_ids == first.attacker_ids
    assert "state" not in first.hparams() and "state=" not in repr(first)


def test_a_fresh_attack_has_an_empty_state():
    attack = SignFlip(clients=[3])
    assert attack.state == AttackState() and attack.attacker_ids == () and not attack.is_setup


def test_mimic_keeps_its_victim_across_rounds_and_through_state_dict(make_setup, make_round):
    attack = Mimic(clients=[0])
    attack.setup(make_setup())
    updates = torch.zeros(5, 8)
    updates[:, 0] = torch.tensor([9.0, 0.1, -0.2, 4.0, 0.3])         # client 3 is furthest out
    out = attack.poison_updates(updates, make_round(range(5)))
    assert attack.chosen_victim == 3 and torch.equal(out[0], updates[3])
    shuffled = updates[[0, 2, 1, 3, 4]].clone()
    shuffled[1, 0] = 100.0                                          # another client now furthest out
    again = attack.poison_updates(shuffled, make_round([0, 2, 1, 3, 4], round_idx=1))
    assert torch.equal(again[0], shuffled[3])                        # still client 3
    restored = Mimic(clients=[0])
    restored.load_state_dict(attack.state_dict())
    assert restored.chosen_victim == 3 and restored.attacker_ids == (0,)


def test_fixed_mimic_victim_and_missing_victim(make_setup, make_round):
    attack = Mimic(victim=2, clients=[0])
    attack.setup(make_setup())
    updates = torch.randn(4, 8)
    assert torch.equal(attack.poison_updates(updates, make_round([0, 1, 2, 3]))[0], updates[2])
    assert torch.equal(attack.poison_updates(updates, make_round([0, 1, 3, 4])), updates)   # victim absent


def test_omniscient_attacks_ignore_non_finite_rows(make_setup, make_round):
    attack = ALIE(z=1.0, clients=[0])
    attack.setup(make_setup())
    updates = torch.tensor([[0.0, 0.0], [1.0, 2.0], [float("nan"), 1.0], [3.0, 4.0]])
    out = attack.poison_updates(updates, make_round([0, 1, 2, 3]))
    finite = updates[[1, 3]]
    assert torch.allclose(out[0], finite.mean(0) - finite.std(0))
    known = dataclasses.replace(make_round([0, 1, 2, 3]), finite=torch.tensor([True, True, False, True]))
    assert torch.allclose(attack.poison_updates(updates, known)[0], out[0])


def test_compose_trusts_the_round_scan_and_updates_it_for_the_next_attack(make_setup, make_round, monkeypatch):
    from fl_lightning.attacks import Inf

    inf, alie = Inf(clients=[0]), ALIE(z=0.0, clients=[1])
    setup_attacks([inf, alie], make_setup())
    updates = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 5.0], [5.0, 7.0]])
    ctx = dataclasses.replace(make_round([0, 1, 2, 3]), finite=torch.ones(4, dtype=torch.bool))
    scanned = []
    original_isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: scanned.append(tuple(t.shape)) or original_isfinite(t))
    out = poison_round_updates([inf, alie], updates, ctx)
    assert torch.isinf(out[0]).all()
    assert torch.equal(out[1], torch.tensor([4.0, 6.0]))     # ALIE saw only the finite rows 2, 3
    assert scanned == [(1, 2), (1, 2)]                        # only each attack's own rewritten row is scanned
    scanned.clear()
    poison_round_updates([inf, alie], updates, make_round([0, 1, 2, 3]))   # no scan given: ALIE scans the others
    assert (3, 2) in scanned


def test_compose_still_catches_a_foreign_row_written_with_a_known_finite_mask(make_setup, make_round):
    class Rogue(SignFlip):
        def poison_updates(self, updates, ctx):
            out = updates.clone()
            out[0] = 0.0
            return out

    rogue = Rogue(clients=[1])
    setup_attacks([rogue], make_setup())
    ctx = dataclasses.replace(make_round([0, 1]), finite=torch.ones(2, dtype=torch.bool))
    with pytest.raises(RuntimeError, match=r"changed row 0, which is not one of its attackers' rows \[1\]"):
        poison_round_updates([rogue], torch.ones(2, 3), ctx)


def test_plan_relabels_through_with_targets_and_uses_the_shared_batch_poisoner(make_setup):
    from fl_lightning.attacks import LabelFlip, PixelBackdoor

    flip, backdoor = LabelFlip(source=0, target=1, clients=[0]), PixelBackdoor(target=2, clients=[1])
    setup_attacks([flip, backdoor], make_setup())
    clients = [TensorData(torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1, 2])) for _ in range(3)]
    plan = AttackPlan([flip, backdoor], clients)
    assert plan.client_data(0).targets.tolist() == [1, 1, 1, 2]
    assert plan.client_data(0).inputs is clients[0].inputs               # labels only: inputs shared
    assert plan.client_data(1) is clients[1] and plan.client_data(2) is clients[2]
    poison: BatchPoisoner | None = plan.batch_poisoner(1, 0)
    assert poison is not None and plan.batch_poisoner(2, 0) is None
    inputs, targets = poison(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), torch.Generator())
    assert int((targets == 2).sum()) == 4                                 # 20 per batch, capped at 4
