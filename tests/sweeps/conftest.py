"""Fixtures of the sweep tests: one thread, and the tiny recipe's sweep run once per session."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch
from tests.sweeps.tiny_sweep import quiet, sweep_args, write_recipe


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train many times faster on one thread when the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny recipe's four points, run once per session; returns the sweep folder."""
    from fl_lightning.sweeps import run_sweep

    folder = tmp_path_factory.mktemp("finished")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(sweep_args(write_recipe(folder)), console=quiet())
    finally:
        torch.set_num_threads(before)
    return folder / "logs" / "tiny"
