"""Nothing non-finite enters a run silently: a client's overflowing BatchNorm statistics drop it, finite
updates that sum to an overflowing model keep the previous one (and count as a failed round), a
non-finite metric is reported, and FoolsGold's memory never takes a non-finite row."""
from __future__ import annotations

import warnings

import pytest
import torch
from tests.helpers import TinyNet, make_dm, make_trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fl_lightning import RoundContext
from fl_lightning.aggregators import FedAvg, FoolsGold, ResidualReweight
from tests.reliability.faults import GlobalLog, HugeInputs, SetUpdates, all_finite


def test_client_with_overflowing_batchnorm_statistics_is_dropped_naming_why(tmp_path):
    log = GlobalLog()
    trainer = make_trainer(tmp_path, rounds=2, callbacks=[log], attacks=[HugeInputs(clients=[2], rounds=[1])])
    module = TinyNet(batchnorm=True)
    with pytest.warns(RuntimeWarning, match="client 2 sent non-finite buffers .*BatchNorm running statistics"):
        trainer.fit(module, make_dm(num_clients=4))
    first, second = trainer.history
    assert first.dropped == {} and set(second.dropped) == {2}
    assert "non-finite buffers" in second.dropped[2] and second.metrics["clients/dropped"] == 1.0
    assert not second.kept_previous_model, "the other three clients still make the round"
    assert all_finite(log.params + log.buffers)
    assert all(bool(torch.isfinite(b).all()) for b in module.buffers() if b.is_floating_point())


@pytest.mark.parametrize("aggregator", [FedAvg(), ResidualReweight()], ids=["FedAvg", "ResidualReweight"])
def test_finite_updates_that_overflow_the_global_model_keep_the_previous_one(tmp_path, aggregator):
    log = GlobalLog()
    trainer = make_trainer(tmp_path, rounds=3, max_failed_rounds=5, aggregator=aggregator, callbacks=[log],
                           attacks=[SetUpdates(value=3e38, clients=[0, 1, 2])])
    module = TinyNet()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, make_dm(num_clients=4))
    messages = [str(w.message) for w in caught]
    assert all_finite(log.params + log.buffers), "the global model must never hold NaN or Inf"
    assert torch.isfinite(torch.cat([p.detach().reshape(-1) for p in module.parameters()])).all()
    kept = [r for r in trainer.history if r.kept_previous_model]
    assert kept, "three clients sending 3e38 must overflow the model in some round"
    assert all(r.kept_reason for r in kept)
    overflow = [r for r in kept if "non-finite" in r.kept_reason]
    assert overflow and any("would make the global model's parameters non-finite" in m for m in messages)


def test_rounds_whose_model_would_overflow_count_as_failed_rounds(tmp_path):
    trainer = make_trainer(tmp_path, rounds=6, max_failed_rounds=2,
                           attacks=[SetUpdates(value=3.3e38, clients=[0, 1, 2, 3])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(RuntimeError, match=r"2 consecutive rounds kept the previous global model \(the last "
                                               r"one would have made the global model's parameters non-finite"):
            trainer.fit(TinyNet(), make_dm(num_clients=4))
    assert torch.isfinite(trainer.global_params).all()


def test_a_kept_round_says_why_in_tensorboard(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="run", version="v")
    # round 1 moves the model to ~3.3e38 (finite: its test loss is NaN, reported); round 2 would overflow it
    trainer = make_trainer(tmp_path, rounds=3, max_failed_rounds=5, logger=logger,
                           attacks=[SetUpdates(value=3.3e38, clients=[0, 1, 2, 3], rounds=[1, 2])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer.fit(TinyNet(), make_dm(num_clients=4))
    events = EventAccumulator(str(trainer.log_dir), size_guidance={"tensors": 0})
    events.Reload()
    notes = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("round/problems/text_summary")]
    assert any(n.startswith("round 1: non-finite metrics test/loss") for n in notes), notes
    assert any(n.startswith("round 2: kept the previous global model") and "non-finite" in n for n in notes), notes
    assert [r.kept_previous_model for r in trainer.history] == [False, False, True]


class Overflowing(TinyNet):
    """Logits scaled beyond float32 at evaluation: the test loss is Inf or NaN while the weights are finite."""

    def forward(self, x):
        logits = super().forward(x)
        return logits if self.training else logits * 1e38


def test_non_finite_test_loss_is_reported_not_averaged_silently(tmp_path):
    trainer = make_trainer(tmp_path, rounds=1, seed_everything=True)  # the init below is the seed's
    with pytest.warns(RuntimeWarning, match=r"round 0: non-finite metrics test/loss=(nan|inf)"):
        trainer.fit(Overflowing(), make_dm(num_clients=4))
    assert torch.isfinite(trainer.global_params).all()


def _ctx(ids, n):
    return RoundContext(round=0, client_ids=ids, num_samples=torch.ones(len(ids)), layout=None,
                        global_params=torch.zeros(n), seed=0, num_clients=10)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_foolsgold_memory_never_takes_a_non_finite_row(value):
    rule = FoolsGold()
    updates = torch.randn(4, 6)
    updates[1, 3] = value
    result = rule.aggregate(updates, _ctx([0, 1, 2, 3], 6))
    assert torch.isfinite(result.update).all()
    state = rule.state_dict()
    assert 1 not in state["client_ids"].tolist() and torch.isfinite(state["memory"]).all()
    rule.aggregate(torch.full((4, 6), 3e38), _ctx([0, 1, 2, 3], 6))  # finite but huge, twice in a row
    rule.aggregate(torch.full((4, 6), 3e38), _ctx([0, 1, 2, 3], 6))
    assert torch.isfinite(rule.state_dict()["memory"]).all(), "float64 memory must not overflow on float32 sums"
