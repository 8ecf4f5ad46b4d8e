"""Every recipe: the fit parser takes it, every grid value makes a valid point, and its small profile runs a round."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml
from rich.console import Console

from fl_lightning.fit_config import fit_parser
from fl_lightning.sweeps import Recipe, load_recipe, run_sweep, sweep_parser
from fl_lightning.sweeps.runner import parse_point

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
SWEEPABLE = [p for p in RECIPES if "sweep" in yaml.safe_load(p.read_text())]


@pytest.fixture(scope="module")
def parser():
    """The fit parser, raising instead of exiting on a bad config."""
    parser = fit_parser()
    parser.exit_on_error = False
    return parser


def _one_point_per_value(recipe: Recipe) -> list:
    """Points in which every axis value appears at least once (the full product can be hundreds).

    Picked by label, not by position: a ``sweep.baseline`` lists its attack-free points once, so the
    list is shorter than the product (and the attack axes' values appear in the other points).
    """
    chosen: dict[str, object] = {}
    for point in recipe.points():
        for key, label in point.labels.items():
            chosen.setdefault(f"{key}={label}", point)
    unique = {id(p): p for p in chosen.values()}
    return list(unique.values())


def test_every_paper_experiment_has_a_recipe() -> None:
    names = {p.stem for p in RECIPES}
    assert {"mnist_label_flip", "cifar10_label_flip", "amazon_label_flip", "mnist_gaussian", "mnist_lambda_delta",
            "mnist_estimators", "mnist_underrepresented", "amazon_mix_rate"} <= names
    assert {f"backdoor_{d}_{s}" for d in ("mnist", "cifar10", "loan") for s in ("naive", "replacement")} <= names
    assert all("small" in yaml.safe_load(p.read_text())["profiles"] for p in SWEEPABLE)
    assert len(SWEEPABLE) == 15  # the 14 paper recipes and the robustness matrix


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_the_recipe_and_every_grid_value_parse(path: Path, parser) -> None:
    parser.parse_args(["--config", str(path)])  # what `fl-lightning fit --config` reads
    raw = yaml.safe_load(path.read_text())
    for profile in [None, *sorted(raw.get("profiles") or {})]:
        recipe = load_recipe(path, profile)
        for point in _one_point_per_value(recipe):
            parse_point(parser, point)


@pytest.fixture(scope="module")
def fast() -> Iterator[None]:
    """One torch thread: tiny models train many times faster that way on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("path", SWEEPABLE, ids=lambda p: p.stem)
def test_the_small_profile_runs_a_round(path: Path, tmp_path: Path, fast: None) -> None:
    first = load_recipe(path, "small").points()[0]
    # one round whatever the profile says: the robustness matrix's small profile is a 15-minute run
    args = sweep_parser().parse_args(["--config", str(path), "--profile", "small", "--only", first.name,
                                      "--save_dir", str(tmp_path), "--set", "[trainer.rounds=1]"])
    [summary] = run_sweep(args, console=Console(file=io.StringIO()))
    record = json.loads(next(tmp_path.glob(f"*/{first.name}/summary.json")).read_text())
    assert summary.rounds == record["rounds"] == 1 and 0.0 <= record["final"]["test/acc"] <= 1.0
    assert record["history"][0]["client_ids"]
