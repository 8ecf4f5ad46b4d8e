"""DetectionPrecisionRecall and its functional twin against hand-computed values."""
import pytest
import torch

from fl_lightning.metrics import DetectionPrecisionRecall, detection_counts, detection_precision_recall


def _values(d):
    return d["precision"].item(), d["recall"].item()


def test_counts_only_participating_clients():
    # participating 0..4, attackers {1, 3, 9 (absent)}; flagged {1, 2, 7 (absent)}
    tp, fp, fn = detection_counts([1, 2, 7], [1, 3, 9], [0, 1, 2, 3, 4])
    assert (tp.item(), fp.item(), fn.item()) == (1.0, 1.0, 1.0)
    assert _values(detection_precision_recall([1, 2, 7], [1, 3, 9], [0, 1, 2, 3, 4])) == (0.5, 0.5)


def test_bool_mask_aligned_with_participants():
    mask = torch.tensor([False, True, True, False])
    assert _values(detection_precision_recall(mask, [4, 5], [3, 4, 5, 6])) == (1.0, 1.0)
    with pytest.raises(ValueError, match="one flag per client"):
        detection_counts(torch.tensor([True]), [1], [1, 2])


def test_zero_over_zero_cases():
    assert _values(detection_precision_recall([], [], [0, 1])) == (1.0, 1.0)        # nothing to find, no alarm
    assert _values(detection_precision_recall([], [1], [0, 1])) == (1.0, 0.0)       # missed the attacker
    assert _values(detection_precision_recall([0], [], [0, 1])) == (0.0, 1.0)       # false alarm only


def test_tensor_ids_and_float_ids_rejected():
    assert _values(detection_precision_recall(torch.tensor([2]), torch.tensor([2]), torch.arange(3))) == (1.0, 1.0)
    with pytest.raises(TypeError, match="integer client ids"):
        detection_counts(torch.tensor([1.0]), [1], [1])


def test_detection_metric_per_round_and_cumulative():
    metric = DetectionPrecisionRecall()
    r1 = metric([1, 2], [2, 3], [1, 2, 3, 4])         # tp 1, fp 1, fn 1
    r2 = metric([5], [5, 6], [5, 6, 7])               # tp 1, fp 0, fn 1
    assert _values(r1) == (0.5, 0.5)
    assert _values(r2) == (1.0, 0.5)
    total = metric.compute()                          # tp 2, fp 1, fn 2
    assert total["precision"].item() == pytest.approx(2 / 3)
    assert total["recall"].item() == pytest.approx(2 / 4)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert _values(metric.compute()) == (1.0, 1.0)
