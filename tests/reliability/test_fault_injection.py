"""Random fault injection (hypothesis): clients whose parameters or buffers turn NaN / Inf / huge, clients
that raise, and a kill after a random round followed by a resume. Whatever the faults, the global model
stays finite, a finished run's files are never overwritten, and a resumed run equals an uninterrupted one."""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.pytorch.loggers import TensorBoardLogger
from tests.helpers import TinyNet, make_dm, make_trainer

from tests.reliability.faults import (CrashingClients, GlobalLog, HugeInputs, Killed, KillAfterRound, SetUpdates,
                                      all_finite)
from tests.reliability.test_run_folders import scalar_steps, snapshot

ROUNDS, CLIENTS = 3, 4
#: a fault's kind -> the attack that injects it into one client in one round
FAULTS = {
    "nan_params": lambda c, r: SetUpdates(value=float("nan"), stride=5, clients=[c], rounds=[r]),
    "inf_params": lambda c, r: SetUpdates(value=float("-inf"), stride=3, clients=[c], rounds=[r]),
    "huge_params": lambda c, r: SetUpdates(value=3.3e38, clients=[c], rounds=[r]),
    "huge_buffers": lambda c, r: HugeInputs(scale=1e20, clients=[c], rounds=[r]),
    "raise": lambda c, r: CrashingClients(clients=[c], rounds=[r]),
}

fault = st.tuples(st.sampled_from(sorted(FAULTS)), st.integers(0, CLIENTS - 1), st.integers(0, ROUNDS - 1))


def _fit(root: Path, faults, callbacks=(), ckpt_path=None):
    log = GlobalLog()
    trainer = make_trainer(root, rounds=ROUNDS, max_batches_per_epoch=1, max_failed_rounds=ROUNDS + 1,
                           logger=TensorBoardLogger(str(root), name="faults", version="run"),
                           attacks=[FAULTS[kind](client, round_idx) for kind, client, round_idx in faults],
                           callbacks=[log, *callbacks])
    module = TinyNet(batchnorm=True)
    try:
        trainer.fit(module, make_dm(num_clients=CLIENTS), ckpt_path=ckpt_path)
    finally:
        trainer.finished_log = log  # what the rounds this process ran left behind, even when it was killed
    return trainer, module


def _outcome(trainer, module):
    return {"params": trainer.global_params.clone(), "buffers": trainer.global_buffers.clone(),
            "module": {k: v.clone() for k, v in module.state_dict().items()},
            # repr: a NaN metric (an overflowing model's loss) must compare equal to itself
            "metrics": [{k: repr(v) for k, v in r.metrics.items() if not k.endswith("/seconds")}
                        for r in trainer.history],
            "dropped": [r.dropped for r in trainer.history],
            "kept": [(r.kept_previous_model, r.kept_reason) for r in trainer.history]}


@settings(max_examples=12, deadline=None)
@given(faults=st.lists(fault, max_size=3), kill_after=st.one_of(st.none(), st.integers(0, ROUNDS - 2)))
def test_random_faults_keep_the_model_finite_and_resume_exactly(faults, kill_after):
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropped clients, kept rounds and non-finite metrics all warn
        root = Path(tmp)
        reference, ref_module = _fit(root / "reference", faults)
        assert all_finite(reference.finished_log.params + reference.finished_log.buffers)
        expected = _outcome(reference, ref_module)

        run = root / "run"
        if kill_after is not None:
            with pytest.raises(Killed):
                _fit(run, faults, callbacks=[KillAfterRound(kill_after)])
            resumed, module = _fit(run, faults, ckpt_path="last")
        else:
            resumed, module = _fit(run, faults)
        assert all_finite(resumed.finished_log.params + resumed.finished_log.buffers)
        assert all_finite([v for v in module.state_dict().values() if v.is_floating_point()])
        got = _outcome(resumed, module)
        assert torch.equal(got["params"], expected["params"]) and torch.equal(got["buffers"], expected["buffers"])
        assert all(torch.equal(got["module"][k], v) for k, v in expected["module"].items())
        assert got["metrics"] == expected["metrics"]
        assert got["dropped"] == expected["dropped"] and got["kept"] == expected["kept"]
        folder = run / "faults" / "run"
        assert scalar_steps(folder, "clients/dropped") == list(range(ROUNDS)), "each round logged once"

        finished = snapshot(folder)
        with pytest.raises(FileExistsError, match="already holds a run"):
            _fit(run, faults)  # a fresh fit into the finished run's folder
        assert snapshot(folder) == finished, "a finished run's files are never overwritten"
