"""``logger=`` as one Lightning logger or a list: scalars to each, drawings where they can be drawn, hparams."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tests.helpers import TinyNet, make_dm, make_trainer

from fl_lightning.aggregators import ResidualReweight
from fl_lightning.attacks import LabelFlip


def _events(folder: str | Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    return events


def _csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def test_tensorboard_and_csv_receive_the_same_scalars(tmp_path):
    tensorboard = TensorBoardLogger(str(tmp_path), name="tb")
    csv_logger = CSVLogger(str(tmp_path), name="csv")
    trainer = make_trainer(tmp_path, rounds=3, logger=[tensorboard, csv_logger], aggregator=ResidualReweight())
    trainer.fit(TinyNet(), make_dm())

    assert trainer.logger is tensorboard and trainer.loggers == [tensorboard, csv_logger]
    events = _events(tensorboard.log_dir)
    rows = _csv_rows(csv_logger)
    csv_values: dict[tuple[str, int], float] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and value != "":
                csv_values[(key, int(row["step"]))] = float(value)
    tags = set(events.Tags()["scalars"])
    csv_tags = {key for key, _ in csv_values}
    assert {"test/acc", "test/loss", "clients/train_loss", "aggregator/weight_honest_mean"} <= tags
    assert tags == csv_tags, f"only in TensorBoard: {tags - csv_tags}; only in CSV: {csv_tags - tags}"
    for tag in tags:
        logged = {e.step: e.value for e in events.Scalars(tag)}
        assert sorted(logged) == [0, 1, 2], tag
        for step, value in logged.items():
            assert csv_values[(tag, step)] == pytest.approx(value, rel=1e-6), (tag, step)
    assert [csv_values[("test/acc", r.round)] for r in trainer.history] == pytest.approx(
        [r.metrics["test/acc"] for r in trainer.history])
    # histograms go only where they can be drawn; the CSV logger is not asked to
    assert "aggregator/client_weights" in events.Tags()["histograms"]
    # hyper-parameters reach both: TensorBoard's HPARAMS plugin and the CSV logger's hparams.yaml
    assert yaml.safe_load((Path(csv_logger.log_dir) / "hparams.yaml").read_text())["rounds"] == 3
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def _hparams_plugin(events: EventAccumulator) -> tuple[set[str], set[str]]:
    """The hparams the session start info names, and the metric tags of the HPARAMS experiment."""
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    return set(start.session_start_info.hparams), {m.name.tag for m in experiment.experiment.metric_infos}


@pytest.mark.parametrize("default_hp_metric", [True, False])
def test_hparams_tab_compares_runs_on_their_key_metrics(tmp_path, default_hp_metric):
    """The HPARAMS tab needs the hparams *with* metric tags; the CLI's logger has ``default_hp_metric=False``."""
    logger = TensorBoardLogger(str(tmp_path), name="run", default_hp_metric=default_hp_metric)
    trainer = make_trainer(tmp_path, rounds=2, logger=logger, aggregator=ResidualReweight(),
                           attacks=[LabelFlip(source=1, target=2, clients=1)])
    trainer.fit(TinyNet(), make_dm())
    events = _events(logger.log_dir)
    hparams, metric_tags = _hparams_plugin(events)
    assert {"rounds", "seed", "aggregator", "model/lr", "attack/LabelFlip/attacker_ids"} <= hparams
    assert {"test/acc", "test/loss", "attack/asr"} <= metric_tags
    assert "hp_metric" not in events.Tags()["scalars"], "no placeholder metric next to the real ones"
    for tag in metric_tags:  # each metric the tab shows is a real curve, one value per round, no placeholder
        assert [e.step for e in events.Scalars(tag)] == [0, 1], tag
        assert [e.value for e in events.Scalars(tag)] == pytest.approx([r.metrics[tag] for r in trainer.history])


class DrawingLogger(Logger):
    """A non-TensorBoard logger whose experiment can draw text: it gets text by capability, not by class."""

    def __init__(self) -> None:
        super().__init__()
        self.scalars: list[tuple[int, dict[str, float]]] = []
        self.params: dict[str, Any] = {}
        self.texts: list[str] = []

    @property
    def name(self) -> str:
        return "drawing"

    @property
    def version(self) -> int:
        return 0

    @property
    def experiment(self) -> Any:
        return self

    def add_text(self, tag: str, text: str, step: int) -> None:
        self.texts.append(tag)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.scalars.append((step, dict(metrics)))


def test_any_lightning_logger_gets_scalars_and_params_and_what_it_can_draw(tmp_path):
    own = DrawingLogger()
    trainer = make_trainer(tmp_path, rounds=2, logger=own)
    trainer.fit(TinyNet(), make_dm())
    assert [step for step, _ in own.scalars] == [0, 1]
    assert [m["test/acc"] for _, m in own.scalars] == pytest.approx([r.metrics["test/acc"] for r in trainer.history])
    assert own.params["rounds"] == 2
    assert "data/partition_fingerprint" in own.texts, "text goes to any logger whose experiment has add_text"
    assert trainer.checkpoint_path.is_file()


def test_logger_true_none_false_and_lists(tmp_path):
    assert isinstance(make_trainer(tmp_path, logger=True).logger, TensorBoardLogger)
    assert isinstance(make_trainer(tmp_path, logger=None).logger, TensorBoardLogger)
    off = make_trainer(tmp_path, logger=False)
    assert off.logger is None and off.loggers == []
    assert make_trainer(tmp_path, logger=[]).loggers == []
    csv_logger = CSVLogger(str(tmp_path))
    assert make_trainer(tmp_path, logger=csv_logger).loggers == [csv_logger]
    with pytest.raises(TypeError, match=r"logger must be a Lightning Logger.*got 'tb'"):
        make_trainer(tmp_path, logger="tb")
    with pytest.raises(TypeError, match=r"logger must be a Lightning Logger.*got 3 \(int\)"):
        make_trainer(tmp_path, logger=[csv_logger, 3])
