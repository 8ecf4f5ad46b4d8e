"""A run's folder belongs to that run: a re-run without ckpt_path is refused and leaves the run byte-identical,
a second process is locked out, a stale lock is taken over, and resume finds only the run's own checkpoint
(a multi-aggregator recipe killed before its second aggregator's first checkpoint) without logging a
round twice."""
from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tests.helpers import TinyNet, make_dm, make_trainer

from fl_lightning import checkpoint as ckpt
from fl_lightning.cli import main
from fl_lightning.run_lock import LOCK_SUFFIX, RunFolderLocked, RunLock
from tests.reliability.faults import Killed, KillAfterRound

REPO_DIR = Path(__file__).resolve().parents[2]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def scalar_steps(folder: Path, tag: str = "test/acc") -> list[int]:
    """The steps at which ``tag`` was logged in ``folder``, as TensorBoard reads them (purged events dropped)."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def write_recipe(tmp_path: Path, aggregators: list[str], callbacks: list | None = None, rounds: int = 2,
                 name: str = "recipe.yaml") -> Path:
    config = {"trainer": {"rounds": rounds, "enable_progress_bar": False, "max_batches_per_epoch": 1,
                          "callbacks": callbacks or []},
              "aggregators": [{"class_path": f"fl_lightning.aggregators.{a}"} for a in aggregators],
              "model": {"class_path": "tests.helpers.TinyNet"}, "save_dir": str(tmp_path / "logs"), "name": "exp",
              "data": {"dataset": {"class_path": "tests.helpers.Blobs"}, "num_clients": 4}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


# -- a re-run never writes into an existing run ---------------------------------------------------------
def test_rerunning_a_recipe_without_ckpt_path_is_refused_and_the_run_is_untouched(tmp_path, capsys, monkeypatch):
    recipe = write_recipe(tmp_path, ["FedAvg"])
    main(["fit", "--config", str(recipe)])
    run = tmp_path / "logs" / "exp" / "FedAvg"
    before = snapshot(run)
    assert "checkpoints/last.ckpt" in before and any(k.startswith("events.out.tfevents") for k in before)
    with pytest.raises(FileExistsError, match=r"already holds a run .*--ckpt_path last.*--name NEW"):
        main(["fit", "--config", str(recipe)])
    monkeypatch.setattr(sys, "argv", ["fl-lightning", "fit", "--config", str(recipe)])
    with pytest.raises(SystemExit) as info:
        main()  # the console script: one line, status 2
    assert info.value.code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert snapshot(run) == before, "the finished run's checkpoint and events must not change"
    assert not RunLock(run).path.exists()


def test_python_fit_with_the_same_logger_settings_is_refused(tmp_path):
    def fit():
        logger = TensorBoardLogger(str(tmp_path), name="exp", version="fixed")
        make_trainer(tmp_path, rounds=1, logger=logger).fit(TinyNet(), make_dm())
        return Path(logger.log_dir)

    folder = fit()
    before = snapshot(folder)
    with pytest.raises(FileExistsError, match="fixed already holds a run"):
        fit()
    assert snapshot(folder) == before


def test_default_logger_starts_a_new_version_for_each_fit(tmp_path):
    first = make_trainer(tmp_path, rounds=1, logger=None)
    first.fit(TinyNet(), make_dm())
    before = snapshot(first.log_dir)
    second = make_trainer(tmp_path, rounds=1, logger=None)
    second.fit(TinyNet(), make_dm())
    assert first.log_dir.name == "version_0" and second.log_dir.name == "version_1"
    assert snapshot(first.log_dir) == before


# -- one process at a time -------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from lightning.pytorch.loggers import TensorBoardLogger
    from fl_lightning import FederatedCallback
    from tests.helpers import TinyNet, make_dm, make_trainer

    root = Path(sys.argv[1])

    class WaitForRelease(FederatedCallback):
        def on_round_start(self, trainer, round_idx):
            (root / "started").write_text("1")
            deadline = time.monotonic() + 120
            while not (root / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    logger = TensorBoardLogger(str(root), name="exp", version="shared")
    make_trainer(root, rounds=1, logger=logger, callbacks=[WaitForRelease()]).fit(TinyNet(), make_dm())
    print("holder finished")
""")


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the holder never started"
        time.sleep(0.05)


def test_a_second_process_fitting_into_the_same_folder_is_refused(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_DIR), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(REPO_DIR)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "started", holder)
        logger = TensorBoardLogger(str(tmp_path), name="exp", version="shared")
        intruder = make_trainer(tmp_path, rounds=1, logger=logger)
        for ckpt_path in (None, "last"):
            with pytest.raises(RunFolderLocked, match=rf"in use by another fit \(pid {holder.pid} on "):
                intruder.fit(TinyNet(), make_dm(), ckpt_path=ckpt_path)
        assert intruder.history == []
    finally:
        (tmp_path / "release").write_text("1")
        out, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err
    assert "holder finished" in out
    folder = tmp_path / "exp" / "shared"
    assert ckpt.load(folder / "checkpoints" / "last.ckpt")["next_round"] == 1
    assert scalar_steps(folder) == [0], "only the holder logged"
    assert not RunLock(folder).path.exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "exp" / "v"
    folder.mkdir(parents=True)
    RunLock(folder).path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    trainer = make_trainer(tmp_path, rounds=1, logger=TensorBoardLogger(str(tmp_path), name="exp", version="v"))
    with pytest.warns(RuntimeWarning, match=rf"taking over the stale lock of pid {dead.pid}"):
        trainer.fit(TinyNet(), make_dm())
    assert [r.round for r in trainer.history] == [0]
    assert not RunLock(folder).path.exists()


def test_a_lock_held_on_another_host_is_respected(tmp_path):
    folder = tmp_path / "exp" / "v"
    folder.mkdir(parents=True)
    RunLock(folder).path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    trainer = make_trainer(tmp_path, rounds=1, logger=TensorBoardLogger(str(tmp_path), name="exp", version="v"))
    with pytest.raises(RunFolderLocked, match="pid 1 on elsewhere.*delete .*" + re.escape(LOCK_SUFFIX)):
        trainer.fit(TinyNet(), make_dm())


def test_the_lock_is_released_when_a_fit_is_interrupted(tmp_path):
    def trainer(**kwargs):
        return make_trainer(tmp_path, rounds=3, logger=TensorBoardLogger(str(tmp_path), name="exp", version="v"),
                            **kwargs)

    with pytest.raises(Killed):
        trainer(callbacks=[KillAfterRound(1)]).fit(TinyNet(), make_dm())
    assert not RunLock(tmp_path / "exp" / "v").path.exists()
    resumed = trainer()
    resumed.fit(TinyNet(), make_dm(), ckpt_path="last")
    assert [r.round for r in resumed.history] == [0, 1, 2]


# -- resume: the run's own checkpoint, each round logged once --------------------------------------------
def test_a_resumed_run_does_not_log_the_interrupted_round_twice(tmp_path):
    def trainer(root, **kwargs):
        return make_trainer(root, rounds=4, logger=TensorBoardLogger(str(root), name="exp", version="v"), **kwargs)

    reference = trainer(tmp_path / "ref")
    reference.fit(TinyNet(), make_dm())
    with pytest.raises(Killed):  # round 2 is logged, its checkpoint never written
        trainer(tmp_path / "run", callbacks=[KillAfterRound(2)]).fit(TinyNet(), make_dm())
    folder = tmp_path / "run" / "exp" / "v"
    assert scalar_steps(folder) == [0, 1, 2] and ckpt.load(folder / "checkpoints" / "last.ckpt")["next_round"] == 2
    trainer(tmp_path / "run").fit(TinyNet(), make_dm(), ckpt_path="last")
    assert scalar_steps(folder) == [0, 1, 2, 3]
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    expected = [r.metrics["test/acc"] for r in reference.history]
    assert [e.value for e in events.Scalars("test/acc")] == pytest.approx(expected, abs=1e-6)


def test_stale_temp_files_are_removed_when_the_run_resumes(tmp_path):
    trainer = make_trainer(tmp_path, rounds=2, logger=TensorBoardLogger(str(tmp_path), name="e", version="v"))
    with pytest.raises(Killed):
        trainer.callbacks.append(KillAfterRound(1))
        trainer.fit(TinyNet(), make_dm())
    checkpoints = tmp_path / "e" / "v" / "checkpoints"
    (checkpoints / ".tmp-killed.ckpt").write_bytes(b"PK\x03\x04 torn")
    resumed = make_trainer(tmp_path, rounds=2, logger=TensorBoardLogger(str(tmp_path), name="e", version="v"))
    with pytest.warns(RuntimeWarning, match=r"removed 1 unfinished checkpoint file\(s\).*\.tmp-killed\.ckpt"):
        resumed.fit(TinyNet(), make_dm(), ckpt_path="last")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]


def test_multi_aggregator_recipe_killed_before_the_second_aggregators_first_checkpoint(tmp_path):
    kill = [{"class_path": "tests.reliability.faults.KillAfterRound",
             "init_args": {"round_idx": 0, "aggregator": "TrimmedMean"}}]
    killed = write_recipe(tmp_path, ["FedAvg", "TrimmedMean"], callbacks=kill, name="killed.yaml")
    with pytest.raises(Killed):
        main(["fit", "--config", str(killed)])
    runs = tmp_path / "logs" / "exp"
    fedavg_before = snapshot(runs / "FedAvg")
    assert not (runs / "TrimmedMean" / "checkpoints" / "last.ckpt").exists()
    assert scalar_steps(runs / "TrimmedMean") == [0]

    recipe = write_recipe(tmp_path, ["FedAvg", "TrimmedMean"])
    with pytest.warns(RuntimeWarning, match="no checkpoint found .*TrimmedMean.*starting from round 0"):
        main(["fit", "--config", str(recipe), "--ckpt_path", "last"])
    assert {k: v for k, v in snapshot(runs / "FedAvg").items() if not k.startswith("events")} == \
        {k: v for k, v in fedavg_before.items() if not k.startswith("events")}, "FedAvg's finished run is untouched"
    state = ckpt.load(runs / "TrimmedMean" / "checkpoints" / "last.ckpt")
    assert state["aggregator"] == "TrimmedMean" and state["next_round"] == 2
    assert [r["round"] for r in state["history"]] == [0, 1]
    assert scalar_steps(runs / "TrimmedMean") == [0, 1], "round 0 is logged once"


def test_an_aggregator_added_to_a_finished_recipe_starts_from_round_0(tmp_path):
    main(["fit", "--config", str(write_recipe(tmp_path, ["FedAvg"]))])
    fedavg = ckpt.load(tmp_path / "logs" / "exp" / "FedAvg" / "checkpoints" / "last.ckpt")
    recipe = write_recipe(tmp_path, ["FedAvg", "CoordinateMedian"], name="grown.yaml")
    with pytest.warns(RuntimeWarning, match="no checkpoint found"):
        main(["fit", "--config", str(recipe), "--ckpt_path", "last"])
    median = ckpt.load(tmp_path / "logs" / "exp" / "CoordinateMedian" / "checkpoints" / "last.ckpt")
    assert median["aggregator"] == "CoordinateMedian" and median["next_round"] == 2
    after = ckpt.load(tmp_path / "logs" / "exp" / "FedAvg" / "checkpoints" / "last.ckpt")
    assert torch.equal(after["global_params"], fedavg["global_params"])


def test_a_sweep_point_that_failed_before_its_first_checkpoint_is_retried_in_its_folder(tmp_path, monkeypatch):
    from tests.sweeps.tiny_sweep import quiet, sweep_args, write_recipe as write_sweep

    from fl_lightning.sweeps import run_sweep
    from fl_lightning.trainer import FederatedTrainer

    recipe, only = write_sweep(tmp_path), "FedAvg-clients=1"
    original = FederatedTrainer._run_round

    def diverge(self, round_idx):
        raise RuntimeError("diverged in round 0")

    monkeypatch.setattr(FederatedTrainer, "_run_round", diverge)
    with pytest.raises(RuntimeError, match="1 of 1 points failed"):
        run_sweep(sweep_args(recipe, only=only), console=quiet())
    folder = tmp_path / "logs" / "tiny" / only
    assert ckpt.run_files(folder) and not (folder / "checkpoints" / "last.ckpt").exists()
    monkeypatch.setattr(FederatedTrainer, "_run_round", original)
    with pytest.warns(RuntimeWarning, match="no checkpoint found"):
        run_sweep(sweep_args(recipe, only=only), console=quiet())  # tried again in its own folder
    assert (folder / "summary.json").is_file() and not (folder / "failed.json").exists()
    assert scalar_steps(folder) == [0, 1, 2]


@pytest.mark.parametrize("lock_age_s,taken_over", [(3600.0, True), (0.0, False)])
def test_a_lock_whose_pid_was_reused_is_stale(tmp_path, lock_age_s, taken_over):
    """A live pid counts as the holder only if that process started before the lock was written."""
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        folder = tmp_path / "exp" / "v"
        folder.mkdir(parents=True)
        lock = {"pid": live.pid, "host": socket.gethostname(), "started": time.time() - lock_age_s}
        RunLock(folder).path.write_text(json.dumps(lock))
        trainer = make_trainer(tmp_path, rounds=1, logger=TensorBoardLogger(str(tmp_path), name="exp", version="v"))
        if taken_over:
            with pytest.warns(RuntimeWarning, match=rf"taking over the stale lock of pid {live.pid}"):
                trainer.fit(TinyNet(), make_dm())
            assert [r.round for r in trainer.history] == [0]
        else:
            with pytest.raises(RunFolderLocked, match=rf"pid {live.pid}"):
                trainer.fit(TinyNet(), make_dm())
    finally:
        live.communicate(b"")
