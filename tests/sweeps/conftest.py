"""Fixtures of the sweep tests: one thread, and the tiny recipe's sweep run once per session."""
from __future__ import annotations

from pathlib import Path

import pytest
from tests.sweeps.tiny_sweep import quiet, sweep_args, write_recipe


@pytest.fixture(autouse=True)
def _single_thread(one_thread: None) -> None:
    """Every sweep test trains on one thread (the ``one_thread`` fixture of tests/conftest.py)."""


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny recipe's four points, run once per session; returns the sweep folder."""
    from fl_lightning.sweeps import run_sweep

    from fl_lightning.engines.base import torch_threads

    folder = tmp_path_factory.mktemp("finished")
    with torch_threads(1):
        run_sweep(sweep_args(write_recipe(folder)), console=quiet())
    return folder / "logs" / "tiny"
