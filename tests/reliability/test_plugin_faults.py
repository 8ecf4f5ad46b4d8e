"""Random fault injection (hypothesis), second campaign: module hooks that change the model's tensors during
training, and attacks or aggregators that write in place into what they were lent (issue 20, items 6 and 8).

Whatever the fault: a change in one client drops that client and the run goes on with a repaired module; the
same change in every client stops the fit naming the hook; an in-place write fails naming the plug-in, with
the global model and the last checkpoint as the last good round left them. ``FL_FAULT_EXAMPLES=200`` runs a
longer campaign than the 14 examples CI draws."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fl_lightning.checkpoint as ckpt
from fl_lightning import Attack
from fl_lightning.aggregators import FedAvg
from tests.helpers import TinyNet, make_dm, make_trainer
from tests.reliability.faults import GlobalLog, all_finite

ROUNDS, CLIENTS = 3, 3
HOOKS = ("configure_optimizers", "on_train_start", "training_step", "on_train_epoch_end")
CHANGES = ("replace", "resize", "add", "retype")


class FaultyNet(TinyNet):
    """TinyNet whose ``hook`` applies ``change`` in the clients ``targets`` (numbered in training order)."""

    def __init__(self, hook: str, change: str, targets: set[int]) -> None:
        super().__init__()
        self.fault = (hook, change, frozenset(targets))
        self.optimizer_calls = 0

    def _client(self) -> int:
        return self.optimizer_calls - 3  # fit() builds it twice at set-up (run schedule, engine check), then per client

    def _maybe_fault(self, hook: str) -> None:
        fault_hook, change, targets = self.fault
        if hook != fault_hook or self._client() not in targets:
            return
        head = self.net[-1]
        if change == "replace":
            head.weight = nn.Parameter(head.weight.detach().clone())
        elif change == "resize":
            head.bias.data = torch.cat([head.bias.data, head.bias.data[:1]])
        elif change == "add":
            self.register_buffer("extra_state", torch.zeros(3))
        else:
            head.double()

    def configure_optimizers(self):
        self.optimizer_calls += 1
        optimizer = super().configure_optimizers()
        self._maybe_fault("configure_optimizers")
        return optimizer

    def on_train_start(self) -> None:
        self._maybe_fault("on_train_start")

    def training_step(self, batch, batch_idx):
        self._maybe_fault("training_step")
        return super().training_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        self._maybe_fault("on_train_epoch_end")


class WritesInPlace(Attack):
    """At its rounds, writes in place into an honest row (returning a copy or the input) or the global model."""

    def __init__(self, target: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.target = target

    def poison_updates(self, updates, ctx):
        own = self.attacker_rows(ctx)
        if self.target == "global":
            ctx.global_params.mul_(float("nan"))
            return updates
        honest = next(r for r in range(len(updates)) if r not in own)
        updates[honest].add_(1.0)
        return updates.clone() if self.target == "honest_copy" else updates


class WritingAggregator(FedAvg):
    """FedAvg that, from round ``round_idx`` on, writes in place into one of its inputs."""

    def __init__(self, target: str, round_idx: int) -> None:
        super().__init__()
        self.target, self.round_idx = target, round_idx

    def aggregate(self, updates, ctx):
        if ctx.round >= self.round_idx:
            {"updates": updates, "num_samples": ctx.num_samples, "global": ctx.global_params}[self.target].mul_(2.0)
        return super().aggregate(updates, ctx)


def _layout(module: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(n, tuple(t.shape), t.dtype) for n, t in [*module.named_parameters(), *module.named_buffers()]]


module_fault = st.tuples(st.just("module"), st.sampled_from(HOOKS), st.sampled_from(CHANGES),
                         st.booleans(), st.integers(0, ROUNDS - 1), st.integers(0, CLIENTS - 1))
write_fault = st.tuples(st.just("write"),
                        st.sampled_from(["attack:honest_copy", "attack:honest_inplace", "attack:global",
                                         "aggregator:updates", "aggregator:num_samples", "aggregator:global"]),
                        st.integers(0, ROUNDS - 1))


@settings(max_examples=int(os.environ.get("FL_FAULT_EXAMPLES", "14")), deadline=None)
@given(fault=st.one_of(module_fault, write_fault))
def test_random_model_changes_and_plugin_writes_fail_safe(fault) -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropped clients warn
        root, log = Path(tmp), GlobalLog()
        if fault[0] == "module":
            _, hook, change, every_client, round_idx, client = fault
            # every client: from the first client of round_idx on (started mid-round, the round would only
            # drop the clients after it, and the next round would stop the fit)
            targets = (set(range(round_idx * CLIENTS, ROUNDS * CLIENTS)) if every_client
                       else {round_idx * CLIENTS + client})
            module = FaultyNet(hook, change, targets)
            trainer, error = make_trainer(root, rounds=ROUNDS, max_batches_per_epoch=2, callbacks=[log]), None
        else:
            _, where, round_idx = fault
            kind, target = where.split(":")
            module = TinyNet()
            plugins = (dict(attacks=[WritesInPlace(target, clients=[1], rounds=[round_idx])]) if kind == "attack"
                       else dict(aggregator=WritingAggregator(target, round_idx)))
            trainer = make_trainer(root, rounds=ROUNDS, max_batches_per_epoch=2, callbacks=[log], **plugins)
        initial_layout = _layout(module)
        initial = torch.cat([p.detach().reshape(-1).clone() for p in module.parameters()])
        try:
            trainer.fit(module, make_dm(num_clients=CLIENTS))
        except RuntimeError as exc:
            error = str(exc)
        else:
            error = None

        if fault[0] == "module" and not every_client:
            assert error is None, error
            dropped = trainer.history[round_idx].dropped
            assert list(dropped) == [client] and "changed the module's tensors" in dropped[client], dropped
            assert all(not r.dropped for i, r in enumerate(trainer.history) if i != round_idx)
        elif fault[0] == "module":
            assert error is not None and "changed the model in every client" in error, error
            assert f"FaultyNet.{hook}" in error or "FaultyNet's a training hook" in error, error
            assert len(log.params) == round_idx
        else:
            name = "WritesInPlace.poison_updates" if kind == "attack" else "WritingAggregator.aggregate"
            assert error is not None and f"{name} wrote in place into" in error, error
            assert len(log.params) == round_idx

        # the module keeps its layout, and the global model is the last good round's, finite
        assert _layout(module) == initial_layout
        last_good = log.params[-1] if log.params else initial
        assert torch.equal(trainer.global_params, last_good) and all_finite([trainer.global_params])
        saved = root / "checkpoints" / ckpt.CHECKPOINT_NAME
        if log.params:
            assert torch.equal(ckpt.load(saved)["global_params"], log.params[-1])
