"""Bad input fails early with a message naming the culprit; BatchNorm buffers follow their own rules."""
from __future__ import annotations

import pytest
import torch
from tests.helpers import Blobs, TinyNet, fedavg, flat_params, make_dm, make_trainer

import fl_lightning.engines.sequential as sequential
from fl_lightning import AggregationResult, Aggregator, FederatedDataModule
from fl_lightning.data import PARTITIONS
from fl_lightning.engines import SequentialEngine
from fl_lightning.param_layout import ParamLayout


def test_more_clients_per_round_than_clients(tmp_path):
    trainer = make_trainer(tmp_path, clients_per_round=5)
    with pytest.raises(ValueError, match=r"clients_per_round=5 is more than the 4 clients"):
        trainer.fit(TinyNet(), make_dm(num_clients=4))


def test_unknown_partition_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown partition 'shards'") as info:
        FederatedDataModule(Blobs(), num_clients=4, partition="shards")
    for name in PARTITIONS:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("bad", ["short", "matrix", "weights"])
def test_aggregator_returning_a_wrong_shape_is_named(tmp_path, bad):
    class Broken(Aggregator):
        def aggregate(self, updates, ctx):
            if bad == "short":
                return AggregationResult(updates.mean(0)[:-1])
            if bad == "matrix":
                return AggregationResult(updates.mean(0, keepdim=True))
            return AggregationResult(updates.mean(0), torch.full((len(updates) + 1,), 0.2))

    trainer = make_trainer(tmp_path, aggregator=Broken())
    with pytest.raises(ValueError, match=r"Broken\.aggregate returned .*shape"):
        trainer.fit(TinyNet(), make_dm())


def test_aggregator_returning_something_else_is_named(tmp_path):
    class NotAResult(Aggregator):
        def aggregate(self, updates, ctx):
            return updates.mean(0)

    with pytest.raises(TypeError, match="NotAResult.aggregate must return an AggregationResult"):
        make_trainer(tmp_path, aggregator=NotAResult()).fit(TinyNet(), make_dm())


def test_training_step_returning_nothing_skips_the_batch_with_a_warning(tmp_path):
    class Silent(TinyNet):
        def training_step(self, batch, batch_idx):
            self.loss(self(batch[0]), batch[1])

    module = Silent()
    start = flat_params(module).clone()
    with pytest.warns(UserWarning, match="Silent.training_step returned None: the batch is skipped"):
        make_trainer(tmp_path).fit(module, make_dm())
    assert torch.equal(flat_params(module), start), "as in Lightning, a None step trains nothing"


@pytest.mark.parametrize("field,value", [("rounds", -1), ("rounds", 0), ("local_epochs", -1), ("batch_size", 0),
                                         ("clients_per_round", 0), ("max_failed_rounds", 0), ("seed", -1),
                                         ("seed", 2**70)])
def test_bad_scalar_settings_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"FederatedTrainer: {field} must be an int"):
        make_trainer(tmp_path, **{field: value})


@pytest.mark.parametrize("field,value", [("rounds", 2.5), ("seed", "abc"), ("batch_size", True),
                                         ("enable_progress_bar", 1), ("seed_everything", "yes")])
def test_wrongly_typed_settings_are_type_errors_naming_the_field(tmp_path, field, value):
    with pytest.raises(TypeError, match=f"FederatedTrainer: {field} must be"):
        make_trainer(tmp_path, **{field: value})


@pytest.mark.parametrize("field,value", [("callbacks", [object()]), ("callbacks", object()), ("engine", 3),
                                         ("logger", "tensorboard")])
def test_plug_ins_of_the_wrong_kind_are_refused_at_construction(tmp_path, field, value):
    with pytest.raises(TypeError, match=f"FederatedTrainer: {field} must be"):
        make_trainer(tmp_path, **{field: value})


def test_non_aggregator_and_non_attack_are_refused(tmp_path):
    with pytest.raises(TypeError, match="aggregator must be"):
        make_trainer(tmp_path, aggregator=lambda u, ctx: u.mean(0))
    with pytest.raises(TypeError, match="attacks must be"):
        make_trainer(tmp_path, attacks=["LabelFlip"])
    with pytest.raises(TypeError, match="LightningModule"):
        make_trainer(tmp_path).fit(torch.nn.Linear(2, 2), make_dm())


class _RecordingEngine(SequentialEngine):
    """The sequential engine, keeping a copy of every round's inputs and client outputs."""

    def __init__(self):
        self.rounds = []

    def train_round(self, global_params, global_buffers, tasks, out_params, out_buffers):
        outcomes = super().train_round(global_params, global_buffers, tasks, out_params, out_buffers)
        self.rounds.append({"global_buffers": global_buffers.clone(), "buffers": out_buffers[:len(tasks)].clone(),
                            "num_samples": torch.tensor([float(len(t.data)) for t in tasks])})
        return outcomes


def test_batchnorm_layout():
    layout = ParamLayout.from_module(TinyNet(batchnorm=True))
    # BatchNorm's affine weight and bias are parameters; its running statistics are not
    assert [s.name for s in layout.params] == ["net.1.weight", "net.1.bias", "net.2.weight", "net.2.bias",
                                               "net.4.weight", "net.4.bias"]
    assert [s.name for s in layout.buffers] == ["net.2.running_mean", "net.2.running_var"]
    assert layout.num_buffers == 16
    assert layout.int_buffers == ("net.2.num_batches_tracked",)


def test_batchnorm_buffers_averaged_by_sample_count_and_counter_kept_from_global(tmp_path, monkeypatch):
    counters = []
    real_train_client = sequential.train_client

    def spy(module, task, *guard):
        counters.append(int(module.net[2].num_batches_tracked))
        return real_train_client(module, task, *guard)

    monkeypatch.setattr(sequential, "train_client", spy)
    engine = _RecordingEngine()
    trainer = make_trainer(tmp_path, rounds=2, engine=engine, aggregator=fedavg())
    module = TinyNet(batchnorm=True)
    dm = make_dm(num_clients=3, partition="dirichlet", alpha=0.5)
    trainer.fit(module, dm)
    sizes = [len(c) for c in dm.clients]
    assert len(set(sizes)) == 3, f"sample counts must differ for the weighting to matter: {sizes}"
    # the layout split: running stats are buffers, not parameters the aggregator sees
    assert trainer.layout.num_buffers == 16 and trainer.layout.int_buffers == ("net.2.num_batches_tracked",)
    for r, seen in enumerate(engine.rounds):
        assert not torch.equal(seen["buffers"][0], seen["buffers"][1]), "clients must differ"
        expected = (seen["num_samples"][:, None] * seen["buffers"]).sum(0) / seen["num_samples"].sum()
        after = engine.rounds[r + 1]["global_buffers"] if r + 1 < len(engine.rounds) else trainer.global_buffers
        torch.testing.assert_close(after, expected, rtol=0, atol=1e-6)
        assert not torch.allclose(expected, seen["buffers"].mean(0)), "plain mean would pass too"
    bn = module.net[2]
    torch.testing.assert_close(torch.cat([bn.running_mean, bn.running_var]), trainer.global_buffers,
                               rtol=0, atol=0)
    # num_batches_tracked: every client starts from the global value, which no client overwrites
    assert counters == [0] * 6 and int(bn.num_batches_tracked) == 0
    assert torch.equal(flat_params(module), trainer.global_params)
