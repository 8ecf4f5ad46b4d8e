"""The robustness matrix: a shared attack-free baseline in the grid, heatmaps and tables in the report."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib.image
import pytest
from jsonargparse import Namespace
from rich.console import Console

from fl_lightning.sweeps import run_report
from fl_lightning.sweeps.heatmaps import ACC_DROP, LATE_ACC, build
from fl_lightning.sweeps.recipe import load_recipe, recipe_from_dict
from fl_lightning.sweeps.runner import run_sweep, sweep_parser

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "robustness_matrix.yaml"
ATTACKS = [{"class_path": "fl_lightning.attacks.ALIE"}, {"class_path": "fl_lightning.attacks.SignFlip"}]


def _grid(**sweep_extra) -> dict:
    return {"name": "m", "trainer": {"rounds": 1, "attacks": [{"class_path": "fl_lightning.attacks.ALIE",
                                                                "init_args": {"clients": 1}}]},
            "aggregators": [{"class_path": "fl_lightning.aggregators.FedAvg"}],
            "sweep": {"grid": {"trainer.attacks.0": ATTACKS, "trainer.attacks.0.init_args.clients": [0, 1, 2]},
                      **sweep_extra}}


def test_baseline_points_run_without_attacks_once_for_every_attack() -> None:
    recipe = recipe_from_dict(_grid(baseline={"trainer.attacks.0.init_args.clients": 0}))
    points = recipe.points()
    names = [p.name for p in points]
    assert names == ["attacks=none-clients=0", "attacks=ALIE-clients=1", "attacks=ALIE-clients=2",
                     "attacks=SignFlip-clients=1", "attacks=SignFlip-clients=2"]
    assert points[0].config["trainer"]["attacks"] == []
    assert points[0].labels["trainer.attacks.0"] == "none"
    assert points[3].config["trainer"]["attacks"] == [{"class_path": "fl_lightning.attacks.SignFlip",
                                                       "init_args": {"clients": 1}}]


def test_without_baseline_every_attack_keeps_its_zero_attacker_point() -> None:
    assert len(recipe_from_dict(_grid()).points()) == 6


def test_baseline_and_heatmap_must_name_grid_axes() -> None:
    with pytest.raises(ValueError, match="sweep.baseline trainer.attacks.0.init_args.clients: 5"):
        recipe_from_dict(_grid(baseline={"trainer.attacks.0.init_args.clients": 5}))
    with pytest.raises(ValueError, match="not grid axes"):
        recipe_from_dict(_grid(heatmap={"rows": "aggregator", "columns": "data.partition"}))
    with pytest.raises(ValueError, match="takes rows and columns"):
        recipe_from_dict(_grid(heatmap={"rows": "trainer.attacks.0"}))


def test_the_matrix_recipe_small_profile_dedupes_the_zero_attacker_column() -> None:
    recipe = load_recipe(RECIPE, "small")
    points = recipe.points()
    rules, splits, attacks, counts, seeds, *levers = (len(a.values) for a in recipe.axes)
    assert (splits, counts, seeds) == (2, 4, 2) and rules >= 7 and attacks >= 6
    assert levers == [1, 1, 1]  # client momentum, server optimizer, FedProx: one value each outside `levers`
    assert len(points) == rules * splits * seeds * (1 + attacks * (counts - 1))
    clean = [p for p in points if p.config["trainer"]["attacks"] == []]
    assert len(clean) == rules * splits * seeds and all("attacks=none-clients=0" in p.name for p in clean)
    assert len({p.name for p in points}) == len(points)
    labels = {p.labels["aggregator"] for p in points}
    assert {"FedAvg", "CoordinateMedian", "Krum", "ResidualReweight"} <= labels
    assert any(label.startswith("NNM") and "TrimmedMean" in label for label in labels)


def test_dry_run_lists_the_matrix_points_and_runs_nothing(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    cfg = sweep_parser().parse_args(["--config", str(RECIPE), "--profile", "small", "--dry_run", "true",
                                     "--save_dir", str(tmp_path)])
    assert run_sweep(cfg, console=console) == []
    text = console.export_text()
    expected = len(load_recipe(RECIPE, "small").points())
    assert f"robustness_matrix-small: {expected} points" in text
    assert "FedAvg-partition=iid-attacks=none-clients=0-seed=0" in text
    assert "FedAvg-partition=classes-attacks=MinMax-clients=3-seed=1" in text
    assert "attacks=ALIE-clients=0" not in text
    assert not any(tmp_path.iterdir())


def _sweep_folder(folder: Path) -> dict[str, float]:
    """A finished 2 rules x {none, ALIE, SignFlip} x clients {0, 1, 2} x 2 seeds x 2 splits matrix; late accs."""
    axes = [{"key": "aggregator", "path": "trainer.aggregator", "values": [], "labels": ["FedAvg", "Median"]},
            {"key": "data.partition", "path": "data.partition", "values": [], "labels": ["iid", "classes"]},
            {"key": "trainer.attacks.0", "path": "trainer.attacks.0", "values": [], "labels": ["ALIE", "SignFlip"]},
            {"key": "trainer.attacks.0.init_args.clients", "path": "trainer.attacks.0.init_args.clients",
             "values": [0, 1, 2], "labels": ["0", "1", "2"]},
            {"key": "trainer.seed", "path": "trainer.seed", "values": [0, 1], "labels": ["0", "1"]}]
    sweep = {"name": "m", "recipe": "r.yaml", "profile": "small", "axes": axes,
             "baseline": {"trainer.attacks.0.init_args.clients": 0},
             "heatmap": {"figures": "data.partition", "rows": "trainer.aggregator", "columns": "trainer.attacks.0",
                         "panels": "trainer.attacks.0.init_args.clients"}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps(sweep))
    accs = {}
    for rule, base in (("FedAvg", 0.9), ("Median", 0.8)):
        for split in ("iid", "classes"):
            for seed in (0, 1):
                runs = [("none", 0, base + 0.02 * seed)]
                runs += [(attack, n, base - 0.1 * n * (2 if attack == "SignFlip" else 1) - 0.01 * seed)
                         for attack in ("ALIE", "SignFlip") for n in (1, 2)]
                for attack, n, acc in runs:
                    name = f"{rule}-partition={split}-attacks={attack}-clients={n}-seed={seed}"
                    labels = {"aggregator": rule, "data.partition": split, "trainer.attacks.0": attack,
                              "trainer.attacks.0.init_args.clients": str(n), "trainer.seed": str(seed)}
                    record = {"point": name, "labels": labels, "rounds": 5, "final": {"test/acc": acc},
                              "late_mean": {"test/acc": acc}, "history": []}
                    (folder / name).mkdir()
                    (folder / name / "summary.json").write_text(json.dumps(record))
                    accs[name] = acc
    return accs


def test_cells_are_seed_means_with_spread_and_drops_pair_each_seed_with_its_baseline(tmp_path: Path) -> None:
    accs = _sweep_folder(tmp_path)
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    points = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/summary.json"))]
    late = build(sweep, points, LATE_ACC)
    assert late.columns == ["none", "ALIE", "SignFlip"] and late.panels == ["0", "1", "2"]
    values = [accs[f"Median-partition=classes-attacks=SignFlip-clients=2-seed={s}"] for s in (0, 1)]
    cell = late.cell("classes", "2", "Median", "SignFlip")
    assert cell.mean == pytest.approx(statistics.fmean(values))
    assert cell.spread == pytest.approx(statistics.stdev(values))
    assert late.cell("iid", "0", "FedAvg", "none").mean == pytest.approx(0.91)
    drop = build(sweep, points, ACC_DROP)
    # seed s: baseline 0.9 + 0.02 s, attacked 0.9 - 0.2 - 0.01 s -> drop 0.2 + 0.03 s
    assert drop.cell("iid", "1", "FedAvg", "SignFlip").values == pytest.approx([0.2, 0.23])
    assert drop.cell("iid", "0", "FedAvg", "none").mean is None


def test_report_draws_one_heatmap_per_split_and_metric_and_shows_no_attack_beside_attack(tmp_path: Path) -> None:
    _sweep_folder(tmp_path)
    report = run_report(Namespace(path=str(tmp_path), paper=None)).read_text()
    for metric in (LATE_ACC, ACC_DROP):
        for split in ("iid", "classes"):
            image = matplotlib.image.imread(tmp_path / "heatmaps" / f"{metric}-{split}.png")
            assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 100
            assert f"](heatmaps/{metric}-{split}.png)" in report
    assert "| rule | no attack | clients=1: mean | worst | clients=2: mean | worst |" in report
    # FedAvg, iid: no attack 0.90/0.92; 1 attacker: ALIE 0.80/0.79, SignFlip 0.70/0.69
    assert "| FedAvg | 0.91±0.01 | 0.74 | SignFlip 0.69±0.01 |" in report
    assert "accuracy drop vs the same rule without attack (late accuracy), partition=classes, clients=2:" in report
    assert "Not run yet" not in report


def test_the_levers_profile_crosses_rules_with_every_lever_stack() -> None:
    recipe = load_recipe(RECIPE, "levers")
    points = recipe.points()
    stacks = {(p.labels["aggregator"], p.labels["trainer.client_momentum"], p.labels["trainer.server_optimizer"],
               p.labels["trainer.proximal_mu"]) for p in points}
    assert len(stacks) == 3 * 2 * 2 * 2  # FedAvg, RR, NNM(RR) x client momentum x server momentum x mu
    assert len(points) == len(stacks) * 2 * 2  # x (no attack, label flip) x (iid, classes)
    assert recipe.heatmap["levers"] == ["trainer.client_momentum", "trainer.server_optimizer",
                                        "trainer.proximal_mu"]
