"""Data and engine settings go through checks.py: a bool or float where an int is meant is refused in one line
naming the class and the setting (issue 20, item 13)."""
from __future__ import annotations

import pytest

from fl_lightning.data import MNIST5k
from fl_lightning.engines import SequentialEngine, VmapEngine


@pytest.mark.parametrize("make,error,match", [
    (lambda: MNIST5k(train_size=True), TypeError, r"MNIST5k: train_size must be an int in \[1, 4999\], got True"),
    (lambda: MNIST5k(train_size=4000.0), TypeError, "MNIST5k: train_size must be an int"),
    (lambda: MNIST5k(train_size=5000), ValueError, r"MNIST5k: train_size must be an int in \[1, 4999\], got 5000"),
    (lambda: SequentialEngine(num_threads=True), TypeError, "SequentialEngine: num_threads must be an int >= 1"),
    (lambda: VmapEngine(max_group_size=2.5), TypeError, "VmapEngine: max_group_size must be an int >= 1"),
    (lambda: VmapEngine(memory_budget_mb=float("nan")), ValueError, "VmapEngine: memory_budget_mb must be a finite"),
])
def test_wrong_setting_types_are_refused_naming_the_setting(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


def test_ray_engine_settings_are_checked() -> None:
    pytest.importorskip("ray", reason="RayEngine needs the 'ray' extra")
    from fl_lightning.engines import RayEngine

    with pytest.raises(TypeError, match="RayEngine: max_concurrency must be an int >= 1"):
        RayEngine(max_concurrency=True)
    with pytest.raises(ValueError, match="RayEngine: client_timeout_s must be a finite number > 0"):
        RayEngine(client_timeout_s=0)
