"""The accuracy-against-protection frontier: lever axes join the heatmap rows, the Pareto front is marked."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
from jsonargparse import Namespace

from fl_lightning.sweeps import run_report
from fl_lightning.sweeps.frontier import Stack, pareto_front, stacks_of
from fl_lightning.sweeps.heatmaps import LATE_ACC, build

# (rule, client momentum) -> (no attack, under ALIE, under SignFlip)
ACCS = {("FedAvg", "0.0"): (0.90, 0.50, 0.40), ("FedAvg", "0.9"): (0.85, 0.60, 0.45),
        ("Median", "0.0"): (0.80, 0.70, 0.75), ("Median", "0.9"): (0.78, 0.65, 0.60)}


def _folder(folder: Path) -> dict:
    axes = [{"key": "aggregator", "path": "trainer.aggregator", "values": [], "labels": ["FedAvg", "Median"]},
            {"key": "data.partition", "path": "data.partition", "values": [], "labels": ["classes"]},
            {"key": "trainer.attacks.0", "path": "trainer.attacks.0", "values": [], "labels": ["ALIE", "SignFlip"]},
            {"key": "trainer.attacks.0.init_args.clients", "path": "trainer.attacks.0.init_args.clients",
             "values": [0, 2], "labels": ["0", "2"]},
            {"key": "trainer.client_momentum", "path": "trainer.client_momentum", "values": [0.0, 0.9],
             "labels": ["0.0", "0.9"]},
            {"key": "trainer.proximal_mu", "path": "trainer.proximal_mu", "values": [0.0], "labels": ["0.0"]}]
    sweep = {"name": "m", "recipe": "r.yaml", "profile": "levers", "axes": axes,
             "baseline": {"trainer.attacks.0.init_args.clients": 0},
             "heatmap": {"figures": "data.partition", "rows": "trainer.aggregator", "columns": "trainer.attacks.0",
                         "panels": "trainer.attacks.0.init_args.clients",
                         "levers": ["trainer.client_momentum", "trainer.proximal_mu"]}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps(sweep))
    for (rule, beta), (clean, alie, signflip) in ACCS.items():
        for attack, n, acc in (("none", 0, clean), ("ALIE", 2, alie), ("SignFlip", 2, signflip)):
            name = f"{rule}-attacks={attack}-clients={n}-cm={beta}"
            labels = {"aggregator": rule, "data.partition": "classes", "trainer.attacks.0": attack,
                      "trainer.attacks.0.init_args.clients": str(n), "trainer.client_momentum": beta,
                      "trainer.proximal_mu": "0.0"}
            (folder / name).mkdir()
            (folder / name / "summary.json").write_text(json.dumps(
                {"point": name, "labels": labels, "rounds": 5, "final": {"test/acc": acc},
                 "late_mean": {"test/acc": acc}, "history": []}))
    return sweep


def test_pareto_front_keeps_the_undominated():
    stacks = [Stack("a", 0.9, 0.4, ""), Stack("b", 0.8, 0.7, ""), Stack("c", 0.78, 0.6, ""), Stack("d", 0.9, 0.3, "")]
    assert [s.name for s in pareto_front(stacks)] == ["a", "b"]


def test_levers_join_rows_and_the_worst_attack_is_the_minimum(tmp_path):
    sweep = _folder(tmp_path)
    points = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/summary.json"))]
    matrix = build(sweep, points, LATE_ACC)
    # single-valued levers (proximal_mu) stay out of the label
    assert matrix.rows == ["FedAvg client_momentum=0.0", "FedAvg client_momentum=0.9",
                           "Median client_momentum=0.0", "Median client_momentum=0.9"]
    stacks = {s.name: s for s in stacks_of(matrix, "classes")}
    assert stacks["FedAvg client_momentum=0.9"].worst == 0.45
    assert stacks["Median client_momentum=0.0"].worst == 0.70
    on_front = {name for name, s in stacks.items() if s.on_front}
    assert on_front == {"FedAvg client_momentum=0.0", "FedAvg client_momentum=0.9", "Median client_momentum=0.0"}


def test_report_draws_the_frontier(tmp_path):
    _folder(tmp_path)
    report = run_report(Namespace(path=str(tmp_path), paper=None)).read_text()
    image = matplotlib.image.imread(tmp_path / "heatmaps" / "frontier-classes.png")
    assert image.ndim == 3 and image.shape[0] > 100
    assert "| *Median client_momentum=0.0 | 0.800 | 0.700 | ALIE (2) |" in report
    assert "| Median client_momentum=0.9 | 0.780 | 0.600 | SignFlip (2) |" in report
