"""Recipes choose Lightning loggers and federated callbacks the LightningCLI way (``trainer.logger``, ``trainer.callbacks``)."""
from __future__ import annotations

import csv

import pytest
import torch
import yaml

from fl_lightning.callbacks import FederatedCallback
from fl_lightning.cli import main


class InterruptAfter(FederatedCallback):
    """Raises ``KeyboardInterrupt`` once round ``round`` is logged, before its checkpoint: a run killed mid-way."""

    def __init__(self, round: int) -> None:
        self.round = round

    def on_round_logged(self, trainer, record) -> None:  # noqa: D102
        if record.round == self.round:
            raise KeyboardInterrupt


def _recipe(tmp_path, **trainer):
    config = {
        "name": "tiny",
        "save_dir": str(tmp_path / "logs"),
        "trainer": {"rounds": 2, "local_epochs": 1, "batch_size": 16, "max_batches_per_epoch": 2,
                    "enable_progress_bar": False, "aggregator": {"class_path": "FedAvg"}, **trainer},
        "model": {"class_path": "tests.helpers.TinyNet", "init_args": {"hidden": 8}},
        "data": {"dataset": {"class_path": "tests.helpers.Blobs"}, "num_clients": 3},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _steps(run_dir):
    with (run_dir / "metrics.csv").open(newline="") as file:
        return [int(float(row["step"])) for row in csv.DictReader(file) if row.get("test/acc")]


def _next_round(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["next_round"]


CSV_ONLY = {"logger": {"class_path": "CSVLogger"}}


def test_a_csv_logger_by_short_name_writes_the_runs_folder_and_no_tensorboard(tmp_path):
    main(["fit", "--config", str(_recipe(tmp_path, **CSV_ONLY))])
    run_dir = tmp_path / "logs" / "tiny" / "FedAvg"
    assert _steps(run_dir) == [0, 1]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not list((tmp_path / "logs").rglob("events.out.tfevents.*")), "only the recipe's logger writes"


def test_a_logger_list_with_several_aggregators_gives_each_run_its_own_folders(tmp_path):
    loggers = [{"class_path": "CSVLogger"},
               {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "tb")}}]
    main(["fit", "--config", str(_recipe(tmp_path, logger=loggers)), "--aggregators",
          '[{"class_path": "FedAvg"}, {"class_path": "TrimmedMean", "init_args": {"beta": 0.1}}]'])
    for run in ("FedAvg", "TrimmedMean"):
        assert _steps(tmp_path / "logs" / "tiny" / run) == [0, 1]
        assert (tmp_path / "logs" / "tiny" / run / "checkpoints" / "last.ckpt").is_file()  # the first logger's
        assert list((tmp_path / "tb" / "tiny" / run).glob("events.out.tfevents.*"))


def test_a_pinned_version_gets_the_run_name_in_its_name_when_a_recipe_has_several_runs(tmp_path):
    logger = {"class_path": "CSVLogger", "init_args": {"name": "csv", "version": "v1"}}
    main(["fit", "--config", str(_recipe(tmp_path, logger=logger)), "--aggregators",
          '[{"class_path": "FedAvg"}, {"class_path": "TrimmedMean", "init_args": {"beta": 0.1}}]'])
    for run in ("FedAvg", "TrimmedMean"):
        assert _steps(tmp_path / "logs" / "csv" / run / "v1") == [0, 1]


def test_logger_false_logs_nothing_and_keeps_each_runs_checkpoint_apart(tmp_path):
    main(["fit", "--config", str(_recipe(tmp_path, logger=False)), "--aggregators",
          '[{"class_path": "FedAvg"}, {"class_path": "TrimmedMean", "init_args": {"beta": 0.1}}]'])
    runs = tmp_path / "logs" / "tiny"
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["FedAvg", "TrimmedMean"]
    for run in runs.iterdir():
        if run.is_dir():
            assert (run / "checkpoints" / "last.ckpt").is_file()
            assert not list(run.glob("metrics.csv")) and not list(run.glob("events.out.tfevents.*"))


def test_resume_of_a_csv_only_recipe_finds_its_own_checkpoint_and_logs_each_round_once(tmp_path):
    path = _recipe(tmp_path, **CSV_ONLY)
    main(["fit", "--config", str(path)])
    run_dir = tmp_path / "logs" / "tiny" / "FedAvg"
    assert _next_round(run_dir) == 2
    with pytest.warns(UserWarning, match="rounds"):  # the resume names the changed setting
        main(["fit", "--config", str(path), "--trainer.rounds", "3", "--ckpt_path", "last"])
    assert _next_round(run_dir) == 3
    assert _steps(run_dir) == [0, 1, 2]


def test_a_run_killed_after_a_logged_round_resumes_with_each_csv_step_once(tmp_path):
    interrupt = [{"class_path": f"{__name__}.InterruptAfter", "init_args": {"round": 2}}]
    path = _recipe(tmp_path, rounds=4, callbacks=interrupt, **CSV_ONLY)
    with pytest.raises(KeyboardInterrupt):
        main(["fit", "--config", str(path)])
    run_dir = tmp_path / "logs" / "tiny" / "FedAvg"
    assert _next_round(run_dir) == 2 and _steps(run_dir) == [0, 1, 2]  # round 2 logged, not checkpointed
    main(["fit", "--config", str(path), "--trainer.callbacks", "[]", "--ckpt_path", "last"])
    assert _steps(run_dir) == [0, 1, 2, 3]


@pytest.mark.parametrize("class_path, error, message", [
    ("FedAvg", TypeError, "not a Lightning logger"),
    ("CSVLoger", ValueError, "did you mean 'CSVLogger'"),
])
def test_a_logger_entry_that_is_not_a_logger_is_refused_before_training(tmp_path, class_path, error, message):
    path = _recipe(tmp_path, logger=[{"class_path": "CSVLogger"}, {"class_path": class_path}])
    with pytest.raises(error, match=message):
        main(["fit", "--config", str(path)])
    assert not (tmp_path / "logs").exists()


def test_a_wrong_logger_prints_one_line_on_the_console(tmp_path, monkeypatch, capsys):
    path = _recipe(tmp_path, logger={"class_path": "FedAvg"})
    monkeypatch.setattr("sys.argv", ["fl-lightning", "fit", "--config", str(path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trainer.logger" in err and "not a Lightning logger" in err


def test_callbacks_by_short_name_write_model_files_and_stop_early(tmp_path):
    callbacks = [{"class_path": "ModelCheckpoint", "init_args": {"monitor": "test/acc"}},
                 {"class_path": "EarlyStopping",
                  "init_args": {"monitor": "test/acc", "mode": "max", "patience": 1, "min_delta": 1.0}}]
    main(["fit", "--config", str(_recipe(tmp_path, rounds=5, callbacks=callbacks, **CSV_ONLY))])
    run_dir = tmp_path / "logs" / "tiny" / "FedAvg"
    assert _steps(run_dir) == [0, 1], "no round improves test/acc by 1.0: the run stops after round 1"
    assert list(run_dir.rglob("round=*.ckpt")), "ModelCheckpoint wrote the best round's model"


def test_accelerator_devices_and_precision_from_a_recipe(tmp_path):
    main(["fit", "--config", str(_recipe(tmp_path, rounds=1, accelerator="cpu", devices=1,
                                         precision="bf16-mixed"))])
    saved = yaml.safe_load((tmp_path / "logs" / "tiny" / "FedAvg" / "hparams.yaml").read_text())
    assert saved["accelerator"] == "cpu" and saved["precision"] == "bf16-mixed"


def test_the_lightning_engine_from_a_recipe(tmp_path):
    main(["fit", "--config", str(_recipe(tmp_path, rounds=1, engine="lightning", **CSV_ONLY))])
    run_dir = tmp_path / "logs" / "tiny" / "FedAvg"
    saved = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert saved["engine"] == "LightningEngine" and _steps(run_dir) == [0]


def test_a_logger_value_that_is_no_entry_names_the_key_and_the_form(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(_recipe(tmp_path)), "--trainer.logger", "5"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "trainer.logger" in err and "class_path: CSVLogger" in err
