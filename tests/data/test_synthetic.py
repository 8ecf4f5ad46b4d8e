"""SyntheticDataset: shapes, token ids, keys, determinism, learnable classes and bad input."""
from __future__ import annotations

import pytest
import torch

from fl_lightning.data import FederatedDataModule
from fl_lightning.data.synthetic import SyntheticDataset


def test_float_images_have_the_shape_balanced_labels_and_repeat_with_the_seed() -> None:
    train, test = SyntheticDataset([3, 8, 8], num_classes=10, n=200).load()
    assert train.inputs.shape == (200, 3, 8, 8) and test.inputs.shape == (50, 3, 8, 8)
    assert train.inputs.dtype == torch.float32 and train.targets.dtype == torch.long
    counts = torch.bincount(torch.cat([train.targets, test.targets]), minlength=10)
    assert counts.tolist() == [25] * 10
    again, _ = SyntheticDataset([3, 8, 8], num_classes=10, n=200).load()
    assert torch.equal(again.inputs, train.inputs) and torch.equal(again.targets, train.targets)
    other, _ = SyntheticDataset([3, 8, 8], num_classes=10, n=200, seed=1).load()
    assert not torch.equal(other.inputs, train.inputs)


def test_classes_are_separable_by_their_prototype() -> None:
    train, test = SyntheticDataset([16], num_classes=4, n=400, separation=3.0).load()
    centroids = torch.stack([train.inputs[train.targets == c].mean(0) for c in range(4)])
    nearest = torch.cdist(test.inputs, centroids).argmin(dim=1)
    assert (nearest == test.targets).float().mean() > 0.9


def test_token_ids_stay_in_the_vocabulary_and_skip_padding() -> None:
    train, test = SyntheticDataset([12], num_classes=2, n=100, vocab_size=50).load()
    assert train.inputs.dtype == torch.long and train.inputs.shape == (100, 12)
    both = torch.cat([train.inputs, test.inputs])
    assert int(both.min()) >= 1 and int(both.max()) <= 49


def test_keys_drive_the_by_key_partition() -> None:
    dm = FederatedDataModule(SyntheticDataset([91], num_classes=9, n=120, num_keys=12), num_clients=None,
                             partition="by_key")
    dm.setup()
    assert dm.num_clients == 12 and sum(len(c) for c in dm.clients) == 120
    assert SyntheticDataset([4], num_classes=2).partition_keys() is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(shape=[], num_classes=2), "shape"),
    (dict(shape=[0, 4], num_classes=2), "shape"),
    (dict(shape=[4], num_classes=0), "num_classes"),
    (dict(shape=[4], num_classes=10, n=5), "n >= num_classes"),
    (dict(shape=[4], num_classes=10, vocab_size=5), "vocab_size"),
    (dict(shape=[4], num_classes=2, n=10, num_keys=11), "num_keys"),
])
def test_bad_arguments_say_what_is_wrong(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticDataset(**kwargs)


def test_repr_names_the_arguments() -> None:
    text = repr(SyntheticDataset([12], num_classes=2, n=40, vocab_size=50))
    assert "shape=[12]" in text and "vocab_size=50" in text and "num_keys" not in text
