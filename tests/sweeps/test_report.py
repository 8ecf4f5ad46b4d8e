"""``fl-lightning report``: report.md laid out like the paper's table, its numbers beside ours, and PNGs."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
from jsonargparse import Namespace

from fl_lightning.cli import main
from fl_lightning.sweeps import run_report


def _table(report: str, heading: str) -> list[str]:
    """The markdown table lines under ``## heading``."""
    return report.split(f"## {heading}\n", 1)[1].strip("\n").split("\n\n", 1)[0].splitlines()


def _png_ok(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_report_of_a_finished_sweep(finished_sweep: Path) -> None:
    out = run_report(Namespace(path=str(finished_sweep), paper=None))
    report = out.read_text()
    assert out == finished_sweep / "report.md"
    assert "4 of 4 points finished" in report and "Figure 3" in report and "plot only" in report
    acc = _table(report, "test/acc")
    assert acc[0] == "| aggregator | clients=0 | clients=1 |"
    assert acc[2].startswith("| FedAvg | **") and acc[3].startswith("| ResidualReweight (paper: Ours) | **")
    assert len(acc) == 4 and "(" not in acc[2].split("|", 2)[2]  # a figure: no paper values in the cells
    assert len(_table(report, "attack/asr")) == 4
    for name in ("test_acc_vs_round", "test_acc_final", "attack_asr_vs_round", "attack_asr_final"):
        _png_ok(finished_sweep / "plots" / f"{name}.png")
        assert f"](plots/{name}.png)" in report
    weights = sorted((finished_sweep / "plots" / "weights").glob("*.png"))
    assert [p.stem for p in weights] == ["FedAvg-clients=0", "FedAvg-clients=1",
                                         "ResidualReweight-clients=0", "ResidualReweight-clients=1"]
    _png_ok(weights[-1])
    main(["report", str(finished_sweep), "--paper", "none"])
    assert "Figure 3" not in (finished_sweep / "report.md").read_text()


def _point(folder: Path, aggregator: str, sigma: float, seed: int, acc: float) -> None:
    labels = {"aggregator": aggregator, "trainer.attacks.0.init_args.sigma": f"{sigma:g}", "trainer.seed": str(seed)}
    record = {"point": f"{aggregator}-sigma={sigma:g}-seed={seed}", "labels": labels, "rounds": 2,
              "final": {"test/acc": acc}, "late_mean": {"test/acc": acc - 0.1}, "attackers": [1],
              "history": [{"round": r, "client_ids": [0, 1], "client_weights": [0.6, 0.4],
                           "metrics": {"test/acc": acc}} for r in range(2)]}
    (folder / record["point"]).mkdir(parents=True)
    (folder / record["point"] / "summary.json").write_text(json.dumps(record))


def test_paper_numbers_sit_beside_ours_and_seeds_are_averaged(tmp_path: Path) -> None:
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for aggregator, acc in (("FedAvg", 0.5), ("ResidualReweight", 0.9)):
            for sigma in (0.0, 1.0):
                _point(tmp_path, aggregator, sigma, seed, acc + shift)
    (tmp_path / "FedAvg-broken").mkdir()  # a point without summary.json is left out
    report = run_report(Namespace(path=str(tmp_path), paper="table4")).read_text()
    assert "Table 4" in report and "Cells average the runs over trainer.seed" in report
    acc = _table(report, "test/acc")
    assert acc[0] == "| aggregator | sigma=0 | sigma=1 |"
    # mean ± sample sd over the two seeds, then each seed's late mean (seed 0 first)
    assert acc[2] == ("| FedAvg | **51.0 ± 1.4** / 41.0 ± 1.4 [40.0, 42.0] (93.17) "
                      "| **51.0 ± 1.4** / 41.0 ± 1.4 [40.0, 42.0] (78.80) |")
    assert acc[3] == ("| ResidualReweight (paper: Ours) | **91.0 ± 1.4** / 81.0 ± 1.4 [80.0, 82.0] (90.06) "
                      "| **91.0 ± 1.4** / 81.0 ± 1.4 [80.0, 82.0] (90.91) |")
    _png_ok(tmp_path / "plots" / "test_acc_final.png")


def test_bad_folders_and_unknown_paper_entries_are_errors(tmp_path: Path, finished_sweep: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        run_report(Namespace(path=str(tmp_path / "nope"), paper=None))
    with pytest.raises(ValueError, match="holds no finished point"):
        run_report(Namespace(path=str(tmp_path), paper=None))
    with pytest.raises(ValueError, match="'table99' is not in fl_lightning/paper_results.yaml"):
        run_report(Namespace(path=str(finished_sweep), paper="table99"))
