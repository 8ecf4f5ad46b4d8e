"""The README's "Bring your own LightningModule and data" example runs as written."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bring_your_own.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("bring_your_own", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_federates_a_plain_module_on_sklearn_digits(tmp_path):
    example = _load_example()
    results = example.main(rounds=5, root=str(tmp_path))
    assert results["test/acc"] > 0.5                           # 10 classes: chance is 0.1
    (metrics_file,) = tmp_path.glob("digits/version_*/metrics.csv")
    rows = list(csv.DictReader(metrics_file.open()))
    assert len(rows) == 5
    columns = set(rows[0])
    # what the module logs with self.log in training_step and test_step reaches the CSV logger
    assert {"train/loss", "train/acc", "test/acc", "test/loss"} <= columns
    honest = [float(r["aggregator/weight_honest_mean"]) for r in rows if r["aggregator/weight_honest_mean"]]
    attackers = [float(r["aggregator/weight_attackers_mean"]) for r in rows if r["aggregator/weight_attackers_mean"]]
    assert sum(attackers) / len(attackers) < sum(honest) / len(honest)
