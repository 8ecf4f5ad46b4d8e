"""The fault campaign, extended (issue 20 items 4 and 5): SIGTERM at a random moment, and cleanup steps that fail.

SIGTERM (a real signal, sent to this process) at a random moment of a random round: at its start, while a
client trains, after it is logged, or inside the checkpoint write between the data and the rename. The fit
raises ``StopRequested``, releases the run folder's lock, restores the previous SIGTERM handler, leaves a
checkpoint that loads, and a resume ends bit-identical to an uninterrupted run.

Cleanup failures: any subset of a callback's ``teardown``, a logger's ``finalize`` and the engine's ``teardown``
fails, after a run that itself failed in a random way (a read-only folder's ``OSError`` while logging, a
callback's error, SIGTERM) or succeeded. The error raised is always the first one, every cleanup failure is
noted on it, and the lock is released.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fl_lightning.checkpoint as checkpoint_module
from fl_lightning import FederatedCallback
from fl_lightning.engines import SequentialEngine
from fl_lightning.run_lock import LOCK_SUFFIX
from fl_lightning.stopping import StopRequested, cleanup_notes
from tests.reliability.test_fault_injection import CLIENTS, ROUNDS, _fit, _outcome
from tests.trust.faulty import ReadOnlyLogger

MOMENTS = ("round_start", "client_training", "round_logged", "checkpoint_write")


def _sigterm(*_args, **_kwargs) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class SigtermAt(FederatedCallback):
    """Sends this process SIGTERM at the start of round ``round_idx`` or once it is logged."""

    def __init__(self, round_idx: int, moment: str) -> None:
        self.round_idx, self.moment = round_idx, moment

    def on_round_start(self, trainer, round_idx):
        if self.moment == "round_start" and round_idx == self.round_idx:
            _sigterm()

    def on_round_logged(self, trainer, record):
        if self.moment == "round_logged" and record.round == self.round_idx:
            _sigterm()


def sigterm_in_training_step(call_index: int):
    """Patch ``TinyNet.training_step`` so that its ``call_index``-th call (0-based) receives SIGTERM."""
    from tests.helpers import TinyNet

    real, calls = TinyNet.training_step, []

    def step(self, batch, batch_idx):
        calls.append(1)
        if len(calls) == call_index + 1:
            _sigterm()
        return real(self, batch, batch_idx)

    return mock.patch.object(TinyNet, "training_step", step)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer, module = _fit(tmp_path_factory.mktemp("reference"), [])
    return _outcome(trainer, module)


def _lock_files(root: Path) -> list[Path]:
    return sorted(root.rglob(f"*{LOCK_SUFFIX}"))


@settings(max_examples=8, deadline=None)
@given(round_idx=st.integers(0, ROUNDS - 1), moment=st.sampled_from(MOMENTS), client=st.integers(0, CLIENTS - 1))
def test_sigterm_at_a_random_moment_stops_cleanly_and_resumes_exactly(uninterrupted, round_idx, moment, client):
    handler_before = signal.getsignal(signal.SIGTERM)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = Path(tmp) / "run"
        callbacks, patch = [SigtermAt(round_idx, moment)], contextlib.nullcontext()
        if moment == "checkpoint_write":  # SIGTERM after the data is written, before the rename
            real_save = torch.save

            def save_then_sigterm(state, stream):
                real_save(state, stream)
                if state["next_round"] == round_idx + 1:
                    _sigterm()

            patch = mock.patch.object(checkpoint_module.torch, "save", side_effect=save_then_sigterm)
        elif moment == "client_training":  # one local batch per client and round: call r * CLIENTS + client
            patch = sigterm_in_training_step(round_idx * CLIENTS + client)
        with patch, pytest.raises(StopRequested) as stopped:
            _fit(run, [], callbacks=callbacks)
        assert stopped.value.round == round_idx and stopped.value.exit_status == 143
        assert signal.getsignal(signal.SIGTERM) is handler_before, "the previous handler is back"
        assert _lock_files(run) == [], "the run folder's lock is released"
        saved = run / "faults" / "run" / "checkpoints" / "last.ckpt"
        # the round in progress is abandoned (the checkpoint is the one before it), but a write is never cut:
        # SIGTERM during it waits for its end
        expected_next = round_idx + 1 if moment == "checkpoint_write" else round_idx
        assert stopped.value.next_round == (expected_next or None)
        if expected_next:
            assert checkpoint_module.load(saved)["next_round"] == expected_next
        assert not list(saved.parent.glob(".tmp-*")) if saved.parent.exists() else True
        resumed, module = _fit(run, [], ckpt_path="last")
    got = _outcome(resumed, module)
    assert torch.equal(got["params"], uninterrupted["params"])
    assert torch.equal(got["buffers"], uninterrupted["buffers"])
    assert got["metrics"] == uninterrupted["metrics"]


class FailingTeardown(FederatedCallback):
    """A callback whose ``teardown`` fails, and whose ``on_round_end`` fails in round ``at_round``."""

    def __init__(self, teardown_fails: bool, at_round: int | None = None) -> None:
        self.teardown_fails, self.at_round = teardown_fails, at_round

    def on_round_end(self, trainer, record):
        if self.at_round is not None and record.round == self.at_round:
            raise RuntimeError(f"callback failed in round {record.round}")

    def teardown(self, trainer):
        if self.teardown_fails:
            raise RuntimeError("callback teardown failed")


class FailingEngine(SequentialEngine):
    """The sequential engine with a ``teardown`` that fails."""

    def teardown(self):
        super().teardown()
        raise RuntimeError("engine teardown failed")


PRIMARY = ("none", "read_only", "callback", "sigterm")


@settings(max_examples=10, deadline=None)
@given(primary=st.sampled_from(PRIMARY), at_round=st.integers(0, ROUNDS - 1),
       failing=st.sets(st.sampled_from(["callback teardown", "finalize", "engine teardown"])))
def test_cleanup_failures_never_hide_the_first_error(primary, at_round, failing):
    from tests.helpers import TinyNet, make_dm, make_trainer

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = Path(tmp)
        logger = ReadOnlyLogger(str(root), name="faults", version="run", finalize_fails="finalize" in failing,
                                at_round=at_round if primary == "read_only" else None)
        callbacks = [FailingTeardown("callback teardown" in failing, at_round if primary == "callback" else None)]
        if primary == "sigterm":
            callbacks.append(SigtermAt(at_round, "round_start"))
        trainer = make_trainer(root, rounds=ROUNDS, max_batches_per_epoch=1, logger=logger, callbacks=callbacks,
                               engine=FailingEngine() if "engine teardown" in failing else "sequential")
        expected = {"none": None, "read_only": OSError, "callback": RuntimeError, "sigterm": StopRequested}[primary]
        cleanup = {"callback teardown": "callback teardown failed", "finalize": "you tried to log -1",
                   "engine teardown": "engine teardown failed"}
        order = [cleanup[k] for k in ("callback teardown", "finalize", "engine teardown") if k in failing]
        if expected is None and not order:
            trainer.fit(TinyNet(), make_dm(num_clients=CLIENTS))
            error = None
        else:
            with pytest.raises(BaseException) as raised:
                trainer.fit(TinyNet(), make_dm(num_clients=CLIENTS))
            error = raised.value
        if expected is not None:
            assert isinstance(error, expected), f"{type(error).__name__}: {error}"
            assert [n.rsplit(": ", 1)[1] for n in cleanup_notes(error)] == order
        elif order:  # the fit itself succeeded: the first cleanup failure is raised, the rest noted
            assert order[0] in str(error)
            assert [n.rsplit(": ", 1)[1] for n in cleanup_notes(error)] == order[1:]
        assert _lock_files(root) == []


class _SigtermInDel:
    """An object whose finaliser receives SIGTERM: Python prints the handler's exception and carries on."""

    def __del__(self) -> None:
        _sigterm()


class SigtermSwallowedAt(FederatedCallback):
    """At the end of round ``round_idx`` the signal lands inside a ``__del__``, as garbage collection can make it."""

    def __init__(self, round_idx: int) -> None:
        self.round_idx = round_idx

    def on_round_logged(self, trainer, record):
        if record.round == self.round_idx:
            _SigtermInDel()                                  # collected at once: its __del__ swallows the raise


def test_a_sigterm_swallowed_by_a_finaliser_still_stops_the_fit_at_the_next_round(tmp_path) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with warnings.catch_warnings(), pytest.raises(StopRequested) as info:
        warnings.simplefilter("ignore")
        _fit(tmp_path, [], callbacks=[SigtermSwallowedAt(0)])
    assert info.value.signum == signal.SIGTERM and info.value.round == 1, str(info.value)
    assert "during round 1, which was abandoned" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is previous
    assert _lock_files(tmp_path) == []
