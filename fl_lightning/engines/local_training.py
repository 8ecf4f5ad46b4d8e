"""One client's local training on a plain ``LightningModule``, without a ``lightning.Trainer``."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import lightning as L
import torch
from torch import Tensor

from fl_lightning.engines.base import ClientTask
from fl_lightning.engines.batches import batch_size_of, epoch_batches


class LocalTrainingError(RuntimeError):
    """The user's module cannot be trained by the lean loop (not a per-client failure)."""


def build_optimizer(module: L.LightningModule, lr: float | None) -> torch.optim.Optimizer:
    """The single optimizer of ``configure_optimizers`` (fresh for every client), with ``lr`` forced if given."""
    config = module.configure_optimizers()
    optimizer = _first_optimizer(config)
    if optimizer is None:
        raise LocalTrainingError(
            f"{type(module).__name__}.configure_optimizers() must return a torch optimizer "
            f"(or a list / dict holding one), got {type(config).__name__}")
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    return optimizer


def _first_optimizer(config: Any) -> torch.optim.Optimizer | None:
    if isinstance(config, torch.optim.Optimizer):
        return config
    if isinstance(config, dict):
        return _first_optimizer(config.get("optimizer"))
    if isinstance(config, (list, tuple)) and config:
        return _first_optimizer(config[0])
    return None


def step_loss(output: Any, module: L.LightningModule) -> Tensor:
    """The loss a ``training_step`` returned (a tensor, or a dict with ``"loss"``)."""
    if isinstance(output, dict):
        output = output.get("loss")
    if not isinstance(output, Tensor):
        raise LocalTrainingError(
            f"{type(module).__name__}.training_step must return the loss tensor (or a dict with 'loss'), "
            f"got {type(output).__name__}")
    return output


@contextlib.contextmanager
def detached_logging(module: L.LightningModule, sink: dict[str, float]) -> Iterator[None]:
    """Let ``self.log`` calls in the user's steps record into ``sink`` instead of needing a Trainer."""

    def log(name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        sink[name] = float(value.detach()) if isinstance(value, Tensor) else float(value)

    def log_dict(values: dict, *args: Any, **kwargs: Any) -> None:
        for name, value in values.items():
            log(name, value)

    module.log, module.log_dict = log, log_dict  # type: ignore[method-assign]
    try:
        yield
    finally:
        del module.log, module.log_dict


def train_client(module: L.LightningModule, task: ClientTask) -> float:
    """Run ``task`` on ``module`` (already holding the global weights); returns the mean training loss."""
    if not module.automatic_optimization:
        raise LocalTrainingError(f"{type(module).__name__} uses manual optimization, which local "
                                 "training does not support; set automatic_optimization = True")
    cfg = task.config
    data = task.data
    n = len(data)
    batch_size = batch_size_of(cfg, n)
    generator = torch.Generator().manual_seed(task.seed)
    # dropout and any other global-RNG use inside the module; the CPU generator alone, since
    # torch.manual_seed also (lazily) seeds every accelerator and costs ~0.5 ms a client
    torch.default_generator.manual_seed(task.seed)
    if module.device.type == "cuda":
        torch.cuda.manual_seed(task.seed)
    optimizer = build_optimizer(module, cfg.lr)
    module.train()
    total, steps, logged = 0.0, 0, {}
    with detached_logging(module, logged):
        for _ in range(cfg.epochs):
            # drawn at the start of each epoch: a batch poisoner draws from the same generator in between
            order = epoch_batches(n, batch_size, cfg.max_batches_per_epoch, generator)
            for batch_idx, (inputs, targets) in enumerate(data.batches(order)):
                if task.batch_poisoner is not None:
                    inputs, targets = task.batch_poisoner(inputs, targets, generator)
                loss = step_loss(module.training_step((inputs, targets), batch_idx), module)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                steps += 1
    return total / steps if steps else math.nan
