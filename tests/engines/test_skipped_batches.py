"""``training_step`` returning ``None`` skips the batch, as in Lightning, on every engine (issue 20, item 7)."""
from __future__ import annotations

import warnings

import pytest
import torch

from tests.helpers import TinyNet, flat_params, make_dm, make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class SkipsOddBatches(TinyNet):
    """Skips every odd batch (e.g. a batch a user's filter rejects)."""

    def training_step(self, batch, batch_idx):
        if batch_idx % 2 == 1:
            return None
        return super().training_step(batch, batch_idx)


class SkipsEverything(TinyNet):
    """Never trains: every step returns None."""

    def training_step(self, batch, batch_idx):
        return None


def _fit(tmp_path, module_type, engine: str):
    torch.manual_seed(0)
    module = module_type(momentum=0.0)
    trainer = make_trainer(tmp_path / engine, engine=engine, rounds=2, max_batches_per_epoch=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, make_dm(num_clients=3))
    return trainer, flat_params(module), [str(w.message) for w in caught]


def test_every_engine_skips_the_batch_and_they_agree(tmp_path) -> None:
    finals = {}
    for engine in ("sequential", "lightning", "vmap"):
        trainer, finals[engine], messages = _fit(tmp_path, SkipsOddBatches, engine)
        assert all(not r.dropped for r in trainer.history), f"{engine} dropped clients: {messages}"
        if engine == "vmap":
            assert any("may return None" in m for m in messages), messages
    _, plain, _ = _fit(tmp_path / "plain", TinyNet, "sequential")
    assert not torch.allclose(finals["sequential"], plain), "the skipped batches changed nothing: none was skipped"
    assert torch.equal(finals["sequential"], finals["vmap"])
    assert (finals["sequential"] - finals["lightning"]).abs().max() < 1e-5


def test_a_client_that_skips_every_batch_sends_a_zero_update(tmp_path) -> None:
    torch.manual_seed(0)
    module = SkipsEverything()
    start = flat_params(module).clone()
    trainer = make_trainer(tmp_path, rounds=1, max_batches_per_epoch=2)
    trainer.fit(module, make_dm(num_clients=2))
    assert not trainer.history[0].dropped
    assert torch.equal(flat_params(module), start)


class _ReturnsOnEveryPath:
    def training_step(self, batch, batch_idx):
        if batch_idx:
            return batch[0].sum()
        else:
            return batch[1].sum()


class _FallsOffTheEnd:
    def training_step(self, batch, batch_idx):
        if batch_idx:
            return batch[0].sum()


class _BareReturn:
    def training_step(self, batch, batch_idx):
        def helper():
            return None  # a nested function's None is not the step's

        if batch_idx > 3:
            return
        return helper() or batch[0].sum()


@pytest.mark.parametrize("cls,may", [(_ReturnsOnEveryPath, False), (_FallsOffTheEnd, True), (_BareReturn, True),
                                     (TinyNet, False)])
def test_vmap_reads_whether_a_step_may_return_none(cls, may: bool) -> None:
    from fl_lightning.engines.vmap import _may_return_none

    assert _may_return_none(cls.training_step) is may
