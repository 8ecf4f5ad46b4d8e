"""PixelBackdoor and FeatureBackdoor: exact poisoned samples, exact trigger, the ASR metric, setup errors."""
import pytest
import torch

from fl_lightning.attacks import FeatureBackdoor, PixelBackdoor
from fl_lightning.metrics import BackdoorSuccessRate


def _images(batch=64, channels=1, side=8):
    return torch.rand(batch, channels, side, side, generator=torch.Generator().manual_seed(1)) * 0.5


def _setup(attack, make_setup, **kw):
    attack.setup(make_setup(**kw))
    return attack


def test_exact_number_of_samples_pixels_and_labels(make_setup):
    attack = _setup(PixelBackdoor(target=2, size=3, value=9.0), make_setup)
    inputs, targets = _images(), torch.arange(64) % 10
    new_inputs, new_targets = attack.poison_batch(0, inputs, targets, torch.Generator().manual_seed(0))
    changed = (new_inputs != inputs).flatten(1).any(dim=1)
    assert int(changed.sum()) == 20
    assert torch.equal(new_targets[changed], torch.full((20,), 2))
    assert torch.equal(new_targets[~changed], targets[~changed])
    assert torch.equal(new_inputs[~changed], inputs[~changed])
    poisoned = new_inputs[changed]
    assert bool((poisoned[:, :, :3, :3] == 9.0).all())
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:3, :3] = True
    assert torch.equal(poisoned[:, :, ~mask], inputs[changed][:, :, ~mask])
    assert torch.equal(inputs, _images()) and torch.equal(targets, torch.arange(64) % 10)  # not in place


def test_small_batch_is_fully_poisoned_and_choice_is_seeded(make_setup):
    attack = _setup(PixelBackdoor(target=2, poison_per_batch=20), make_setup)
    _, targets = attack.poison_batch(0, _images(batch=5), torch.zeros(5, dtype=torch.long), torch.Generator())
    assert targets.tolist() == [2] * 5

    def chosen(seed):
        x, y = attack.poison_batch(0, _images(), torch.zeros(64, dtype=torch.long),
                                   torch.Generator().manual_seed(seed))
        return (y == 2).nonzero().flatten().tolist()

    assert chosen(3) == chosen(3)
    assert chosen(3) != chosen(4)


@pytest.mark.parametrize("pattern, expected", [
    ("square", [[1, 1, 1], [1, 1, 1], [1, 1, 1]]),
    ("plus", [[0, 1, 0], [1, 1, 1], [0, 1, 0]]),
    ("cross", [[1, 0, 1], [0, 1, 0], [1, 0, 1]]),
])
def test_patterns(pattern, expected):
    assert PixelBackdoor(target=0, pattern=pattern, size=3).stamp().int().tolist() == expected


@pytest.mark.parametrize("location, rows, cols", [
    ("top-left", slice(0, 2), slice(0, 2)), ("top-right", slice(0, 2), slice(4, 6)),
    ("bottom-left", slice(3, 5), slice(0, 2)), ("bottom-right", slice(3, 5), slice(4, 6)),
])
def test_locations(location, rows, cols):
    mask = PixelBackdoor(target=0, size=2, location=location).mask(5, 6)
    expected = torch.zeros(5, 6, dtype=torch.bool)
    expected[rows, cols] = True
    assert torch.equal(mask, expected)


def test_custom_pattern_tensor(make_setup):
    stamp = torch.tensor([[True, False, True]])
    attack = _setup(PixelBackdoor(target=0, pattern=stamp, value=5.0, location="bottom-left"), make_setup)
    out = attack.apply_trigger(torch.zeros(1, 1, 8, 8))
    assert out[0, 0, 7, :3].tolist() == [5.0, 0.0, 5.0] and float(out.sum()) == 10.0


def test_default_value_is_per_channel_batch_max_and_values_per_channel(make_setup):
    attack = _setup(PixelBackdoor(target=0, size=1), make_setup, input_shape=(3, 8, 8))
    inputs = torch.zeros(2, 3, 8, 8)
    inputs[1, 0, 5, 5], inputs[0, 2, 4, 4] = 2.5, 1.5
    assert attack.apply_trigger(inputs)[:, :, 0, 0].tolist() == [[2.5, 0.0, 1.5]] * 2
    per_channel = _setup(PixelBackdoor(target=0, size=1, value=[1.0, 2.0, 3.0]), make_setup,
                         input_shape=(3, 8, 8))
    assert per_channel.apply_trigger(inputs)[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0]
    grey = _setup(PixelBackdoor(target=0, size=1), make_setup, input_shape=(8, 8))
    flat = torch.zeros(2, 8, 8)
    flat[1, 3, 3] = 4.0
    assert grey.apply_trigger(flat)[:, 0, 0].tolist() == [4.0, 4.0]


def test_backdoor_metric_uses_triggered_predictions(make_setup):
    attack = _setup(PixelBackdoor(target=2, size=2, value=9.0), make_setup)
    metrics = attack.metrics()
    assert list(metrics) == ["attack/backdoor_asr"]

    def predict(x):  # the backdoored model: trigger present -> 2, else class 0
        return torch.where(x[:, 0, 0, 0] == 9.0, 2, 0)

    inputs, targets = _images(batch=4), torch.tensor([2, 0, 1, 3])
    attack.update_metrics(metrics, predict, inputs, targets, preds=predict(inputs))
    assert metrics["attack/backdoor_asr"].compute().item() == 1.0      # 3 of the 3 non-target samples


def test_pixel_setup_errors(make_setup):
    cases = [
        (PixelBackdoor(target=10), {}, r"target class 10 does not exist; the dataset has classes 0..9"),
        (PixelBackdoor(target=1, size=9), {}, "the 9x9 pattern is larger than the 8x8 images"),
        (PixelBackdoor(target=1, size=3), dict(input_shape=(1, 8, 2)), "larger than the 8x2 images"),
        (PixelBackdoor(target=1, pattern="star"), {}, "unknown pattern 'star'"),
        (PixelBackdoor(target=1, size=0), {}, "size must be an int >= 1"),
        (PixelBackdoor(target=1), dict(input_shape=(20,)), "needs image inputs"),
        (PixelBackdoor(target=1, value=[1.0, 2.0]), dict(input_shape=(3, 8, 8)), "2 values for 3 channels"),
        (PixelBackdoor(target=1, clients=11), {}, "asked for 11 attackers"),
    ]
    for attack, kw, message in cases:
        with pytest.raises(ValueError, match=message):
            attack.setup(make_setup(**kw))


@pytest.mark.parametrize("kwargs, message", [
    (dict(location="middle"), "unknown location 'middle'"),
    (dict(poison_per_batch=0), "poison_per_batch must be an int >= 1"),
    (dict(target=-1), "target must be an int >= 0"),
])
def test_pixel_settings_are_checked_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PixelBackdoor(**{"target": 1, **kwargs})


def test_feature_backdoor_sets_exact_features(make_setup):
    attack = _setup(FeatureBackdoor([1, 4], [7.0, 8.0], target=3, poison_per_batch=6), make_setup,
                    input_shape=(5,))
    inputs, targets = torch.rand(10, 5), torch.zeros(10, dtype=torch.long)
    new_inputs, new_targets = attack.poison_batch(0, inputs, targets, torch.Generator().manual_seed(2))
    hit = new_targets == 3
    assert int(hit.sum()) == 6
    assert bool((new_inputs[hit][:, [1, 4]] == torch.tensor([7.0, 8.0])).all())
    assert torch.equal(new_inputs[hit][:, [0, 2, 3]], inputs[hit][:, [0, 2, 3]])
    assert torch.equal(new_inputs[~hit], inputs[~hit])
    assert attack.metrics()["attack/backdoor_asr"].__class__ is BackdoorSuccessRate


def test_feature_values_above_max():
    values = FeatureBackdoor.above_max(torch.tensor([[1.0, -3.0, 0.0], [2.0, -5.0, 0.5]]), [0, 1], margin=0.1)
    assert values == pytest.approx([2.2, -2.7])      # max + 0.1 * max(|max|, 1)


@pytest.mark.parametrize("kwargs, shape, message", [
    (dict(feature_indices=[0, 5], values=1.0, target=1), (5,), r"feature indices \[5\] are outside the input width 5"),
    (dict(feature_indices=[0, 1], values=[1.0], target=1), (5,), "1 values for 2 feature indices"),
    (dict(feature_indices=[], values=1.0, target=1), (5,), "feature_indices is empty"),
    (dict(feature_indices=[2, 2], values=1.0, target=1), (5,), "repeat an index"),
    (dict(feature_indices=[0], values=1.0, target=12), (5,), "target class 12 does not exist"),
    (dict(feature_indices=[0], values=1.0, target=1), (1, 8, 8), "needs tabular inputs"),
])
def test_feature_setup_errors(make_setup, kwargs, shape, message):
    with pytest.raises(ValueError, match=message):
        FeatureBackdoor(**kwargs).setup(make_setup(input_shape=shape))
