"""LabelFlip: which labels change, for whom, when; and its setup errors."""
import pytest
import torch

from fl_lightning.attacks import LabelFlip, batch_poisoner, poison_client_data
from fl_lightning.data.base import TensorData


def _data(labels):
    labels = torch.tensor(labels)
    return TensorData(torch.randn(len(labels), 2), labels)


def test_only_attackers_and_only_the_source_class_change(make_setup):
    ctx = make_setup(num_clients=10)
    attack = LabelFlip(source=1, target=7, clients=2)
    attack.setup(ctx)
    assert len(attack.attacker_ids) == 2
    assert all(bool((ctx.client_targets[c] == 1).any()) for c in attack.attacker_ids)  # holders of 1
    for cid in range(10):
        data = _data([0, 1, 2, 1, 7])
        poisoned = poison_client_data([attack], cid, data)
        if cid in attack.attacker_ids:
            assert poisoned.targets.tolist() == [0, 7, 2, 7, 7]
            assert poisoned.inputs is data.inputs
            assert data.targets.tolist() == [0, 1, 2, 1, 7]          # not in place
        else:
            assert poisoned is data


@pytest.mark.parametrize("num_classes, labels, expected", [
    (2, [0, 1, 1], [1, 0, 0]),
    (4, [0, 1, 2, 3], [3, 2, 1, 0]),
    (5, [0, 1, 2, 3, 4], [4, 3, 3, 1, 0]),          # the middle class 2 goes to 3, never to itself
])
def test_flip_all(make_setup, num_classes, labels, expected):
    attack = LabelFlip(source=None, clients=1)
    attack.setup(make_setup(num_classes=num_classes))
    flipped = attack.flip(torch.tensor(labels))
    assert flipped.tolist() == expected
    assert bool((flipped != torch.tensor(labels)).all())


def test_flip_all_float_binary_labels(make_setup):
    attack = LabelFlip(clients=1)
    attack.setup(make_setup(num_classes=2))
    assert attack.flip(torch.tensor([0.0, 1.0])).tolist() == [1.0, 0.0]


def test_source_without_target_spreads_over_other_classes(make_setup):
    attack = LabelFlip(source=1, target=None, clients=1)
    attack.setup(make_setup(num_classes=3))
    assert attack.flip(torch.tensor([1, 0, 1, 2, 1, 1])).tolist() == [0, 0, 2, 2, 0, 2]


def test_scheduled_flip_acts_on_batches_only_in_its_rounds(make_setup):
    attack = LabelFlip(source=1, target=7, clients=[3], rounds=[2])
    attack.setup(make_setup())
    data = _data([1, 1, 0])
    assert poison_client_data([attack], 3, data).targets.tolist() == [1, 1, 0]
    assert batch_poisoner([attack], 3, 1) is None
    assert batch_poisoner([LabelFlip(source=1, target=7, clients=[3])], 3, 0) is None
    poison = batch_poisoner([attack], 3, 2)
    _, targets = poison(data.inputs, data.targets, torch.Generator())
    assert targets.tolist() == [7, 7, 0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(source=10, target=7), r"source class 10 does not exist; the dataset has classes 0..9"),
    (dict(source=1, target=-1), r"LabelFlip: target must be an int >= 0, got -1"),  # now when built
    (dict(source=3, target=3), r"source and target are the same class \(3\)"),
    (dict(source=None, target=3), "give a source class when a target is given"),
    (dict(source=1, target=7, clients=3), "asked for 3 attackers but only 2 of the 10 clients are eligible"),
])
def test_setup_errors(make_setup, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LabelFlip(**kwargs).setup(make_setup(num_clients=10))


def test_single_class_dataset_rejected(make_setup):
    with pytest.raises(ValueError, match="at least 2 classes"):
        LabelFlip(clients=1).setup(make_setup(num_classes=1))
