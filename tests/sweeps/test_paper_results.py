"""fl_lightning/paper_results.yaml: every entry loads, and its layout fits the recipe that reproduces it."""
from __future__ import annotations

from pathlib import Path

import pytest

from fl_lightning.sweeps import load_recipe
from fl_lightning.sweeps.paper import load_paper_results

ROOT = Path(__file__).resolve().parents[2]
TABLES = load_paper_results()


def test_the_typed_numbers_include_the_headline_results() -> None:
    assert TABLES["table4"].value("test/acc", ("ResidualReweight",), ("0",)) == pytest.approx(0.9006)
    assert TABLES["table2"].value("test/acc", ("FedAvg",), ("4",)) == pytest.approx(0.0978)
    assert TABLES["table6"].value("test/acc", ("0.5", "0.01"), ("classes", "9")) == pytest.approx(0.9493)
    assert TABLES["table7"].value("test/acc", ("2", "0.01"), ("estimator=theil_sen", "9")) == pytest.approx(0.4928)
    assert TABLES["table3_cifar10_naive"].value("attack/backdoor_asr", ("ResidualReweight",), ()) == \
        pytest.approx(0.0965)
    assert TABLES["loan_naive"].value("test/acc", ("CoordinateMedian",), ()) is None
    assert TABLES["fig3"].source == "figure" and not TABLES["fig3"].metrics


@pytest.mark.parametrize("table_id", sorted(TABLES))
def test_each_entry_matches_its_recipe(table_id: str) -> None:
    table = TABLES[table_id]
    recipe = load_recipe(ROOT / table.recipe)
    assert recipe.paper == table_id
    labels = {axis.path: axis.labels() for axis in recipe.axes}
    for axes in (table.rows, table.columns):
        for position, path in enumerate(axes.paths):
            assert path in labels, f"{table_id}: {path} is not an axis of {table.recipe}"
            assert {v[position] for v in axes.values} <= set(labels[path])


def test_rows_are_named_only_where_the_paper_names_them() -> None:
    assert TABLES["table4"].row_name(("ResidualReweight",)) == "Ours"
    assert TABLES["table6"].row_name(("0.5", "0.01")) is None
    assert TABLES["table4"].row_name(("Krum",)) is None
