"""Stateful clients: worker momentum, kept optimizer state and FedProx, each checked against a hand computation."""
from __future__ import annotations

import pytest
import torch
from tests.helpers import MeanAggregator, TinyNet, make_dm, make_trainer

from fl_lightning import FederatedTrainer
from fl_lightning.attacks.base import ModelPoisoningAttack
from fl_lightning.engines import SequentialEngine
from fl_lightning.trainer.client_state import MOMENTUM, ClientStates

BETA = 0.75


class RecordingEngine(SequentialEngine):
    """The sequential engine, recording each round's raw updates (local - global) by client."""

    def __init__(self) -> None:
        super().__init__(num_threads=1)
        self.raw: list[dict[int, torch.Tensor]] = []

    def train_round(self, global_params, global_buffers, tasks, out_params, out_buffers):
        outcomes = super().train_round(global_params, global_buffers, tasks, out_params, out_buffers)
        self.raw.append({t.client_id: (out_params[k] - global_params).clone() for k, t in enumerate(tasks)})
        return outcomes


class Spy(ModelPoisoningAttack):
    """Sends its own row unchanged; records the honest rows it was shown."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen: dict[int, dict[int, torch.Tensor]] = {}

    def craft(self, honest, own, ctx):
        self.seen[ctx.round] = {cid: row.clone() for cid, row in zip(ctx.client_ids, honest)}
        return own


class RecordingMean(MeanAggregator):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[int, torch.Tensor]] = []

    def aggregate(self, updates, ctx):
        self.received.append({cid: row.clone() for cid, row in zip(ctx.client_ids, updates)})
        return super().aggregate(updates, ctx)


def test_client_momentum_by_hand(tmp_path, one_thread):
    """m_t = b m_(t-1) + (1 - b) U_t per client from m = 0; a client skipping rounds keeps its momentum;
    the aggregator and an omniscient attack both get the momentum rows."""
    engine, aggregator, spy = RecordingEngine(), RecordingMean(), Spy(clients=[0])
    trainer = make_trainer(tmp_path, rounds=5, clients_per_round=2, max_batches_per_epoch=2, engine=engine,
                           aggregator=aggregator, attacks=[spy], client_momentum=BETA, checkpoint_every=0)
    trainer.fit(TinyNet(), make_dm(num_clients=4))
    momentum: dict[int, torch.Tensor] = {}
    skipped_then_back = False
    for r, raw in enumerate(engine.raw):
        for cid, update in raw.items():
            if cid in momentum and all(cid not in engine.raw[q] for q in range(max(0, r - 1), r)):
                skipped_then_back = True
            momentum[cid] = BETA * momentum.get(cid, torch.zeros_like(update)) + (1 - BETA) * update
            torch.testing.assert_close(aggregator.received[r][cid], momentum[cid], rtol=1e-5, atol=1e-7)
        for cid, row in spy.seen.get(r, {}).items():
            torch.testing.assert_close(row, momentum[cid], rtol=1e-5, atol=1e-7)
    assert skipped_then_back, "the draw should make some client skip a round and come back"
    assert any(spy.seen), "the attacker should have been selected at least once"
    assert set(int(c) for c in trainer.client_states.state_dict()["clients"]) == set(momentum)
    for cid, m in momentum.items():
        torch.testing.assert_close(trainer.client_states.get(cid, MOMENTUM), m, rtol=1e-5, atol=1e-7)


def _hand_steps(module, dm, steps, lr, momentum, mu=0.0, reset_each=None):
    """Full-batch SGD on the client's data, optionally with the proximal term around each round's start."""
    data = dm.clients[0]
    x, y = data.inputs, data.targets
    params = list(module.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    anchor = [p.detach().clone() for p in params]
    for step in range(steps):
        if reset_each and step % reset_each == 0:
            optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
            anchor = [p.detach().clone() for p in params]
        loss = module.training_step((x, y), 0)
        if mu:
            loss = loss + 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.cat([p.detach().reshape(-1) for p in params])


ENGINES = ["sequential", "vmap", "lightning"]


def _engine(name):
    if name == "lightning":
        from fl_lightning.engines import LightningEngine

        return LightningEngine(num_threads=1)
    if name == "vmap":
        from fl_lightning.engines import VmapEngine

        return VmapEngine()
    return SequentialEngine(num_threads=1)


def _same_start(seed: int, count: int, **kwargs) -> list[TinyNet]:
    """``count`` TinyNets holding the weights of one drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    start = TinyNet(**kwargs)
    copies = [TinyNet(**kwargs) for _ in range(count)]
    for module in copies:
        module.load_state_dict(start.state_dict())
    return copies


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("engine", ENGINES)
def test_kept_optimizer_state_continues_local_momentum(tmp_path, engine, one_thread):
    """With one client and one step a round, keep_optimizer_state makes the rounds one SGD-momentum run;
    without it, the momentum restarts every round."""
    dm = make_dm(num_clients=1)
    kept_module, fresh_module, hand_module = _same_start(3, 3, lr=0.1, momentum=0.9)
    kept = make_trainer(tmp_path / "kept", rounds=4, batch_size=256, engine=_engine(engine), checkpoint_every=0,
                        aggregator=MeanAggregator(), keep_optimizer_state=True, seed_everything=False)
    kept.fit(kept_module, dm)
    fresh = make_trainer(tmp_path / "fresh", rounds=4, batch_size=256, engine=_engine(engine), checkpoint_every=0,
                         aggregator=MeanAggregator(), seed_everything=False)
    fresh.fit(fresh_module, dm)
    dm.setup()
    expected = _hand_steps(hand_module, dm, 4, lr=0.1, momentum=0.9)
    torch.testing.assert_close(kept.global_params, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(fresh.global_params, expected, rtol=1e-4, atol=1e-6)
    state = kept.client_states.get(0, "optimizer")
    assert state is not None and all(t.device.type == "cpu" for s in state[0].values()
                                     for t in s.values() if isinstance(t, torch.Tensor))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("engine", ENGINES)
def test_fedprox_by_hand(tmp_path, engine, one_thread):
    """Two full-batch steps a round, three rounds: mu/2 ||w - w_round_start||^2 joins every step's loss."""
    mu = 2.0
    dm = make_dm(num_clients=1)
    trained, hand, plain = _same_start(5, 3, lr=0.1, momentum=0.0)
    trainer = make_trainer(tmp_path / "prox", rounds=3, local_epochs=2, batch_size=256, engine=_engine(engine),
                           checkpoint_every=0, aggregator=MeanAggregator(), proximal_mu=mu, seed_everything=False)
    trainer.fit(trained, dm)
    dm.setup()
    expected = _hand_steps(hand, dm, 6, lr=0.1, momentum=0.0, mu=mu, reset_each=2)
    torch.testing.assert_close(trainer.global_params, expected, rtol=1e-4, atol=1e-6)
    without = _hand_steps(plain, dm, 6, lr=0.1, momentum=0.0)
    assert not torch.allclose(without, expected, rtol=1e-4, atol=1e-6)


def test_ray_refuses_kept_optimizer_state():
    pytest.importorskip("ray", reason="the [ray] extra")
    from fl_lightning.engines import RayEngine

    with pytest.raises(ValueError, match="keep_optimizer_state=True needs an engine.*RayEngine"):
        FederatedTrainer(engine=RayEngine(), keep_optimizer_state=True, logger=False)


@pytest.mark.parametrize("kwargs,match", [({"client_momentum": 1.0}, "client_momentum must be"),
                                          ({"proximal_mu": -0.1}, "proximal_mu must be"),
                                          ({"client_state_max_mb": -1}, "client_state_max_mb must be"),
                                          ({"server_optimizer": 3}, "server_optimizer must be")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        FederatedTrainer(logger=False, **kwargs)


def test_states_spill_to_disk_beyond_the_limit_and_come_back(tmp_path):
    states = ClientStates(max_memory_mb=10_000 / 2 ** 20, spill_dir=tmp_path)  # 10 kB: two clients of 4 kB
    values = {cid: torch.randn(1000) for cid in range(5)}
    for cid, value in values.items():
        states.put(cid, MOMENTUM, value)
    assert states.memory_bytes <= 10_000 and len(states.spilled) == 3 and len(states) == 5
    assert len(list(tmp_path.rglob("client_*.pt"))) == 3
    saved = states.state_dict()
    for cid, value in values.items():
        assert torch.equal(states.get(cid, MOMENTUM), value)
    assert states.memory_bytes <= 10_000
    restored = ClientStates()
    restored.load_state_dict(saved)
    assert all(torch.equal(restored.get(cid, MOMENTUM), v) for cid, v in values.items())
    states.clear()
    assert not list(tmp_path.rglob("client_*.pt")) and len(states) == 0
