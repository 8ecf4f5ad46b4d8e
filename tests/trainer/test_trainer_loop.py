"""The round loop's contracts with its plug-ins: set-up, the finite scan, callbacks before logging, the progress
bar as a callback, explicit global seeding and the server's reference update for rules with root data."""
from __future__ import annotations

import random

import pytest
import torch
from tests.helpers import MeanAggregator, TinyNet, make_dm, make_trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fl_lightning import FederatedCallback, FederatedTrainer
from fl_lightning.callbacks import ClassAccuracy, RoundProgressBar
from fl_lightning.context import LocalConfig
from fl_lightning.data.base import TensorData
from fl_lightning.engines import ClientTask, SequentialEngine
from fl_lightning.param_layout import ParamLayout, flatten, module_tensors
from fl_lightning.seeding import derive_seed


class Recording(MeanAggregator):
    """Remembers its set-up context and every round's context."""

    def __init__(self, root_samples: int = 0) -> None:
        super().__init__()
        self.root_samples = root_samples
        self.setup_ctx, self.contexts = None, []

    def setup(self, ctx) -> None:
        self.setup_ctx = ctx
        self.validate(ctx.clients_per_round)

    def aggregate(self, updates, ctx):
        self.contexts.append(ctx)
        return super().aggregate(updates, ctx)


def test_aggregator_is_set_up_once_and_gets_the_finite_mask(tmp_path):
    aggregator = Recording()
    trainer = make_trainer(tmp_path, rounds=2, clients_per_round=3, aggregator=aggregator)
    trainer.fit(TinyNet(), make_dm())
    assert aggregator.setup_ctx.clients_per_round == 3
    assert aggregator.setup_ctx.input_shape == (1, 8, 8) and aggregator.setup_ctx.layout is trainer.layout
    assert len(aggregator.contexts) == 2
    assert all(ctx.finite is not None and ctx.finite.all() and len(ctx.finite) == 3 for ctx in aggregator.contexts)
    assert all(ctx.reference_update is None for ctx in aggregator.contexts)


def test_callback_metrics_are_logged_with_the_round(tmp_path):
    trainer = make_trainer(tmp_path, rounds=2, logger=None, callbacks=[ClassAccuracy(classes=[1])])
    trainer.fit(TinyNet(), make_dm())
    events = EventAccumulator(str(trainer.log_dir), size_guidance={"scalars": 0})
    events.Reload()
    logged = [e.value for e in events.Scalars("test/acc_class1")]
    assert logged == pytest.approx([r.metrics["test/acc_class1"] for r in trainer.history])
    for tag in ("clients/train_loss", "clients/seconds"):
        assert [e.step for e in events.Scalars(tag)] == [0, 1], tag
    assert all(r.metrics["clients/train_loss"] > 0 for r in trainer.history)


def test_progress_bar_is_a_default_callback_that_a_user_may_replace(tmp_path):
    assert any(isinstance(c, RoundProgressBar) for c in make_trainer(tmp_path, enable_progress_bar=True).callbacks)
    assert not any(isinstance(c, RoundProgressBar) for c in make_trainer(tmp_path).callbacks)

    class CountingBar(RoundProgressBar):
        rounds = 0

        def on_round_logged(self, trainer, record):
            CountingBar.rounds += 1

    bar = CountingBar()
    trainer = make_trainer(tmp_path, rounds=2, enable_progress_bar=True, callbacks=[bar])
    assert [c for c in trainer.callbacks if isinstance(c, RoundProgressBar)] == [bar]
    trainer.fit(TinyNet(), make_dm())
    assert CountingBar.rounds == 2


def test_global_generators_are_seeded_only_when_asked(tmp_path):
    random.seed(123)
    expected = random.random()
    random.seed(123)
    FederatedTrainer(seed=5, logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    assert random.random() == expected, "seed_everything is opt-in (False by default), as in Lightning"
    make_trainer(tmp_path, seed=5, seed_everything=True)
    first = torch.rand(3)
    make_trainer(tmp_path, seed=5, seed_everything=True)
    assert torch.equal(torch.rand(3), first), "a module built after the trainer must see the same draws"


def test_round_end_callbacks_see_the_record_before_it_is_logged(tmp_path):
    order = []

    class Spy(FederatedCallback):
        def on_round_end(self, trainer, record):
            order.append(("end", "test/acc" in record.metrics))
            record.metrics["spy/value"] = 1.0

        def on_round_logged(self, trainer, record):
            order.append(("logged", record.metrics["spy/value"]))

    trainer = make_trainer(tmp_path, rounds=1, callbacks=[Spy()])
    trainer.fit(TinyNet(), make_dm())
    assert order == [("end", True), ("logged", 1.0)]


def test_datamodule_without_a_root_set_is_refused_for_a_rule_that_needs_one(tmp_path):
    dm = make_dm()

    class WithoutRoot(type(dm)):  # a user's subclass whose setup() cannot hold out a root set
        def setup(self) -> None:
            super().setup()

    dm.__class__ = WithoutRoot
    trainer = make_trainer(tmp_path, aggregator=Recording(root_samples=10))
    with pytest.raises(TypeError, match="does not take root_samples"):
        trainer.fit(TinyNet(), dm)


def test_server_reference_update_is_trained_on_the_root_set(tmp_path):
    dm = make_dm()

    class WithRoot(type(dm)):
        def setup(self, root_samples: int = 0) -> None:
            super().setup()
            if root_samples:  # later plain setup() calls (fingerprint) keep the root set
                self.root = self.clients[0].subset(torch.arange(root_samples))

    dm.__class__ = WithRoot
    aggregator = Recording(root_samples=10)
    trainer = make_trainer(tmp_path, rounds=1, aggregator=aggregator)
    module = TinyNet()
    initial = TinyNet()
    initial.load_state_dict(module.state_dict())
    trainer.fit(module, dm)
    (ctx,) = aggregator.contexts
    assert ctx.reference_update is not None and len(dm.root) == 10
    # the same update, trained by hand from the initial weights on the root set with the server's seed
    layout = ParamLayout.from_module(initial)
    engine = SequentialEngine()
    engine.setup(initial, layout)
    start = flatten(module_tensors(initial, layout.params, "params"))
    out = torch.empty(1, layout.num_params)
    task = ClientTask(-1, dm.root, LocalConfig(epochs=1, batch_size=16), seed=derive_seed(0, "server", 0))
    engine.train_round(start, torch.empty(0), [task], out, torch.empty(1, 0))
    assert torch.allclose(ctx.reference_update, out[0] - start)
    assert isinstance(dm.root, TensorData)
