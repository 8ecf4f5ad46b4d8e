"""A module whose hooks change its parameters mid-fit is caught after the client: one such client is dropped
with the reason, the same change in every client stops the fit naming the hook (issue 20, item 6)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from tests.helpers import TinyNet, flat_params, make_dm, make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class ReplacedInConfigureOptimizers(TinyNet):
    """Swaps the output layer's weight for a new Parameter each time the optimizer is built."""

    def configure_optimizers(self):
        self.net[-1].weight = nn.Parameter(self.net[-1].weight.detach().clone())
        return super().configure_optimizers()


class WidenedOnTrainStart(TinyNet):
    """Replaces the hidden layers by wider ones when training starts."""

    def on_train_start(self) -> None:
        self.net[1] = nn.Linear(64, 16)
        self.net[-1] = nn.Linear(16, 4)


class AddedInTrainingStep(TinyNet):
    """Registers a new parameter on its first step (a lazily built head)."""

    def training_step(self, batch, batch_idx):
        if not hasattr(self, "bias_head"):
            self.bias_head = nn.Parameter(torch.zeros(4))
        return super().training_step(batch, batch_idx)


class ResizedEachStep(TinyNet):
    """Grows the output bias by one entry on every step."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        bias = self.net[-1].bias
        bias.data = torch.cat([bias.data, bias.data[:1]])
        return loss


class WidenedOnceForClient2(TinyNet):
    """Only the third client ever trained widens the output layer (a one-off fault, not the module's design)."""

    calls = 0

    def on_train_start(self) -> None:
        type(self).calls += 1
        if type(self).calls == 3:
            self.net[-1] = nn.Linear(8, 5)


@pytest.mark.parametrize("module_type,hook,what", [
    (ReplacedInConfigureOptimizers, "configure_optimizers", "replaced 'net.3.weight'"),
    (WidenedOnTrainStart, "on_train_start", "resized 'net.1.weight'"),
    (AddedInTrainingStep, "training_step", "added 'bias_head'"),
    (ResizedEachStep, "training_step", "resized 'net.3.bias'"),
])
@pytest.mark.parametrize("engine", ["sequential", "vmap"])
def test_the_same_change_in_every_client_stops_the_fit_naming_the_hook(tmp_path, module_type, hook, what,
                                                                        engine) -> None:
    trainer = make_trainer(tmp_path, engine=engine, max_batches_per_epoch=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match=rf"{module_type.__name__}\.{hook} changed the model in every "
                                               rf"client \({what}.*{hook} must not add, remove, replace"):
            trainer.fit(module_type(), make_dm(num_clients=3))


def test_lightning_engine_catches_the_change_after_the_client(tmp_path) -> None:
    trainer = make_trainer(tmp_path, engine="lightning", max_batches_per_epoch=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match=r"WidenedOnTrainStart's a training hook changed the model in every "
                                               r"client \(.*resized 'net.1.weight'"):
            trainer.fit(WidenedOnTrainStart(), make_dm(num_clients=3))


def test_one_client_changing_the_model_is_dropped_and_the_module_repaired(tmp_path) -> None:
    WidenedOnceForClient2.calls = 0
    trainer = make_trainer(tmp_path, rounds=2, max_batches_per_epoch=2)
    module = WidenedOnceForClient2()
    with pytest.warns(RuntimeWarning, match=r"client 2 is dropped this round: on_train_start changed the module's "
                                            r"tensors: .*'net.3.weight'"):
        trainer.fit(module, make_dm(num_clients=4))
    first, second = trainer.history
    assert list(first.dropped) == [2] and "on_train_start" in first.dropped[2]
    assert not second.dropped, "the next round trains every client on the repaired module"
    assert module.net[-1].out_features == 4
    # the module ends holding the global model, and the global model learnt from the other clients
    assert torch.equal(flat_params(module), trainer.global_params)
    assert trainer.history[-1].metrics["test/acc"] > 0.5
