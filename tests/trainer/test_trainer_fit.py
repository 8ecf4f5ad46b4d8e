"""FederatedTrainer end to end on tiny data: the round loop, FedAvg = local training, seeding, final weights."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tests.helpers import TinyNet, fedavg, flat_params, make_dm, make_trainer, metrics_without_time

import fl_lightning.engines.sequential as sequential
from fl_lightning import AggregationResult, Aggregator, RoundContext
from fl_lightning.attacks import LabelFlip
from fl_lightning.seeding import derive_seed


def test_two_rounds_then_test_returns_flat_metrics(tmp_path):
    trainer = make_trainer(tmp_path, rounds=2)
    module = TinyNet()
    trainer.fit(module, make_dm())
    assert [r.round for r in trainer.history] == [0, 1]
    assert all(r.client_ids == [0, 1, 2, 3] and not r.dropped for r in trainer.history)
    results = trainer.test()
    assert set(results) == {"test/acc", "test/loss"}
    assert all(isinstance(v, float) for v in results.values())
    assert 0.0 <= results["test/acc"] <= 1.0 and results["test/loss"] > 0
    # the module holds the last global model, so test() repeats the last round's evaluation
    assert results["test/acc"] == trainer.history[-1].metrics["test/acc"]
    assert results["test/loss"] == trainer.history[-1].metrics["test/loss"]


def test_test_with_label_flip_adds_attack_and_defense_metrics(tmp_path):
    trainer = make_trainer(tmp_path, rounds=2, attacks=[LabelFlip(source=1, target=2, clients=1, extra_epochs=1)])
    trainer.fit(TinyNet(), make_dm())
    results = trainer.test()
    assert set(results) == {"test/acc", "test/loss", "attack/asr", "defense/precision", "defense/recall"}
    assert all(isinstance(v, float) and 0.0 <= v for v in results.values())
    assert 0.0 <= results["attack/asr"] <= 1.0


def test_test_before_fit_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="fit"):
        make_trainer(tmp_path).test()


def _local_sgd(module, data, seeds, epochs, batch_size, max_batches):
    """Plain local training written out by hand: the engine's batch order, fresh SGD per round."""
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        optimizer = torch.optim.SGD(module.parameters(), lr=module.hparams.lr, momentum=module.hparams.momentum)
        module.train()
        for _ in range(epochs):
            order = torch.randperm(len(data), generator=generator)
            for batch_idx, start in enumerate(range(0, len(data), batch_size)):
                if batch_idx >= max_batches:
                    break
                index = order[start:start + batch_size]
                loss = F.cross_entropy(module(data.inputs[index]), data.targets[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return module


def test_fedavg_with_one_client_equals_plain_local_training(tmp_path):
    seed, rounds, epochs = 7, 2, 2
    trainer = make_trainer(tmp_path, rounds=rounds, local_epochs=epochs, seed=seed, max_batches_per_epoch=4,
                           aggregator=fedavg())
    module = TinyNet()
    reference = copy.deepcopy(module)
    dm = make_dm(num_clients=1)
    trainer.fit(module, dm)
    seeds = [derive_seed(seed, "train", r, 0) for r in range(rounds)]
    _local_sgd(reference, dm.clients[0], seeds, epochs, batch_size=16, max_batches=4)
    assert not torch.equal(flat_params(reference), flat_params(copy.deepcopy(TinyNet())))
    # global + (local - global) is the local model up to float32 rounding
    torch.testing.assert_close(flat_params(module), flat_params(reference), rtol=0, atol=1e-6)


class _UpdateSpy(Aggregator):
    """FedAvg that records each round's updates and the global weights they were taken from."""

    def __init__(self):
        self.inner = fedavg()
        self.seen = []

    def aggregate(self, updates, ctx: RoundContext) -> AggregationResult:
        self.seen.append((updates.clone(), ctx.global_params.clone(), list(ctx.client_ids)))
        return self.inner.aggregate(updates, ctx)


def test_every_client_starts_from_the_global_weights(tmp_path, monkeypatch):
    starts, ends = [], []
    real_train_client = sequential.train_client

    def spy(module, task, *guard):
        starts.append((task.client_id, flat_params(module).clone()))
        loss = real_train_client(module, task, *guard)
        ends.append(flat_params(module).clone())
        return loss

    monkeypatch.setattr(sequential, "train_client", spy)
    aggregator = _UpdateSpy()
    trainer = make_trainer(tmp_path, rounds=3, clients_per_round=3, aggregator=aggregator)
    module = TinyNet()
    trainer.fit(module, make_dm(num_clients=5))
    assert len(starts) == 9 and len(aggregator.seen) == 3
    for r, (updates, global_params, client_ids) in enumerate(aggregator.seen):
        for k, client_id in enumerate(client_ids):
            started_id, start = starts[3 * r + k]
            assert started_id == client_id
            assert torch.equal(start, global_params), f"round {r}: client {client_id} did not start from global"
            assert torch.equal(updates[k], ends[3 * r + k] - global_params)
    # rounds build on each other: round r+1 starts from round r's aggregate
    for r in range(2):
        updates, global_params, _ = aggregator.seen[r]
        torch.testing.assert_close(aggregator.seen[r + 1][1], global_params + updates.mean(0), rtol=0, atol=1e-6)
    assert torch.equal(flat_params(module), trainer.global_params)


def _run(tmp_path, seed, **kwargs):
    trainer = make_trainer(tmp_path, rounds=2, seed=seed, clients_per_round=3, seed_everything=True,
                           attacks=[LabelFlip(source=1, target=2, clients=1, extra_epochs=1)], **kwargs)
    module = TinyNet(dropout=0.2)  # built after the trainer, which seeds the global generators (opt-in)
    trainer.fit(module, make_dm(num_clients=5))
    return trainer, module


def test_same_seed_same_metrics_different_seed_different(tmp_path):
    first, m1 = _run(tmp_path / "a", seed=3)
    second, m2 = _run(tmp_path / "b", seed=3)
    other, m3 = _run(tmp_path / "c", seed=4)
    assert metrics_without_time(first.history) == metrics_without_time(second.history)
    assert [r.client_ids for r in first.history] == [r.client_ids for r in second.history]
    assert torch.equal(flat_params(m1), flat_params(m2))
    assert first.test() == second.test()
    assert metrics_without_time(first.history) != metrics_without_time(other.history)
    assert not torch.equal(flat_params(m1), flat_params(m3))


def test_attackers_are_drawn_deterministically_from_the_seed(tmp_path):
    dm_kwargs = dict(num_clients=8, partition="classes", classes_per_client=2)
    holders_of_1: set[int] = set()

    def attackers(seed):
        attack = LabelFlip(source=1, target=2, clients=2, extra_epochs=0)
        trainer = make_trainer(tmp_path / f"s{seed}", rounds=1, seed=seed, max_batches_per_epoch=1, attacks=[attack])
        dm = make_dm(**dm_kwargs)
        trainer.fit(TinyNet(), dm)
        holders_of_1.update(c for c, data in enumerate(dm.clients) if (data.targets == 1).any())
        assert trainer.hparams()["attack/LabelFlip/attacker_ids"] == ",".join(map(str, attack.attacker_ids))
        return attack.attacker_ids

    drawn = {seed: attackers(seed) for seed in range(4)}
    assert attackers(2) == drawn[2]
    assert all(len(ids) == 2 and set(ids) <= holders_of_1 for ids in drawn.values())
    assert len(set(drawn.values())) > 1, f"the seed does not change the attackers: {drawn}"


def test_module_holds_final_global_weights_after_fit(tmp_path):
    trainer = make_trainer(tmp_path, rounds=2)
    module = TinyNet()
    initial = flat_params(module).clone()
    trainer.fit(module, make_dm())
    assert not torch.equal(flat_params(module), initial)
    assert torch.equal(flat_params(module), trainer.global_params)
    saved = torch.load(trainer.checkpoint_path, weights_only=True)
    assert torch.equal(saved["global_params"], flat_params(module))
