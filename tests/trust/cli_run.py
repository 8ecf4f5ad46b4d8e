"""Run ``fl-lightning`` as a user does: the console entry point in a fresh interpreter, from the repository root."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
#: a recipe that trains in about a second: 4 clients of tiny blobs, one batch each
TINY = {
    "trainer": {"rounds": 2, "enable_progress_bar": False, "max_batches_per_epoch": 1, "batch_size": 8},
    "model": {"class_path": "tests.helpers.TinyNet"},
    "data": {"dataset": {"class_path": "tests.helpers.Blobs", "init_args": {"num_train": 32, "num_test": 8}},
             "num_clients": 4},
}
_CODE = "import sys\nfrom fl_lightning.cli import main\nsys.argv = ['fl-lightning', *sys.argv[1:]]\nmain()\n"


def write_recipe(folder: Path, recipe: dict[str, Any], name: str = "recipe.yaml") -> Path:
    """``recipe`` as a YAML file in ``folder``."""
    path = folder / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def cli_command(*args: str) -> list[str]:
    """The argv of ``fl-lightning ARGS`` run in a fresh interpreter."""
    return [sys.executable, "-c", _CODE, *args]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: one thread, this checkout first on the path."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    return env


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``fl-lightning ARGS`` to completion; stdout and stderr captured as text."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env=cli_env(**env))


#: the CLI, writing its process's peak resident memory (VmHWM, KiB) to the file named by FL_TEST_PEAK_FILE at exit
_PEAK_CODE = ("import atexit, os, re\n"
              "def _peak():\n"
              "    status = open('/proc/self/status').read()\n"
              "    open(os.environ['FL_TEST_PEAK_FILE'], 'w').write(re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
              "atexit.register(_peak)\n") + _CODE


def run_cli_peak_memory(tmp_path: Path, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, int]:
    """``fl-lightning ARGS`` to completion, with the peak resident memory in KiB of what it did after it started.

    VmHWM belongs to the program the process runs (it starts afresh at exec); ``ru_maxrss`` would also count the
    memory of the test process it was forked from, and ``RUSAGE_CHILDREN`` the largest child the session ever had.
    """
    peak_file = tmp_path / "peak_kib"
    result = subprocess.run([sys.executable, "-c", _PEAK_CODE, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=timeout, env=cli_env(FL_TEST_PEAK_FILE=str(peak_file)))
    return result, int(peak_file.read_text())


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr (warnings included)."""
    return [line for line in result.stderr.strip().splitlines() if line.strip()]
