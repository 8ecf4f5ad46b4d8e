"""The README's regression and unlabeled-autoencoder examples run as written and learn."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regression_example_reports_its_own_metrics_and_beats_the_mean(tmp_path) -> None:
    pytest.importorskip("sklearn", reason="the examples use scikit-learn's data (extra: test)")
    results = _load("regression").main(rounds=8, root=str(tmp_path))
    assert {"test/mse", "test/mae"} <= set(results) and "test/acc" not in results
    assert results["test/mse"] < 0.75  # targets are standardised: predicting their mean scores about 1
    assert results["defense/recall"] == 1.0  # the sign-flipping clients were down-weighted


def test_autoencoder_example_trains_on_unlabeled_images(tmp_path) -> None:
    pytest.importorskip("sklearn", reason="the examples use scikit-learn's data (extra: test)")
    example = _load("autoencoder")
    train, test = example.digit_images()
    mean_image_error = float(((test.images - train.images.mean(0)) ** 2).mean())
    results = example.main(rounds=10, root=str(tmp_path))
    assert "test/acc" not in results
    assert results["test/reconstruction"] < mean_image_error  # better than predicting the mean image
