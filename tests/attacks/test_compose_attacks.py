"""The helpers the trainer calls: several attacks in one run, applied in list order."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_lightning.attacks import (ALIE, ATTACKS, IPM, Attack, GaussianNoise, LabelFlip, MixRate, ModelReplacement,
                                  PixelBackdoor, SignFlip, all_attacker_ids, attack_metrics, batch_poisoner,
                                  client_config, poison_client_data, poison_round_updates, setup_attacks,
                                  update_attack_metrics)
from fl_lightning.context import LocalConfig
from fl_lightning.data.base import TensorData


def test_registry_names_every_attack():
    assert set(ATTACKS) == {"LabelFlip", "PixelBackdoor", "FeatureBackdoor", "ModelReplacement",
                            "GaussianNoise", "MixRate", "SignFlip", "ALIE", "IPM", "Mimic", "Inf", "MinMax",
                            "MinSum", "FangKrum", "FangTrimmedMean", "OptimalALIE", "OptimalIPM"}
    assert all(issubclass(cls, Attack) for cls in ATTACKS.values())


def test_label_flip_plus_noise_on_different_clients(make_setup, make_round):
    flip = LabelFlip(source=1, target=7, clients=[1])
    noise = GaussianNoise(sigma=1.0, clients=[4])
    attacks = [flip, noise]
    setup_attacks(attacks, make_setup())
    assert all_attacker_ids(attacks) == (1, 4)
    data = TensorData(torch.zeros(3, 2), torch.tensor([1, 0, 1]))
    assert poison_client_data(attacks, 1, data).targets.tolist() == [7, 0, 7]
    assert poison_client_data(attacks, 4, data).targets.tolist() == [1, 0, 1]
    cfg = LocalConfig(epochs=5, lr=0.01)
    assert client_config(attacks, 1, 0, cfg).epochs == 10 and client_config(attacks, 4, 0, cfg).epochs == 5
    updates = torch.randn(3, 8)
    out = poison_round_updates(attacks, updates, make_round([1, 4, 6]))
    assert torch.equal(out[[0, 2]], updates[[0, 2]]) and not torch.equal(out[1], updates[1])


def test_client_config_copies_sums_epochs_and_last_lr_wins(make_setup):
    first = PixelBackdoor(target=2, clients=[3], extra_epochs=5, lr=0.1)
    second = ModelReplacement(of=first, rounds=[2], extra_epochs=1, lr=0.3, batch_size=8)
    setup_attacks([first, second], make_setup())
    cfg = LocalConfig(epochs=5, lr=0.01, batch_size=64)
    in_round_2 = client_config([first, second], 3, 2, cfg)
    assert (in_round_2.epochs, in_round_2.lr, in_round_2.batch_size) == (11, 0.3, 8)
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (5, 0.01, 64)           # caller's config untouched
    in_round_1 = client_config([first, second], 3, 1, cfg)
    assert (in_round_1.epochs, in_round_1.lr, in_round_1.batch_size) == (10, 0.1, 64)
    assert client_config([first, second], 4, 2, cfg) == cfg


def test_batch_poisoner_chains_in_list_order(make_setup):
    flip = LabelFlip(source=2, target=5, clients=[0], rounds=[0])      # scheduled: acts on batches
    backdoor = PixelBackdoor(target=2, clients=[0], poison_per_batch=2, value=1.0)
    setup_attacks([backdoor, flip], make_setup())
    assert batch_poisoner([backdoor, flip], 1, 0) is None
    poison = batch_poisoner([backdoor, flip], 0, 0)
    inputs, targets = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    _, out = poison(inputs, targets, torch.Generator().manual_seed(0))
    assert sorted(out.tolist()) == [0, 0, 5, 5]                           # backdoor to 2, then 2 -> 5
    _, only_backdoor = batch_poisoner([backdoor, flip], 0, 1)(inputs, targets, torch.Generator())
    assert sorted(only_backdoor.tolist()) == [0, 0, 2, 2]


def test_duplicate_types_get_distinct_keys_and_draws(make_setup):
    draws = set()
    for seed in range(4):
        a, b = SignFlip(clients=3), SignFlip(clients=3)
        setup_attacks([a, b], make_setup(num_clients=30, seed=seed))
        assert (a.state_key, b.state_key) == ("SignFlip", "SignFlip#1")
        draws.add(a.attacker_ids == b.attacker_ids)
    assert False in draws


@pytest.mark.parametrize("build, message", [
    (lambda: (lambda x: [x, x])(SignFlip()), "listed twice"),
    (lambda: (lambda x: [ModelReplacement(of=x, rounds=[1]), x])(SignFlip()), "is after it; list it before"),
    (lambda: [ModelReplacement(of=SignFlip(), rounds=[1])], "is not in attacks"),
    (lambda: [SignFlip(), ModelReplacement(of="IPM", rounds=[1])], "matches no attack listed before it"),
    (lambda: [SignFlip(), SignFlip(), ModelReplacement(of="SignFlip", rounds=[1])], "matches several"),
])
def test_setup_attacks_errors(make_setup, build, message):
    with pytest.raises(ValueError, match=message):
        setup_attacks(build(), make_setup())


def test_of_by_numbered_key(make_setup):
    a, b = SignFlip(clients=[1]), SignFlip(clients=[2])
    follower = ModelReplacement(of="SignFlip#1", rounds=[1])
    setup_attacks([a, b, follower], make_setup())
    assert follower.attacker_ids == (2,)


def test_rogue_attacks_are_caught(make_setup, make_round):
    class WritesHonestRows(Attack):
        def poison_updates(self, updates, ctx):
            return updates * 2

    class ChangesShape(Attack):
        def poison_updates(self, updates, ctx):
            return updates[:, :2].clone()

    for cls, message in ((WritesHonestRows, "changed row 0"), (ChangesShape, "returned shape")):
        attack = cls(clients=[1])
        setup_attacks([attack], make_setup())
        with pytest.raises(RuntimeError, match=message):
            poison_round_updates([attack], torch.randn(2, 8), make_round([0, 1]))


def test_nan_in_an_honest_row_is_not_a_false_alarm(make_setup, make_round):
    attack = SignFlip(clients=[1])
    setup_attacks([attack], make_setup())
    updates = torch.randn(3, 8)
    updates[0, 3] = float("nan")
    out = poison_round_updates([attack], updates, make_round([0, 1, 2]))
    assert torch.equal(out[1], -updates[1])


def test_attack_metrics_keys_are_unique(make_setup):
    a, b = LabelFlip(source=1, target=7, clients=[0]), LabelFlip(source=2, target=3, clients=[1])
    backdoor = PixelBackdoor(target=2, clients=[4], value=9.0)
    setup_attacks([a, b, backdoor], make_setup())
    pairs = attack_metrics([a, b, backdoor, SignFlip()])
    assert [list(m) for _, m in pairs] == [["attack/asr"], ["attack/asr/LabelFlip#1"], ["attack/backdoor_asr"], []]
    inputs, targets = torch.zeros(4, 1, 8, 8), torch.tensor([1, 2, 1, 0])

    def predict(x):
        return torch.where(x[:, 0, 0, 0] == 9.0, 2, 7)

    update_attack_metrics(pairs, predict, inputs, targets, predict(inputs))
    values = {k: m.compute().item() for _, ms in pairs for k, m in ms.items()}
    assert values == {"attack/asr": 1.0, "attack/asr/LabelFlip#1": 0.0, "attack/backdoor_asr": 1.0}


MODEL_ATTACKS = [
    lambda ids: GaussianNoise(sigma=1.0, clients=ids),
    lambda ids: MixRate(rate=0.5, clients=ids, blend_with="mean"),
    lambda ids: SignFlip(clients=ids),
    lambda ids: ALIE(clients=ids),
    lambda ids: IPM(clients=ids),
    lambda ids: ModelReplacement(clients=ids, rounds=[0]),
]


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 7), attackers=st.sets(st.integers(0, 9), max_size=5),
       which=st.lists(st.integers(0, len(MODEL_ATTACKS) - 1), min_size=1, max_size=3),
       seed=st.integers(0, 1000))
def test_honest_rows_never_change_and_results_repeat(k, attackers, which, seed):
    from fl_lightning.context import SetupContext, RoundContext
    from fl_lightning.param_layout import ParamLayout

    setup = SetupContext(num_clients=10, num_rounds=3, seed=seed, client_targets=[torch.tensor([0])] * 10,
                         num_classes=2, input_shape=(4,))
    attacks = [MODEL_ATTACKS[i](sorted(attackers)) for i in which]
    setup_attacks(attacks, setup)
    ids = torch.randperm(10, generator=torch.Generator().manual_seed(seed))[:k].tolist()
    ctx = RoundContext(round=0, client_ids=ids, num_samples=torch.ones(k),
                       layout=ParamLayout.from_module(torch.nn.Linear(3, 2)),
                       global_params=torch.randn(8), seed=seed)
    updates = torch.randn(k, 8, generator=torch.Generator().manual_seed(seed))
    before = updates.clone()
    out = poison_round_updates(attacks, updates, ctx)
    assert torch.equal(updates, before)
    honest = [row for row, cid in enumerate(ids) if cid not in attackers]
    assert torch.equal(out[honest], updates[honest])
    assert torch.equal(out, poison_round_updates(attacks, updates, ctx))
