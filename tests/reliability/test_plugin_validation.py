"""Aggregator settings that are only caught after round 0 has trained on main are refused before any
training, naming the setting: at construction, or at fit() start when the check needs the model."""
from __future__ import annotations

import math

import pytest
from tests.helpers import TinyNet, make_dm, make_trainer

from fl_lightning.aggregators import CenteredClipping, FoolsGold, GeometricMedian, NormClipping
from fl_lightning.engines import SequentialEngine


class NoTraining(SequentialEngine):
    """Fails the test if any client is trained."""

    def train_round(self, *args, **kwargs):
        raise AssertionError("a client was trained before the set-up was validated")


@pytest.mark.parametrize("build,setting", [
    (lambda: CenteredClipping(tau=math.inf), "tau"),
    (lambda: NormClipping(max_norm=math.inf), "max_norm"),
    (lambda: GeometricMedian(tol=math.inf), "tol"),
    (lambda: CenteredClipping(tau=math.nan), "tau"),
    (lambda: GeometricMedian(tol=math.nan), "tol"),
])
def test_non_finite_aggregator_settings_fail_at_construction(build, setting):
    with pytest.raises(ValueError, match=rf"{setting}\b.*(inf|nan)"):
        build()


def test_foolsgold_param_that_the_model_lacks_fails_before_training(tmp_path):
    trainer = make_trainer(tmp_path, rounds=2, engine=NoTraining(), aggregator=FoolsGold(param="nope"))
    with pytest.raises(ValueError, match=r"FoolsGold: .*param.*'nope'"):
        trainer.fit(TinyNet(), make_dm())
    assert trainer.history == [] and not list(tmp_path.rglob("*.ckpt"))
