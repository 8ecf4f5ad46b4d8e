"""accelerator / devices / precision with Lightning's names: checked at construction, and the run on one device.

No GPU here (nor in CI): the CUDA paths are checked by what the trainer resolves and refuses, and every
tensor the loop allocates is checked to follow ``trainer.device``. ``benchmarks/gpu.py`` runs the same
fits on a real GPU and compares them with the CPU.
"""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from fl_lightning import FederatedTrainer
from fl_lightning.engines.lightning import LightningEngine
from fl_lightning.trainer.devices import resolve_accelerator
from tests.helpers import TinyNet, make_dm, make_trainer


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_resolves_like_lightning(monkeypatch, no_gpu) -> None:
    assert resolve_accelerator("auto") == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_accelerator("auto") == "mps"
    assert resolve_accelerator("gpu") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_accelerator("auto") == "cuda"
    assert resolve_accelerator("gpu") == "cuda"


def test_default_trainer_on_a_cpu_machine_runs_on_the_cpu(tmp_path, no_gpu) -> None:
    trainer = make_trainer(tmp_path)
    assert trainer.device == torch.device("cpu") and trainer.precision == "32-true"


def test_unknown_accelerator_suggests_the_closest(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"accelerator 'cdua' \(did you mean 'cuda'\?\)"):
        make_trainer(tmp_path, accelerator="cdua")


def test_cuda_when_there_is_none_says_what_to_use(tmp_path, no_gpu) -> None:
    with pytest.raises(ValueError, match="CUDA is not available.*accelerator='cpu'"):
        make_trainer(tmp_path, accelerator="cuda")
    with pytest.raises(ValueError, match="neither CUDA nor MPS"):
        make_trainer(tmp_path, accelerator="gpu")


def test_precision_64_lists_the_supported_ones(tmp_path) -> None:
    with pytest.raises(ValueError, match="precision='64' is not supported.*32-true, bf16-mixed, 16-mixed"):
        make_trainer(tmp_path, precision="64")
    with pytest.raises(ValueError, match="is not supported"):
        make_trainer(tmp_path, precision=64)


def test_fp16_on_cpu_points_to_bf16(tmp_path) -> None:
    with pytest.raises(ValueError, match="bf16-mixed"):
        make_trainer(tmp_path, accelerator="cpu", precision="16-mixed")


def test_legacy_precision_names_are_accepted(tmp_path) -> None:
    assert make_trainer(tmp_path, precision=32).precision == "32-true"
    assert make_trainer(tmp_path, precision="bf16").precision == "bf16-mixed"


def test_several_devices_in_process_name_the_ways_to_get_them(tmp_path) -> None:
    with pytest.raises(ValueError, match="devices=2.*engine='ray'.*several processes"):
        make_trainer(tmp_path, devices=2)
    with pytest.raises(TypeError, match="devices must be"):
        make_trainer(tmp_path, devices="two")


def test_every_tensor_of_the_round_follows_the_trainer_device(tmp_path) -> None:
    seen: list[torch.device] = []

    class Watching(TinyNet):
        def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
            seen.extend(t.device for t in batch)
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(tmp_path, accelerator="cpu")
    module = Watching()
    trainer.fit(module, make_dm(num_clients=3))
    device = trainer.device
    assert seen and all(d == device for d in seen)
    tensors = [trainer.global_params, trainer.global_buffers, trainer._out_params, trainer._out_buffers,
               *module.parameters()]
    assert all(t.device == device for t in tensors)
    assert trainer.history[-1].metrics["test/acc"] >= 0


def test_checkpoint_tensors_are_cpu_copies(tmp_path) -> None:
    trainer = make_trainer(tmp_path, accelerator="cpu")
    trainer.fit(TinyNet(), make_dm(num_clients=2))
    state = trainer.global_model.state_dict()
    assert all(t.device.type == "cpu" for t in (state["global_params"], state["global_buffers"]))
    assert state["global_params"].data_ptr() != trainer.global_params.data_ptr()  # a copy, not the live vector


def test_bf16_mixed_autocasts_the_step_and_keeps_float32_weights(tmp_path) -> None:
    dtypes: list[torch.dtype] = []

    class Watching(TinyNet):
        def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
            logits = self(batch[0])
            dtypes.append(logits.dtype)
            return self.loss(logits, batch[1])

    trainer = make_trainer(tmp_path, accelerator="cpu", precision="bf16-mixed")
    module = Watching()
    trainer.fit(module, make_dm(num_clients=2))
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in module.parameters())
    assert trainer.global_params.dtype == torch.float32
    assert torch.isfinite(trainer.global_params).all()


def test_lightning_engine_by_name_gets_the_trainers_accelerator_and_precision(tmp_path) -> None:
    trainer = make_trainer(tmp_path, accelerator="cpu", precision="bf16-mixed", engine="lightning")
    assert isinstance(trainer.engine, LightningEngine)
    assert (trainer.engine.accelerator, trainer.engine.precision) == ("cpu", "bf16-mixed")


def test_hparams_record_the_device_settings(tmp_path) -> None:
    trainer = FederatedTrainer(logger=False, enable_progress_bar=False, accelerator="cpu", default_root_dir=tmp_path)
    params = trainer.hparams()
    assert params["accelerator"] == "cpu" and params["precision"] == "32-true"
