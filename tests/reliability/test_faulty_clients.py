"""A client that crashes or sends NaN/Inf is dropped for the round, logged, and the round goes on; too few
usable clients keep the previous global model; only max_failed_rounds failures in a row end the run."""
from __future__ import annotations

import warnings

import pytest
import torch
from tests.helpers import TinyNet, fedavg, flat_params, make_dm, make_trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import fl_lightning.engines.sequential as sequential
from fl_lightning import AggregationResult, Aggregator, Attack, FederatedCallback
from fl_lightning.aggregators import ResidualReweight


class CrashingClients(Attack):
    """Local training of its clients raises (a failing device), in ``rounds`` or every round."""

    def poison_batch(self, client_id, inputs, targets, generator):
        raise RuntimeError(f"sensor failure on device {client_id}")


class BrokenUpdates(Attack):
    """Its clients' updates arrive with NaN or Inf in them."""

    def __init__(self, value=float("nan"), **kwargs):
        super().__init__(**kwargs)
        self.value = value

    def poison_updates(self, updates, ctx):
        for row in self.attacker_rows(ctx):
            updates[row, ::7] = self.value
        return updates


class GlobalLog(FederatedCallback):
    """The global weights after every round."""

    def __init__(self):
        self.after = []

    def on_round_end(self, trainer, record):
        self.after.append(trainer.global_params.clone())


class Spy(Aggregator):
    def __init__(self):
        self.inner = fedavg()
        self.seen = []

    def aggregate(self, updates, ctx):
        self.seen.append((updates.clone(), list(ctx.client_ids)))
        return self.inner.aggregate(updates, ctx)


def test_crashing_client_is_dropped_logged_and_the_round_goes_on(tmp_path, monkeypatch):
    starts = []
    real_train_client = sequential.train_client

    def spy(module, task, *guard):
        starts.append(flat_params(module).clone())
        return real_train_client(module, task, *guard)

    monkeypatch.setattr(sequential, "train_client", spy)
    aggregator, log = Spy(), GlobalLog()
    trainer = make_trainer(tmp_path, rounds=2, logger=None, aggregator=aggregator, callbacks=[log],
                           attacks=[CrashingClients(clients=[1])])
    module = TinyNet()
    initial = flat_params(module).clone()
    with pytest.warns(RuntimeWarning, match="client 1 failed and is dropped this round: "
                                            "RuntimeError: sensor failure on device 1"):
        trainer.fit(module, make_dm(num_clients=4))
    for record in trainer.history:
        assert record.dropped == {1: "RuntimeError: sensor failure on device 1"}
        assert record.metrics["clients/dropped"] == 1.0 and not record.kept_previous_model
        assert record.client_weights.shape == (3,)
    assert [ids for _, ids in aggregator.seen] == [[0, 2, 3], [0, 2, 3]]
    assert not torch.equal(log.after[0], initial) and not torch.equal(log.after[1], log.after[0])
    # the crashed client left nothing behind: clients after it start from the global weights, and the
    # module ends holding the global model
    assert all(torch.equal(s, initial) for s in starts[:4]) and all(torch.equal(s, log.after[0]) for s in starts[4:])
    assert torch.equal(flat_params(module), trainer.global_params)
    events = EventAccumulator(str(trainer.log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("clients/dropped")] == [1.0, 1.0]
    reasons = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("clients/dropped_reasons/text_summary")]
    assert any("client 1" in r and "sensor failure" in r for r in reasons), reasons


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_update_is_dropped_before_aggregation(tmp_path, value):
    aggregator = Spy()
    trainer = make_trainer(tmp_path, rounds=1, aggregator=aggregator,
                           attacks=[BrokenUpdates(value=value, clients=[2])])
    with pytest.warns(RuntimeWarning, match="client 2 sent a non-finite update and is dropped this round"):
        trainer.fit(TinyNet(), make_dm(num_clients=4))
    (record,) = trainer.history
    assert record.dropped == {2: "non-finite update (NaN or Inf)"}
    assert record.metrics["clients/dropped"] == 1.0
    updates, ids = aggregator.seen[0]
    assert ids == [0, 1, 3] and torch.isfinite(updates).all()
    assert torch.isfinite(trainer.global_params).all()


def test_too_few_usable_clients_keep_the_previous_global_model(tmp_path):
    log = GlobalLog()
    trainer = make_trainer(tmp_path, rounds=3, aggregator=ResidualReweight(), callbacks=[log],
                           attacks=[BrokenUpdates(clients=[0, 3], rounds=[1])])
    module = TinyNet()
    with pytest.warns(RuntimeWarning) as caught:
        trainer.fit(module, make_dm(num_clients=4))
    messages = [str(w.message) for w in caught]
    assert "client 0 sent a non-finite update and is dropped this round" in messages
    assert "client 3 sent a non-finite update and is dropped this round" in messages
    assert ("round 1: only 2 usable clients, ResidualReweight needs 3; keeping the previous global model"
            in messages)
    assert [r.kept_previous_model for r in trainer.history] == [False, True, False]
    kept = trainer.history[1]
    assert kept.dropped.keys() == {0, 3} and kept.metrics["clients/dropped"] == 2.0 and kept.client_weights is None
    assert torch.equal(log.after[1], log.after[0])
    assert not torch.equal(log.after[2], log.after[1])
    assert torch.equal(flat_params(module), trainer.global_params)


def test_aggregator_returning_non_finite_update_keeps_the_previous_model(tmp_path):
    class Exploding(Aggregator):
        def aggregate(self, updates, ctx):
            return AggregationResult(torch.full_like(updates[0], float("nan")))

    log = GlobalLog()
    trainer = make_trainer(tmp_path, rounds=1, aggregator=Exploding(), callbacks=[log])
    module = TinyNet()
    initial = flat_params(module).clone()
    with pytest.warns(RuntimeWarning, match="Exploding returned a non-finite update; keeping the previous"):
        trainer.fit(module, make_dm())
    assert trainer.history[0].kept_previous_model
    assert torch.equal(log.after[0], initial) and torch.equal(flat_params(module), initial)


def test_run_fails_after_max_failed_rounds_in_a_row(tmp_path):
    trainer = make_trainer(tmp_path, rounds=5, max_failed_rounds=2, aggregator=ResidualReweight(),
                           attacks=[CrashingClients(clients=[1, 2])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(RuntimeError, match=r"2 consecutive rounds kept the previous global model \(the "
                                               r"last one had too few usable clients for ResidualReweight\); "
                                               r"last round's dropped clients: .*sensor failure"):
            trainer.fit(TinyNet(), make_dm(num_clients=4))
    assert [r.round for r in trainer.history] == [0, 1]


def test_failures_that_are_not_consecutive_do_not_end_the_run(tmp_path):
    trainer = make_trainer(tmp_path, rounds=4, max_failed_rounds=2, aggregator=ResidualReweight(),
                           attacks=[CrashingClients(clients=[1, 2], rounds=[0, 2])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer.fit(TinyNet(), make_dm(num_clients=4))
    assert [r.kept_previous_model for r in trainer.history] == [True, False, True, False]
    assert [len(r.dropped) for r in trainer.history] == [2, 0, 2, 0]


def test_a_module_raising_on_one_clients_batch_drops_only_that_client(tmp_path):
    class Fragile(TinyNet):
        """Fails on any batch holding a sample with this exact value, like a corrupt record."""

        poison = None

        def training_step(self, batch, batch_idx):
            if (batch[0] == self.poison).any():
                raise ValueError("corrupt record")
            return super().training_step(batch, batch_idx)

    dm = make_dm(num_clients=4)
    dm.setup()
    Fragile.poison = float(dm.clients[3].inputs.reshape(-1)[0])
    trainer = make_trainer(tmp_path, rounds=1, aggregator=fedavg())
    with pytest.warns(RuntimeWarning, match="client 3 failed .*ValueError: corrupt record"):
        trainer.fit(Fragile(), dm)
    assert trainer.history[0].dropped == {3: "ValueError: corrupt record"}


def test_attacks_reading_other_rows_never_see_a_failed_clients_row(tmp_path):
    from fl_lightning.attacks import IPM

    aggregator = Spy()
    trainer = make_trainer(tmp_path, rounds=2, aggregator=aggregator,
                           attacks=[CrashingClients(clients=[1]), IPM(epsilon=0.5, clients=[3])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer.fit(TinyNet(), make_dm(num_clients=4))
    for updates, ids in aggregator.seen:
        assert ids == [0, 2, 3]
        # IPM sends -epsilon x the mean of the clients that actually trained, not of a stale buffer row
        torch.testing.assert_close(updates[2], -0.5 * updates[:2].mean(0), rtol=0, atol=1e-7)
