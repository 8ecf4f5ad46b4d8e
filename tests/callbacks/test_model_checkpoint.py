"""ModelCheckpoint: Lightning-format files of the global model, the best k by a round metric, last.ckpt, resume."""
from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from tests.helpers import TinyNet, flat_params, make_dm, make_trainer

from fl_lightning.callbacks import FederatedCallback, ModelCheckpoint


class UserNet(L.LightningModule):
    """A plain user LightningModule: hyper-parameters saved with ``save_hyperparameters()``, BatchNorm buffers."""

    def __init__(self, width: int = 6, lr: float = 0.05, note: str = "mine") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.BatchNorm1d(width), nn.ReLU(),
                                 nn.Linear(width, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        return nn.functional.cross_entropy(self(inputs), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Feed(FederatedCallback):
    """Writes a known value per round into the round's metrics (a monitor the test controls)."""

    def __init__(self, values: list[float], key: str = "feed/score") -> None:
        self.values, self.key = values, key

    def on_round_end(self, trainer, record) -> None:
        record.metrics[self.key] = self.values[record.round]


def test_load_from_checkpoint_gives_back_the_global_model(tmp_path):
    checkpoint = ModelCheckpoint()
    trainer = make_trainer(tmp_path, rounds=2, callbacks=[checkpoint])
    module = UserNet(width=5, lr=0.07, note="kept")
    trainer.fit(module, make_dm())

    last = Path(checkpoint.last_model_path)
    assert last.name == "last.ckpt" and last.parent == Path(trainer.log_dir) / "checkpoints" / "models"
    assert last != trainer.checkpoint_path and trainer.checkpoint_path.is_file()
    loaded = UserNet.load_from_checkpoint(last)
    assert dict(loaded.hparams) == {"width": 5, "lr": 0.07, "note": "kept"}
    for (name, saved), (_, final) in zip(loaded.state_dict().items(), module.state_dict().items()):
        assert torch.equal(saved, final), name  # parameters, BatchNorm running stats and num_batches_tracked
    assert torch.equal(flat_params(loaded), trainer.global_params)
    raw = torch.load(last, weights_only=True)
    assert raw["pytorch-lightning_version"] == L.__version__ and raw["epoch"] == 1 and raw["global_step"] == 2
    assert raw["hparams_name"] == "kwargs"


def test_best_file_holds_the_model_of_the_best_round(tmp_path):
    """The best file is the global model as it was after its round, not the final one."""
    snapshots = []

    class Snapshot(FederatedCallback):
        def on_round_end(self, trainer, record):
            snapshots.append(trainer.global_params.clone())

    checkpoint = ModelCheckpoint(monitor="feed/score", mode="max", save_last=False)
    trainer = make_trainer(tmp_path, rounds=3, callbacks=[Feed([0.2, 0.9, 0.4]), Snapshot(), checkpoint])
    trainer.fit(TinyNet(), make_dm())
    assert checkpoint.best_model_score == 0.9
    best = TinyNet.load_from_checkpoint(checkpoint.best_model_path)
    assert torch.equal(flat_params(best), snapshots[1])
    assert not torch.equal(snapshots[1], snapshots[2])


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.ckpt")}


@pytest.mark.parametrize("mode, top_k, expected_rounds", [("max", 2, {1, 3}), ("min", 2, {0, 4}),
                                                          ("max", 1, {3}), ("min", -1, {0, 1, 2, 3, 4})])
def test_top_k_keeps_the_right_files(tmp_path, mode, top_k, expected_rounds):
    scores = [0.3, 0.8, 0.5, 0.9, 0.1]
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "models", monitor="feed/score", mode=mode,
                                 save_top_k=top_k, save_last=True)
    trainer = make_trainer(tmp_path, rounds=5, callbacks=[checkpoint, Feed(scores)])
    trainer.fit(TinyNet(), make_dm())
    expected = {f"round={r}-feed_score={scores[r]:.4f}.ckpt" for r in expected_rounds}
    assert _files(tmp_path / "models") == expected | {"last.ckpt"}
    assert set(map(lambda p: Path(p).name, checkpoint.best_k_models)) == expected
    best_round = max(expected_rounds, key=scores.__getitem__) if mode == "max" else min(expected_rounds,
                                                                                         key=scores.__getitem__)
    assert checkpoint.best_model_score == scores[best_round]
    assert Path(checkpoint.best_model_path).name == f"round={best_round}-feed_score={scores[best_round]:.4f}.ckpt"


def test_every_n_rounds_save_top_k_zero_and_a_filename_template(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "m", filename="run-{round}-{test/acc:.2f}", save_top_k=-1,
                                 every_n_rounds=2, save_last=True)
    trainer = make_trainer(tmp_path, rounds=5, callbacks=[checkpoint])
    trainer.fit(TinyNet(), make_dm())
    acc = [r.metrics["test/acc"] for r in trainer.history]
    assert _files(tmp_path / "m") == {f"run-round={r}-test_acc={acc[r]:.2f}.ckpt" for r in (1, 3)} | {"last.ckpt"}
    assert torch.load(tmp_path / "m" / "last.ckpt", weights_only=True)["epoch"] == 4, "last.ckpt after the final round"

    only_last = ModelCheckpoint(dirpath=tmp_path / "l", save_top_k=0)
    make_trainer(tmp_path, rounds=2, callbacks=[only_last]).fit(TinyNet(), make_dm())
    assert _files(tmp_path / "l") == {"last.ckpt"} and only_last.best_model_path == ""


def test_a_missing_monitor_names_the_available_metrics_at_the_first_round(tmp_path):
    trainer = make_trainer(tmp_path, rounds=3, callbacks=[ModelCheckpoint(monitor="test/accuracy")])
    with pytest.raises(ValueError, match=r"monitor 'test/accuracy' is not a metric of round 0 "
                                         r"\(did you mean 'test/acc'\?\); available: .*test/loss"):
        trainer.fit(TinyNet(), make_dm())
    assert len(trainer.history) == 1


def test_wrong_settings_and_a_dirpath_over_the_resume_file_are_refused(tmp_path):
    with pytest.raises(ValueError, match="ModelCheckpoint: unknown mode 'maximum'"):
        ModelCheckpoint(mode="maximum")
    with pytest.raises(ValueError, match="save_top_k must be an int >= -1"):
        ModelCheckpoint(save_top_k=-2)
    with pytest.raises(ValueError, match="every_n_rounds must be an int >= 1"):
        ModelCheckpoint(every_n_rounds=0)
    probe = make_trainer(tmp_path, logger=False)
    trainer = make_trainer(tmp_path, callbacks=[ModelCheckpoint(dirpath=probe.checkpoint_path.parent)])
    with pytest.raises(ValueError, match="over the run's resume checkpoint"):
        trainer.fit(TinyNet(), make_dm())


def test_resume_keeps_the_ranking_and_finds_the_resume_file(tmp_path):
    """A run stopped after round 2 and resumed with ``ckpt_path="last"`` ranks like one run straight through."""
    scores = [0.5, 0.9, 0.2, 0.7, 0.95]

    def run(rounds: int, root: Path, ckpt_path: str | None = None) -> ModelCheckpoint:
        checkpoint = ModelCheckpoint(monitor="feed/score", save_top_k=2)
        trainer = make_trainer(root, rounds=rounds, logger=None, callbacks=[Feed(scores), checkpoint],
                               seed_everything=True)  # TinyNet below: the same init in both runs
        trainer.fit(TinyNet(), make_dm(), ckpt_path=ckpt_path)
        return checkpoint

    straight = run(5, tmp_path / "straight")
    first = run(2, tmp_path / "resumed")
    os.utime(first.last_model_path)  # the models folder's last.ckpt is the newest file: still not the resume file
    resumed = run(5, tmp_path / "resumed", ckpt_path="last")

    def names(c: ModelCheckpoint) -> set[str]:
        return {Path(p).name for p in c.best_k_models}

    assert names(resumed) == names(straight) == {"round=1-feed_score=0.9000.ckpt", "round=4-feed_score=0.9500.ckpt"}
    assert resumed.best_model_score == straight.best_model_score == 0.95
    folder = Path(resumed.best_model_path).parent
    assert _files(folder) == names(straight) | {"last.ckpt"}, "the ranking restored on resume deletes round 0's file"
    straight_best = torch.load(straight.best_model_path, weights_only=True)["state_dict"]
    resumed_best = torch.load(resumed.best_model_path, weights_only=True)["state_dict"]
    assert all(torch.equal(straight_best[k], resumed_best[k]) for k in straight_best)


def test_without_a_monitor_the_newest_files_are_kept_and_a_nan_round_ranks_last(tmp_path):
    newest = ModelCheckpoint(dirpath=tmp_path / "newest", monitor=None, save_top_k=2, save_last=False)
    make_trainer(tmp_path, rounds=4, callbacks=[newest]).fit(TinyNet(), make_dm())
    assert _files(tmp_path / "newest") == {"round=2.ckpt", "round=3.ckpt"}
    assert Path(newest.best_model_path).name == "round=3.ckpt"

    scores = [0.4, float("nan"), 0.3]
    ranked = ModelCheckpoint(dirpath=tmp_path / "nan", monitor="feed/score", save_top_k=2, save_last=False)
    make_trainer(tmp_path, rounds=3, callbacks=[Feed(scores), ranked]).fit(TinyNet(), make_dm())
    assert _files(tmp_path / "nan") == {"round=0-feed_score=0.4000.ckpt", "round=2-feed_score=0.3000.ckpt"}
