"""Engine-side device and precision plumbing that a CPU can check: autocast, the fp16 scaler, vmap's group budget."""
from __future__ import annotations

import pytest
import torch

from fl_lightning.engines.precision import autocast, grad_scaler
from fl_lightning.engines.vmap import VmapEngine


def test_autocast_follows_the_precision_name() -> None:
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16-mixed"):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(cpu, "32-true"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.filterwarnings("ignore:.*GradScaler is enabled, but CUDA is not available")  # none here
def test_only_fp16_on_cuda_gets_a_grad_scaler() -> None:
    assert grad_scaler(torch.device("cpu"), "bf16-mixed") is None
    assert grad_scaler(torch.device("cuda"), "bf16-mixed") is None
    assert grad_scaler(torch.device("cuda"), "32-true") is None
    assert isinstance(grad_scaler(torch.device("cuda"), "16-mixed"), torch.amp.GradScaler)


def test_vmap_budget_comes_from_free_cuda_memory(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 16 * 2**30))
    engine = VmapEngine()
    assert engine._budget_bytes(torch.device("cuda")) == 4 * 2**30  # half the free memory
    assert engine._budget_bytes(torch.device("cpu")) == 512 * 2**20  # today's CPU budget
    assert VmapEngine(memory_budget_mb=64)._budget_bytes(torch.device("cuda")) == 64 * 2**20  # the user's wins
