"""BackdoorSuccessRate and its functional twin against hand-computed values."""
import pytest
import torch

from fl_lightning.metrics import BackdoorSuccessRate, backdoor_success_counts, backdoor_success_rate


def test_rate_ignores_samples_of_the_target_class():
    preds = torch.tensor([2, 2, 1, 2, 2])
    targets = torch.tensor([0, 2, 1, 3, 2])
    # eligible (label != 2): samples 0, 2, 3 -> predicted 2 at 0 and 3 -> 2/3
    assert backdoor_success_rate(preds, targets, target=2).item() == pytest.approx(2 / 3)
    hits, total = backdoor_success_counts(preds, targets, target=2)
    assert (hits.item(), total.item()) == (2.0, 3.0)


def test_no_eligible_sample_gives_zero():
    assert backdoor_success_rate(torch.tensor([2, 2]), torch.tensor([2, 2]), 2).item() == 0.0


def test_metric_accumulates_over_batches_and_resets():
    metric = BackdoorSuccessRate(target=1)
    metric.update(torch.tensor([1, 0]), torch.tensor([0, 0]))      # 1 of 2
    metric.update(torch.tensor([1, 1, 1]), torch.tensor([1, 2, 3]))  # 2 of 2 eligible
    assert metric.compute().item() == pytest.approx(3 / 4)
    metric.reset()
    metric.update(torch.tensor([0]), torch.tensor([0]))
    assert metric.compute().item() == 0.0


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="one predicted class per sample"):
        backdoor_success_rate(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), 1)
