"""Issue 20 items 4 and 5 from the user's side: one line per failure, SIGTERM stops like Ctrl-C (exit 143)."""
from __future__ import annotations

import copy
import signal
import subprocess
import time

import pytest
import torch

from fl_lightning.run_lock import LOCK_SUFFIX
from tests.trust.cli_run import ROOT, TINY, cli_command, cli_env, error_lines, run_cli, write_recipe


def test_a_read_only_run_folder_reports_its_oserror_not_the_cleanup_error(tmp_path):
    recipe = {**copy.deepcopy(TINY), "save_dir": str(tmp_path / "logs")}
    recipe["trainer"]["logger"] = {"class_path": "tests.trust.faulty.ReadOnlyLogger",
                                   "init_args": {"at_round": 1, "finalize_fails": True}}
    result = run_cli("fit", "--config", str(write_recipe(tmp_path, recipe)))
    assert result.returncode == 1, result.stderr[-3000:]
    (line,) = [ln for ln in error_lines(result) if "Warning" not in ln and not ln.startswith(" ")]
    assert line.startswith("fl-lightning fit: error: OSError: [Errno 30] Read-only file system")
    assert "then, during cleanup, the loggers' finalize failed: ValueError: you tried to log -1" in line
    assert "Traceback" not in result.stderr
    assert list((tmp_path / "logs").rglob(f"*{LOCK_SUFFIX}")) == []


def test_the_traceback_is_there_when_asked_for(tmp_path):
    recipe = {**copy.deepcopy(TINY), "save_dir": str(tmp_path / "logs")}
    recipe["trainer"]["logger"] = {"class_path": "tests.trust.faulty.ReadOnlyLogger", "init_args": {"at_round": 0}}
    result = run_cli("fit", "--config", str(write_recipe(tmp_path, recipe)), FL_LIGHTNING_TRACEBACK="1")
    assert result.returncode == 1 and "Traceback" in result.stderr and "OSError" in result.stderr


@pytest.mark.parametrize("engine", ["sequential", "lightning"])
def test_sigterm_stops_the_fit_in_one_line_with_status_143_and_the_run_resumes(tmp_path, engine):
    recipe = {**copy.deepcopy(TINY), "save_dir": str(tmp_path / "logs")}
    recipe["trainer"].update(rounds=10_000, engine=engine)
    path = write_recipe(tmp_path, recipe)
    process = subprocess.Popen(cli_command("fit", "--config", str(path)), cwd=ROOT, env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "logs" / "default" / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert checkpoint.is_file(), process.communicate(timeout=60)[1][-3000:]
    time.sleep(0.5)  # into a later round
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 143, stderr[-3000:]
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("fl-lightning")]
    assert len(lines) == 1 and lines[0].startswith("fl-lightning fit: stopped: stopped by SIGTERM "), stderr[-3000:]
    assert "Traceback" not in stderr
    assert list((tmp_path / "logs").rglob(f"*{LOCK_SUFFIX}")) == [], "the lock is released"
    saved = torch.load(checkpoint, weights_only=True)["next_round"]
    assert f"the last checkpoint {checkpoint} (next round {saved}) is kept: resume with --ckpt_path last" in lines[0]
    # the round in progress was abandoned, or the signal waited for the checkpoint write it arrived in
    assert (f"during round {saved}, which was abandoned" in lines[0]
            or f"after round {saved - 1}, once its checkpoint was written" in lines[0]), lines[0]
    resumed = run_cli("fit", "--config", str(path), "--ckpt_path", "last", "--trainer.rounds", str(saved + 1))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(checkpoint, weights_only=True)["next_round"] == saved + 1
