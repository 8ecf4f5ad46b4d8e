"""ClassAccuracy: per-class test accuracy in every round's metrics and the logger."""
from __future__ import annotations

import pytest
import torch
from tests.helpers import TinyNet, make_dm, make_trainer

from fl_lightning.callbacks import ClassAccuracy


def test_per_class_accuracy_matches_a_direct_count(tmp_path) -> None:
    trainer = make_trainer(tmp_path, rounds=2, callbacks=[ClassAccuracy(classes=[0, 3])])
    module, dm = TinyNet(), make_dm()
    trainer.fit(module, dm)
    with torch.no_grad():
        preds = module(dm.test.inputs).argmax(dim=1)
    for c in (0, 3):
        expected = float((preds[dm.test.targets == c] == c).float().mean())
        assert trainer.history[-1].metrics[f"test/acc_class{c}"] == pytest.approx(expected)
    assert all("test/acc_class0" in r.metrics for r in trainer.history)


def test_unknown_class_and_empty_list_are_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="classes is empty"):
        ClassAccuracy(classes=[])
    trainer = make_trainer(tmp_path, rounds=1, callbacks=[ClassAccuracy(classes=[7])])
    with pytest.raises(ValueError, match=r"classes \[7\] do not exist"):
        trainer.fit(TinyNet(), make_dm())
