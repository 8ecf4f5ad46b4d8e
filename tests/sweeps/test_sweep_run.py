"""``fl-lightning sweep``: one folder and summary.json per point, skipping, resuming, refusing stale runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonargparse import Namespace
from tests.sweeps.tiny_sweep import TINY, quiet, sweep_args, write_recipe

from fl_lightning.cli import main
from fl_lightning.sweeps import run_report, run_sweep
from fl_lightning.trainer import FederatedTrainer

POINTS = ["FedAvg-clients=0", "FedAvg-clients=1", "ResidualReweight-clients=0", "ResidualReweight-clients=1"]


def test_every_point_gets_its_run_folder_and_summary(finished_sweep: Path) -> None:
    assert sorted(p.parent.name for p in finished_sweep.glob("*/summary.json")) == POINTS
    sweep = json.loads((finished_sweep / "sweep.json").read_text())
    assert sweep["paper"] == "fig3" and sweep["points"] == POINTS
    record = json.loads((finished_sweep / "ResidualReweight-clients=1" / "summary.json").read_text())
    assert record["params"]["trainer.attacks.0.init_args.clients"] == 1
    assert record["labels"] == {"aggregator": "ResidualReweight", "trainer.attacks.0.init_args.clients": "1"}
    assert record["rounds"] == 3 and len(record["history"]) == 3 and len(record["attackers"]) == 1
    assert {"test/acc", "attack/asr"} <= set(record["final"]) and "test/acc" in record["late_mean"]
    first = record["history"][0]
    assert len(first["client_ids"]) == len(first["client_weights"]) == 4
    assert sum(first["client_weights"]) == pytest.approx(1.0, abs=1e-5)
    assert record["config"]["trainer"]["aggregator"]["class_path"].endswith("ResidualReweight")
    assert list((finished_sweep / "FedAvg-clients=0").glob("events.out.tfevents.*"))


def test_finished_points_are_skipped(finished_sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr(FederatedTrainer, "fit", no_training)
    summaries = run_sweep(sweep_args(finished_sweep.parent.parent / "tiny.yaml"), console=quiet())
    assert [s.name for s in summaries] == POINTS and all(s.rounds == 3 for s in summaries)


def test_an_interrupted_point_resumes_from_its_own_checkpoint(tmp_path: Path, finished_sweep: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = write_recipe(tmp_path)
    only = "ResidualReweight-clients=1"
    original = FederatedTrainer._run_round
    rounds_run: list[int] = []

    def crash_in_round_2(self, round_idx):
        if round_idx == 2 and not rounds_run.count(-1):
            rounds_run.append(-1)
            raise KeyboardInterrupt  # Ctrl-C
        rounds_run.append(round_idx)
        return original(self, round_idx)

    monkeypatch.setattr(FederatedTrainer, "_run_round", crash_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep_args(recipe, only=only), console=quiet())
    folder = tmp_path / "logs" / "tiny" / only
    assert (folder / "checkpoints" / "last.ckpt").is_file() and not (folder / "summary.json").exists()
    rounds_run.clear()
    rounds_run.append(-1)  # no second crash
    run_sweep(sweep_args(recipe, only=only), console=quiet())
    assert rounds_run == [-1, 2]  # only the missing round ran
    resumed = json.loads((folder / "summary.json").read_text())
    uninterrupted = json.loads((finished_sweep / only / "summary.json").read_text())
    assert [r["round"] for r in resumed["history"]] == [0, 1, 2]
    assert resumed["final"]["test/acc"] == pytest.approx(uninterrupted["final"]["test/acc"])
    assert resumed["history"][2]["client_weights"] == pytest.approx(uninterrupted["history"][2]["client_weights"])


def test_a_failing_point_is_recorded_and_the_others_still_run(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = write_recipe(tmp_path)
    original = FederatedTrainer.fit

    def diverge_with_fedavg(self, *args, **kwargs):
        if type(self.aggregator).__name__ == "FedAvg":
            raise RuntimeError("3 consecutive rounds had too few usable clients")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FederatedTrainer, "fit", diverge_with_fedavg)
    with pytest.raises(RuntimeError, match="1 of 2 points failed: FedAvg-clients=1"):
        run_sweep(sweep_args(recipe, only="*-clients=1"), console=quiet())
    folder = tmp_path / "logs" / "tiny"
    failure = json.loads((folder / "FedAvg-clients=1" / "failed.json").read_text())
    assert "too few usable clients" in failure["error"] and failure["labels"]["aggregator"] == "FedAvg"
    assert (folder / "ResidualReweight-clients=1" / "summary.json").is_file()
    report = run_report(Namespace(path=str(folder), paper=None)).read_text()
    assert "| FedAvg | failed |" in report and "## Failed points" in report
    monkeypatch.setattr(FederatedTrainer, "fit", original)
    run_sweep(sweep_args(recipe, only="*-clients=1"), console=quiet())  # tried again, now it works
    assert not (folder / "FedAvg-clients=1" / "failed.json").exists()
    assert (folder / "FedAvg-clients=1" / "summary.json").is_file()


def test_a_finished_point_with_another_config_is_refused(tmp_path: Path) -> None:
    write_recipe(tmp_path, trainer={**TINY["trainer"], "rounds": 1})
    run_sweep(sweep_args(tmp_path / "tiny.yaml", only="FedAvg-clients=0"), console=quiet())
    recipe = write_recipe(tmp_path, description="only cosmetic keys may change")
    with pytest.raises(ValueError, match=r"another config \(first difference: trainer.rounds: 1 -> 3\)"):
        run_sweep(sweep_args(recipe, only="FedAvg-clients=0"), console=quiet())


def test_dry_run_and_bad_points_run_nothing(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    assert run_sweep(sweep_args(recipe, dry_run=True), console=quiet()) == []
    main(["sweep", "--config", str(recipe), "--profile", "small", "--set", "[trainer.rounds=2]",
          "--only", "[FedAvg*]", "--dry_run", "true"])
    assert not (tmp_path / "logs").exists()
    bad = write_recipe(tmp_path, sweep={"grid": {"trainer.rouns": [1, 2]}})
    with pytest.raises(ValueError, match=r"sweep point 'FedAvg-rouns=1'.*trainer.*rouns"):
        run_sweep(sweep_args(bad), console=quiet())
    with pytest.raises(ValueError, match="matches none of the 4 points"):
        run_sweep(sweep_args(recipe, only=["Krum-*", "Bulyan-*"]), console=quiet())
    # what the command line hands over for --only '[*Krum-*]': YAML reads a leading * as an alias, so the
    # list stays one string, whose brackets fnmatch takes for a character class
    with pytest.raises(ValueError, match=r"read as one pattern.*quote its items"):
        run_sweep(sweep_args(recipe, only="[*Krum-*]"), console=quiet())
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        run_sweep(sweep_args(recipe, set=["trainer.rounds"]), console=quiet())
    assert not (tmp_path / "logs").exists()


def test_a_missing_dataset_stops_the_sweep_at_the_first_point(tmp_path: Path) -> None:
    missing = tmp_path / "no-mnist"
    recipe = write_recipe(tmp_path, data={"dataset": {"class_path": "fl_lightning.data.MNIST",
                                                      "init_args": {"root": str(missing)}}, "num_clients": 6})
    with pytest.raises(FileNotFoundError, match=str(missing)):
        run_sweep(sweep_args(recipe), console=quiet())
    folders = [p for p in (tmp_path / "logs" / "tiny").iterdir() if p.is_dir()]
    assert [p.name for p in folders] == ["FedAvg-clients=0"], "only the first point was tried"
    assert not list((tmp_path / "logs" / "tiny").rglob("failed.json"))


def test_a_small_profile_report_says_smoke_test_scale(tmp_path: Path, finished_sweep: Path) -> None:
    from fl_lightning.sweeps import run_report

    run_sweep(sweep_args(write_recipe(tmp_path), profile="small"), console=quiet())
    report = run_report(Namespace(path=str(tmp_path / "logs" / "tiny-small"), paper=None)).read_text()
    assert report.startswith("# Report: tiny-small (smoke-test scale)")
    assert "## test/acc (smoke-test scale)" in report and "not comparable with the paper's" in report
    full = run_report(Namespace(path=str(finished_sweep), paper=None)).read_text()
    assert "smoke-test" not in full.lower()
