"""Kill and resume (hypothesis) with per-client state (momentum, kept optimizer state, spilled to disk) and a
server optimizer's state: the resumed run ends bit-identical to the uninterrupted one."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.helpers import TinyNet, make_dm, make_trainer

from fl_lightning import FederatedCallback
from fl_lightning.trainer import server_optimizer as presets

ROUNDS = 4


class Killed(Exception):
    """Stands for the process dying at the end of a round, before that round's checkpoint."""


class KillAt(FederatedCallback):
    def __init__(self, round_idx: int) -> None:
        self.round_idx = round_idx

    def on_round_end(self, trainer, record) -> None:
        if record.round == self.round_idx:
            raise Killed(record.round)


def _run(root, settings_: dict, callbacks=(), ckpt_path=None):
    trainer = make_trainer(root, rounds=ROUNDS, clients_per_round=2, max_batches_per_epoch=2, seed=7,
                           callbacks=list(callbacks), **settings_)
    module = TinyNet(dropout=0.2, batchnorm=True)
    trainer.fit(module, make_dm(num_clients=4), ckpt_path=ckpt_path)
    return trainer


def _state(trainer):
    return {"params": trainer.global_params.clone(), "buffers": trainer.global_buffers.clone(),
            "clients": trainer.client_states.state_dict(),
            "server": trainer.global_model.server_optimizer.state_dict()}


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kill_round=st.integers(1, ROUNDS - 1), beta=st.sampled_from([0.0, 0.5, 0.9]),
       server=st.sampled_from(["fedavgm", "fedadam", "fedyogi", "fedadagrad"]), keep=st.booleans(),
       spill=st.booleans())
def test_killed_run_with_client_and_server_state_resumes_bit_identical(tmp_path_factory, one_thread, kill_round,
                                                                        beta, server, keep, spill):
    root = tmp_path_factory.mktemp("resume")
    optimizer = getattr(presets, server)()
    settings_ = dict(client_momentum=beta, keep_optimizer_state=keep, server_optimizer=optimizer,
                     client_state_max_mb=0.001 if spill else None, client_state_dir=str(root / "spill"))
    if not beta and not keep:
        settings_["client_momentum"] = 0.5  # some client state to resume
    whole = _state(_run(root / "whole", settings_))
    with pytest.raises(Killed):
        _run(root / "killed", settings_, callbacks=[KillAt(kill_round)])
    resumed = _state(_run(root / "killed", settings_, ckpt_path="last"))
    assert _equal(resumed, whole)
    assert whole["clients"]["clients"], "the run should have kept client state"
