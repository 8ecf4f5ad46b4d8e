"""Client sampling: seeded draws, and attackers that must join their active rounds."""
from __future__ import annotations

import pytest

from fl_lightning.attacks import ModelReplacement
from tests.helpers import TinyNet, make_dm, make_trainer


def _rounds_clients(tmp_path, attacks, clients_per_round=3, rounds=6):
    trainer = make_trainer(tmp_path, rounds=rounds, clients_per_round=clients_per_round, attacks=attacks)
    trainer.fit(TinyNet(), make_dm(num_clients=12))
    return [record.client_ids for record in trainer.history]


def test_sampling_draws_the_requested_number_and_depends_only_on_the_seed(tmp_path):
    first = _rounds_clients(tmp_path / "a", [])
    second = _rounds_clients(tmp_path / "b", [])
    assert first == second
    assert all(len(ids) == 3 and len(set(ids)) == 3 for ids in first)
    assert len({tuple(ids) for ids in first}) > 1, "every round drew the same clients"


def test_model_replacement_client_joins_its_round_and_only_that_round_is_changed(tmp_path):
    plain = _rounds_clients(tmp_path / "plain", [])
    attacker = next(cid for cid in range(12) if cid not in plain[4])
    joined = _rounds_clients(tmp_path / "joined", [ModelReplacement(scale=10.0, rounds=[4], clients=[attacker])])
    assert attacker in joined[4] and len(joined[4]) == 3
    assert [ids for r, ids in enumerate(joined) if r != 4] == [ids for r, ids in enumerate(plain) if r != 4]


def test_more_joining_attackers_than_places_is_refused_before_training(tmp_path):
    attack = ModelReplacement(scale=10.0, rounds=[1], clients=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="4 attacking clients must join some round, more than clients_per_round=3"):
        _rounds_clients(tmp_path, [attack])
