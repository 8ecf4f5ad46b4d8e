"""Checkpoints: a run SIGKILLed mid-way and resumed ends bit-identical to an uninterrupted run; foreign,
torn or unsafe checkpoint files are refused with an error saying why."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tests.helpers import TinyNet, fedavg, make_dm, make_trainer, metrics_without_time, resume_scenario

from fl_lightning.aggregators import ResidualReweight

import fl_lightning
from fl_lightning import checkpoint as ckpt

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TESTS_DIR.parent
KILL_ROUND = 2

# Runs resume_scenario and SIGKILLs itself in round KILL_ROUND: at the end of the round (before its
# checkpoint), or half-way through writing that round's checkpoint (temp file written, not renamed).
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[3])  # the repository root: tests.helpers
    from tests.helpers import resume_scenario
    from fl_lightning import FederatedCallback

    root, mode, kill_round = sys.argv[1], sys.argv[2], int(sys.argv[4])

    class KillAtRoundEnd(FederatedCallback):
        def on_round_end(self, trainer, record):
            if mode == "round_end" and record.round == kill_round:
                os.kill(os.getpid(), signal.SIGKILL)

    if mode == "checkpoint_write":
        real_replace, saves = os.replace, []

        def replace(src, dst, *args, **kwargs):
            if str(dst).endswith("last.ckpt"):
                saves.append(dst)
                if len(saves) == kill_round + 1:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace

    trainer, module, dm = resume_scenario(root, callbacks=(KillAtRoundEnd(),))
    trainer.fit(module, dm)
    print("finished without being killed")
""")


def _final_state(trainer, module):
    return {"params": trainer.global_params.clone(), "buffers": trainer.global_buffers.clone(),
            "module": {k: v.clone() for k, v in module.state_dict().items()},
            "metrics": metrics_without_time(trainer.history),
            "clients": [r.client_ids for r in trainer.history],
            "weights": [r.client_weights for r in trainer.history],
            "test": trainer.test()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    trainer, module, dm = resume_scenario(tmp_path_factory.mktemp("uninterrupted"))
    trainer.fit(module, dm)
    return _final_state(trainer, module)


@pytest.mark.parametrize("mode", ["round_end", "checkpoint_write"])
def test_killed_run_resumes_bit_identical(tmp_path, mode, uninterrupted):
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_DIR), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), mode, str(REPO_DIR),
                           str(KILL_ROUND)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    (last,) = (tmp_path / "run").rglob("last.ckpt")
    assert ckpt.load(last)["next_round"] == KILL_ROUND, "round KILL_ROUND's checkpoint must not exist"
    leftovers = list(last.parent.glob(".tmp-*.ckpt"))
    assert len(leftovers) == (1 if mode == "checkpoint_write" else 0)

    trainer, module, dm = resume_scenario(tmp_path / "run")
    trainer.fit(module, dm, ckpt_path="last")
    resumed = _final_state(trainer, module)

    assert torch.equal(resumed["params"], uninterrupted["params"])
    assert torch.equal(resumed["buffers"], uninterrupted["buffers"])
    for name, value in uninterrupted["module"].items():
        assert torch.equal(resumed["module"][name], value), name
    assert resumed["clients"] == uninterrupted["clients"]
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert all(torch.equal(a, b) for a, b in zip(resumed["weights"], uninterrupted["weights"]))
    assert resumed["test"] == uninterrupted["test"]


def _one_round_checkpoint(root, **kwargs):
    trainer = make_trainer(root, rounds=1, max_batches_per_epoch=1, aggregator=fedavg(), **kwargs)
    trainer.fit(TinyNet(), make_dm())
    return trainer.checkpoint_path


@pytest.mark.parametrize("change,label", [
    ({"dm": {"seed": 1}}, "data partition"),
    ({"dm": {"num_clients": 5}}, "data partition"),
    ({"module": {"hidden": 12}}, "model shape"),
    ({"aggregator": ResidualReweight()}, "aggregator"),
])
def test_checkpoint_of_another_run_is_refused_naming_the_difference(tmp_path, change, label):
    path = _one_round_checkpoint(tmp_path / "saved")
    trainer = make_trainer(tmp_path / "other", rounds=2, aggregator=change.get("aggregator", fedavg()))
    module = TinyNet(**change.get("module", {}))
    before = [p.clone() for p in module.parameters()]
    with pytest.raises(ValueError, match=f"{path}.*different {label}"):
        trainer.fit(module, make_dm(**change.get("dm", {})), ckpt_path=path)
    assert trainer.history == []
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters())), "nothing may be loaded or trained"


def test_resume_last_without_a_checkpoint_warns_and_starts_fresh(tmp_path):
    trainer = make_trainer(tmp_path, rounds=1, max_batches_per_epoch=1)
    with pytest.warns(RuntimeWarning, match="no checkpoint found"):
        trainer.fit(TinyNet(), make_dm(), ckpt_path="last")
    assert [r.round for r in trainer.history] == [0]


def test_missing_checkpoint_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        make_trainer(tmp_path).fit(TinyNet(), make_dm(), ckpt_path=tmp_path / "nowhere.ckpt")


def test_resume_of_a_finished_run_trains_nothing_more(tmp_path):
    path = _one_round_checkpoint(tmp_path)
    trainer = make_trainer(tmp_path, rounds=1, aggregator=fedavg())
    module = TinyNet()
    trainer.fit(module, make_dm(), ckpt_path=path)
    assert [r.round for r in trainer.history] == [0]  # restored, not re-run
    assert torch.equal(ckpt.load(path)["global_params"], trainer.global_params)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.save_atomic({"next_round": 1, "global_params": torch.zeros(3)}, path)

    def torn_save(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_atomic({"next_round": 2, "global_params": torch.ones(3)}, path)
    monkeypatch.undo()
    assert ckpt.load(path)["next_round"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"], "the temp file must be removed"


def test_stale_temp_file_from_a_crashed_write_is_ignored(tmp_path):
    path = _one_round_checkpoint(tmp_path)
    (path.parent / ".tmp-crashed.ckpt").write_bytes(b"PK\x03\x04 torn")
    trainer = make_trainer(tmp_path, rounds=2, max_batches_per_epoch=1, aggregator=fedavg())
    trainer.fit(TinyNet(), make_dm(), ckpt_path="last")
    assert [r.round for r in trainer.history] == [0, 1]


def _touch_marker(path):  # what a malicious pickle would run on load
    Path(path).write_text("code ran")
    return path


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _touch_marker, (str(self.marker),)


def test_checkpoint_is_loaded_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"format_version": ckpt.FORMAT_VERSION, "next_round": 0, "payload": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="not a readable fl_lightning checkpoint"):
        ckpt.load(path)
    with pytest.raises(ValueError, match="not a readable fl_lightning checkpoint"):
        make_trainer(tmp_path / "run", aggregator=fedavg()).fit(TinyNet(), make_dm(), ckpt_path=path)
    assert not marker.exists(), "loading a checkpoint must never run pickled code"


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)  # safe to load, but not ours
    with pytest.raises(ValueError, match="not an fl_lightning checkpoint"):
        ckpt.load(plain)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="garbage.ckpt is not a readable"):
        ckpt.load(garbage)


def test_checkpoint_records_the_run(tmp_path):
    trainer, module, dm = resume_scenario(tmp_path)
    trainer.rounds = 1
    trainer.fit(module, dm)
    state = ckpt.load(trainer.checkpoint_path)
    assert state["next_round"] == 1 and state["aggregator"] == "FoolsGold"
    assert state["fingerprint"] == dm.fingerprint
    memory = trainer.aggregator.state_dict()
    assert all(torch.equal(state["aggregator_state"][k], v) for k, v in memory.items()) and memory
    assert state["attack_states"] == {"LabelFlip": {"attacker_ids": list(trainer.attacks[0].attacker_ids)}}
    assert state["int_buffers"]["net.2.num_batches_tracked"].dtype == torch.long
    assert len(state["history"]) == 1 and fl_lightning.__version__


class _Crash(Exception):
    pass


class _CrashAtRoundEnd(fl_lightning.FederatedCallback):
    """An in-process crash at the end of a round (before that round's checkpoint)."""

    def __init__(self, round_idx):
        self.round_idx = round_idx

    def on_round_end(self, trainer, record):
        if record.round == self.round_idx:
            raise _Crash()


class _CrashingClients(fl_lightning.Attack):
    def poison_batch(self, client_id, inputs, targets, generator):
        raise RuntimeError(f"device {client_id} crashed")


def _failing_run(root, callbacks=(), rounds=4, max_failed_rounds=5, crash_rounds=(0, 1)):
    return make_trainer(root, rounds=rounds, max_failed_rounds=max_failed_rounds, aggregator=ResidualReweight(),
                        callbacks=list(callbacks), max_batches_per_epoch=2,
                        attacks=[_CrashingClients(clients=[1, 2], rounds=list(crash_rounds))])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_resume_after_rounds_with_dropped_clients_is_exact(tmp_path):
    reference = _failing_run(tmp_path / "ref")
    reference.fit(TinyNet(), make_dm())
    crashed = _failing_run(tmp_path / "run", callbacks=[_CrashAtRoundEnd(2)])
    with pytest.raises(_Crash):
        crashed.fit(TinyNet(), make_dm())
    resumed = _failing_run(tmp_path / "run")
    resumed.fit(TinyNet(), make_dm(), ckpt_path="last")
    assert [r.kept_previous_model for r in resumed.history] == [True, True, False, False]
    assert [r.dropped for r in resumed.history] == [r.dropped for r in reference.history]
    assert [r.client_weights is None for r in resumed.history] == [True, True, False, False]
    assert metrics_without_time(resumed.history) == metrics_without_time(reference.history)
    assert torch.equal(resumed.global_params, reference.global_params)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_consecutive_failed_rounds_are_counted_across_a_resume(tmp_path):
    settings = dict(rounds=6, max_failed_rounds=3, crash_rounds=range(6))
    with pytest.raises(RuntimeError, match="3 consecutive rounds"):
        _failing_run(tmp_path / "ref", **settings).fit(TinyNet(), make_dm())
    with pytest.raises(_Crash):
        _failing_run(tmp_path / "run", callbacks=[_CrashAtRoundEnd(2)], **settings).fit(TinyNet(), make_dm())
    resumed = _failing_run(tmp_path / "run", **settings)
    with pytest.raises(RuntimeError, match="3 consecutive rounds"):
        resumed.fit(TinyNet(), make_dm(), ckpt_path="last")
    assert [r.round for r in resumed.history] == [0, 1, 2], "the two failed rounds before the crash count"


class _Counter(fl_lightning.FederatedCallback):
    """A stateful callback: its count must survive a resume like Lightning callback state."""

    def __init__(self):
        self.rounds_seen = 0

    def on_round_end(self, trainer, record):
        self.rounds_seen += 1

    def state_dict(self):
        return {"rounds_seen": self.rounds_seen}

    def load_state_dict(self, state):
        self.rounds_seen = state["rounds_seen"]


def test_callback_state_survives_a_resume(tmp_path):
    kwargs = dict(rounds=3, max_batches_per_epoch=1)
    with pytest.raises(_Crash):
        make_trainer(tmp_path, callbacks=[_Counter(), _CrashAtRoundEnd(2)], **kwargs).fit(TinyNet(), make_dm())
    counter = _Counter()
    trainer = make_trainer(tmp_path, callbacks=[counter], **kwargs)
    trainer.fit(TinyNet(), make_dm(), ckpt_path="last")
    assert counter.rounds_seen == 3 and [r.round for r in trainer.history] == [0, 1, 2]
