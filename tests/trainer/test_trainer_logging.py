"""What a run writes to TensorBoard: per-round scalars, the client-weight histogram and the hparams."""
from __future__ import annotations

from pathlib import Path

import yaml
from tests.helpers import TinyNet, make_dm, make_trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from fl_lightning.aggregators import ResidualReweight
from fl_lightning.attacks import LabelFlip

SCALARS = ("test/acc", "test/loss", "attack/asr", "aggregator/weight_attackers_mean",
           "aggregator/weight_honest_mean", "round/seconds", "clients/dropped", "defense/precision",
           "defense/recall", "aggregator/flagged", "aggregator/replaced_fraction")


def test_tensorboard_scalars_histogram_and_hparams(tmp_path):
    trainer = make_trainer(tmp_path, rounds=2, logger=None, aggregator=ResidualReweight(),
                           attacks=[LabelFlip(source=1, target=2, clients=1, extra_epochs=1)])
    trainer.fit(TinyNet(), make_dm())
    log_dir = Path(trainer.log_dir)
    assert log_dir.is_relative_to(tmp_path), "logger=None must log under default_root_dir"
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for tag in SCALARS:
        assert tag in tags["scalars"], f"scalar {tag} not written; got {sorted(tags['scalars'])}"
        assert [e.step for e in events.Scalars(tag)] == [0, 1], tag
    for step, record in enumerate(trainer.history):
        logged = {e.step: e.value for e in events.Scalars("test/acc")}[step]
        assert abs(logged - record.metrics["test/acc"]) < 1e-6
    assert [e.value for e in events.Scalars("clients/dropped")] == [0.0, 0.0]
    assert "aggregator/client_weights" in tags["histograms"]
    histogram = events.Histograms("aggregator/client_weights")
    assert [h.step for h in histogram] == [0, 1] and histogram[0].histogram_value.num == 4
    assert "aggregator/mean_confidence" in tags["histograms"]

    # hyper-parameters: TensorBoard's HPARAMS plugin and Lightning's hparams.yaml
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    logged = set(start.session_start_info.hparams)
    for key in ("rounds", "seed", "aggregator", "versions/torch", "versions/lightning", "versions/fl_lightning",
                "data/fingerprint", "attack/LabelFlip/attacker_ids", "model/lr"):
        assert key in logged, f"hparam {key} not logged; got {sorted(logged)}"
    saved = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert saved["rounds"] == 2 and saved["seed"] == 0


def test_logger_false_writes_no_event_files(tmp_path):
    trainer = make_trainer(tmp_path, rounds=1, logger=False)
    trainer.fit(TinyNet(), make_dm())
    assert not list(tmp_path.rglob("events.out.tfevents.*"))
    assert trainer.checkpoint_path.is_file()  # checkpoints still go to default_root_dir
