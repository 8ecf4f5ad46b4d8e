"""ModelReplacement, GaussianNoise and MixRate on the update rows: effect, schedule, determinism, errors."""
import sys
import types

import pytest
import torch

from fl_lightning.attacks import (GaussianNoise, MixRate, ModelReplacement, PixelBackdoor, poison_round_updates,
                                  setup_attacks)

WIDE = 20_000


def _updates(k, width=8, seed=0):
    return torch.randn(k, width, generator=torch.Generator().manual_seed(seed))


def test_model_replacement_scales_only_its_rows_only_in_its_rounds(make_setup, make_round):
    attack = ModelReplacement(scale=100, rounds=[6], clients=[3])
    attack.setup(make_setup())
    updates = _updates(4)
    out = poison_round_updates([attack], updates, make_round([0, 3, 5, 7], round_idx=6))
    assert torch.equal(out[1], updates[1] * 100)
    assert torch.equal(out[[0, 2, 3]], updates[[0, 2, 3]])
    assert poison_round_updates([attack], updates, make_round([0, 3, 5, 7], round_idx=5)) is updates
    assert torch.equal(updates, _updates(4))                      # input untouched


def test_model_replacement_composes_with_a_backdoor(make_setup, make_round):
    backdoor = PixelBackdoor(target=2, clients=1, rounds=[6])
    by_object = ModelReplacement(scale=10, rounds=[6], of=backdoor)
    by_name = ModelReplacement(scale=10, rounds=[6], of="PixelBackdoor")
    setup_attacks([backdoor, by_object, by_name], make_setup(num_clients=10, seed=4))
    assert by_object.attacker_ids == by_name.attacker_ids == backdoor.attacker_ids
    (attacker,) = backdoor.attacker_ids
    ids = [attacker] + [c for c in range(10) if c != attacker][:3]
    updates = _updates(4)
    out = poison_round_updates([backdoor, by_object, by_name], updates, make_round(ids, round_idx=6))
    assert torch.allclose(out[0], updates[0] * 100)               # both replacements, in order
    assert torch.equal(out[1:], updates[1:])


def test_model_replacement_errors(make_setup):
    with pytest.raises(ValueError, match="scale must be a finite number > 0, got 0"):
        ModelReplacement(scale=0).setup(make_setup())
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        ModelReplacement(scale=float("inf")).setup(make_setup())
    with pytest.raises(ValueError, match=r"rounds \[6\] are outside the run's rounds 0..4"):
        ModelReplacement().setup(make_setup(rounds=5))


def test_gaussian_noise_statistics(make_setup, make_round):
    sigma = 2.0
    attack = GaussianNoise(sigma=sigma, clients=[1])
    attack.setup(make_setup())
    global_params = torch.full((WIDE,), 0.5)
    updates = torch.full((3, WIDE), 1.5)                           # every model is 2.0 everywhere
    out = attack.poison_updates(updates, make_round([0, 1, 2], width=WIDE, global_params=global_params))
    factor = (global_params + out[1]) / 2.0                        # noisy model / model = 1 + sigma z
    assert abs(factor.mean().item() - 1.0) < 4 * sigma / WIDE ** 0.5
    assert abs(factor.std().item() - sigma) < 0.05 * sigma
    assert torch.equal(out[[0, 2]], updates[[0, 2]])


def test_gaussian_noise_is_reproducible_and_per_client(make_setup, make_round):
    attack = GaussianNoise(sigma=1.0, clients=[1, 2])
    attack.setup(make_setup())
    updates = _updates(3)
    a = attack.poison_updates(updates, make_round([0, 1, 2], round_idx=3, seed=5))
    b = attack.poison_updates(updates, make_round([0, 1, 2], round_idx=3, seed=5))
    assert torch.equal(a, b)
    assert not torch.equal(a[1] - updates[1], a[2] - updates[2])  # clients get their own noise
    other_round = attack.poison_updates(updates, make_round([0, 1, 2], round_idx=4, seed=5))
    assert not torch.equal(a[1], other_round[1])
    # a client's noise does not depend on who else was sampled or its row
    moved = attack.poison_updates(updates[[1, 0]], make_round([1, 7], round_idx=3, seed=5))
    assert torch.equal(moved[0], a[1])
    zero = GaussianNoise(sigma=0.0, clients=[1])
    zero.setup(make_setup())
    assert torch.equal(zero.poison_updates(updates, make_round([0, 1, 2])), updates)


def test_gaussian_noise_errors(make_setup):
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0, got -0.5"):
        GaussianNoise(sigma=-0.5).setup(make_setup())


def test_mix_rate_fraction_and_honest_values(make_setup, make_round):
    rate = 0.3
    attack = MixRate(rate=rate, clients=[0], blend_with="mean")
    attack.setup(make_setup())
    updates = torch.cat([torch.full((1, WIDE), 10.0), _updates(4, WIDE)])
    out = attack.poison_updates(updates, make_round([0, 1, 2, 3, 4], width=WIDE))
    kept = out[0] == 10.0
    assert abs(kept.float().mean().item() - rate) < 4 * (rate * (1 - rate) / WIDE) ** 0.5
    assert torch.equal(out[0][~kept], updates[1:].mean(dim=0)[~kept])
    assert torch.equal(out[1:], updates[1:])


@pytest.mark.parametrize("rate, expected_row", [(1.0, "attacker"), (0.0, "honest")])
def test_mix_rate_extremes(make_setup, make_round, rate, expected_row):
    attack = MixRate(rate=rate, clients=[0], blend_with="mean")
    attack.setup(make_setup())
    updates = _updates(4)
    out = attack.poison_updates(updates, make_round([0, 1, 2, 3]))
    expected = updates[0] if expected_row == "attacker" else updates[1:].mean(dim=0)
    assert torch.equal(out[0], expected)


def test_mix_rate_blends_into_the_residual_reweighting_aggregate(make_setup, make_round, monkeypatch):
    seen = {}

    def fake_residual_reweight(updates):
        seen["rows"] = updates.clone()
        return torch.full((updates.shape[1],), -7.0), torch.full((updates.shape[0],), 1 / updates.shape[0])

    fake = types.ModuleType("fl_lightning.aggregators.functional")
    fake.residual_reweight = fake_residual_reweight
    monkeypatch.setitem(sys.modules, "fl_lightning.aggregators.functional", fake)
    attack = MixRate(rate=0.0, clients=[2])
    attack.setup(make_setup())
    updates = _updates(4)
    out = attack.poison_updates(updates, make_round([0, 1, 2, 3]))
    assert torch.equal(seen["rows"], updates[[0, 1, 3]])
    assert torch.equal(out[2], torch.full((8,), -7.0))
    # fewer than 3 honest rows: the mean
    out = attack.poison_updates(updates[:3], make_round([0, 1, 2]))
    assert torch.equal(out[2], updates[:2].mean(dim=0))


def test_mix_rate_with_the_real_residual_reweight(make_setup, make_round):
    functional = pytest.importorskip("fl_lightning.aggregators.functional")
    if not hasattr(functional, "residual_reweight"):
        pytest.skip("residual_reweight not written yet")
    attack = MixRate(rate=0.0, clients=[0])
    attack.setup(make_setup())
    updates = _updates(5)
    out = attack.poison_updates(updates, make_round([0, 1, 2, 3, 4]))
    aggregate, _ = functional.residual_reweight(updates[1:])
    assert torch.allclose(out[0], aggregate)


def test_mix_rate_is_reproducible(make_setup, make_round):
    attack = MixRate(rate=0.5, clients=[0], blend_with="mean")
    attack.setup(make_setup())
    updates = _updates(4, 64)
    first = attack.poison_updates(updates, make_round([0, 1, 2, 3], width=64, seed=1))
    assert torch.equal(first, attack.poison_updates(updates, make_round([0, 1, 2, 3], width=64, seed=1)))
    assert not torch.equal(first, attack.poison_updates(updates, make_round([0, 1, 2, 3], width=64, seed=2)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(rate=1.5), "rate must be a finite number >= 0 and <= 1, got 1.5"),
    (dict(rate=-0.1), "rate must be a finite number >= 0 and <= 1"),
    (dict(rate=0.1, blend_with="median"), "unknown blend_with 'median'"),
])
def test_mix_rate_errors(make_setup, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixRate(**kwargs).setup(make_setup())


def test_mix_rate_alone_in_the_round_is_unchanged(make_setup, make_round):
    attack = MixRate(rate=0.0, clients=[0], blend_with="mean")
    attack.setup(make_setup())
    updates = _updates(1)
    assert torch.equal(attack.poison_updates(updates, make_round([0])), updates)
