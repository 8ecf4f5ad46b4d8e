"""The attacker set: declared once, drawn from the seed, recorded, restored; shared via ``of=``."""
import pytest
import torch

from fl_lightning.attacks import Attack, GaussianNoise, LabelFlip, ModelReplacement, SignFlip
from fl_lightning.context import LocalConfig


def test_same_seed_same_attackers_and_seeds_matter(make_setup):
    first = GaussianNoise(clients=3)
    first.setup(make_setup(num_clients=20, seed=7))
    again = GaussianNoise(clients=3)
    again.setup(make_setup(num_clients=20, seed=7))
    assert first.attacker_ids == again.attacker_ids
    assert len(first.attacker_ids) == 3 and list(first.attacker_ids) == sorted(first.attacker_ids)
    draws = set()
    for seed in range(6):
        attack = GaussianNoise(clients=3)
        attack.setup(make_setup(num_clients=20, seed=seed))
        draws.add(attack.attacker_ids)
    assert len(draws) > 1


@pytest.mark.parametrize("spec, expected", [([4, 1, 1], (1, 4)), (0.3, None), (0, ())])
def test_client_specs(make_setup, spec, expected):
    attack = SignFlip(clients=spec)
    attack.setup(make_setup(num_clients=10))
    if expected is None:
        assert len(attack.attacker_ids) == 3
    else:
        assert attack.attacker_ids == expected


def test_predicate_over_labels(make_setup):
    attack = SignFlip(clients=lambda labels: bool((labels == 0).any()))
    attack.setup(make_setup(num_clients=10))
    assert attack.attacker_ids == (0, 9)           # clients 0 (classes 0,1) and 9 (classes 9,0)


@pytest.mark.parametrize("spec, message", [
    (11, "asked for 11 attackers but only 10 of the 10 clients are eligible"),
    ([3, 10], r"client ids \[10\] do not exist"),
    (1.5, r"fraction of clients must be in \[0, 1\]"),
    (-1, "clients must be an int >= 0"),
])
def test_bad_client_specs(make_setup, spec, message):
    with pytest.raises(ValueError, match=message):
        SignFlip(clients=spec).setup(make_setup(num_clients=10))


def test_bad_rounds_and_training_overrides(make_setup):
    with pytest.raises(ValueError, match=r"rounds \[5\] are outside the run's rounds 0..4"):
        SignFlip(rounds=[1, 5]).setup(make_setup(rounds=5))
    with pytest.raises(TypeError, match="rounds must be a list or range"):
        SignFlip(rounds=3)
    with pytest.raises(ValueError, match="extra_epochs must be an int >= 0"):
        SignFlip(extra_epochs=-1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        SignFlip(lr=0.0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        SignFlip(batch_size=0)


def test_schedule_and_local_config():
    attack = SignFlip(rounds=range(2, 4), extra_epochs=3, lr=0.5, batch_size=16)
    assert [r for r in range(6) if attack.is_active(r)] == [2, 3]
    cfg = attack.local_config(0, 2, LocalConfig(epochs=5, lr=0.01, batch_size=64))
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (8, 0.5, 16)


def test_hparams_repr_and_state(make_setup):
    attack = LabelFlip(source=1, target=7, clients=[2, 1], rounds=[0, 3])
    attack.setup(make_setup())
    hp = attack.hparams()
    assert hp["clients"] == "[2, 1]" and hp["attacker_ids"] == "1,2" and hp["rounds"] == "[0, 3]"
    assert hp["source"] == 1 and hp["lr"] == 0.25
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in hp.values())
    assert "attacker_ids=(1, 2)" in repr(attack) and "clients=[2, 1]" in repr(attack)
    restored = LabelFlip(source=1, target=7, clients=[2, 1])
    restored.load_state_dict(attack.state_dict())
    assert restored.attacker_ids == (1, 2)


def test_of_shares_the_attacker_set(make_setup):
    ctx = make_setup(num_clients=20, seed=3)
    first = GaussianNoise(clients=4)
    follower = ModelReplacement(of=first, rounds=[1])
    first.setup(ctx)
    follower.setup(ctx)
    assert follower.attacker_ids == first.attacker_ids
    assert follower.hparams()["of"] == "GaussianNoise"


def test_of_errors(make_setup):
    first = GaussianNoise(clients=2)
    with pytest.raises(ValueError, match="not set up yet; list it before ModelReplacement"):
        ModelReplacement(of=first, rounds=[1]).setup(make_setup())
    first.setup(make_setup())
    with pytest.raises(ValueError, match="give clients= or of=, not both"):
        ModelReplacement(of=first, clients=1, rounds=[1]).setup(make_setup())
    with pytest.raises(ValueError, match="setup_attacks"):
        ModelReplacement(of="GaussianNoise", rounds=[1]).setup(make_setup())


def test_base_hooks_are_identity(make_round):
    attack = Attack(clients=[1])
    updates = torch.randn(3, 8)
    assert attack.poison_updates(updates, make_round([0, 1, 2])) is updates
    assert attack.attacker_rows(make_round([0, 1, 2])) == [] and not attack.poisons_batches
