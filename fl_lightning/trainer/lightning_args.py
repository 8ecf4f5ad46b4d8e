"""``lightning.Trainer`` arguments on ``FederatedTrainer``: those it takes, checked, and where the others went."""
from __future__ import annotations

import contextlib
import inspect
import math
import os
from typing import Any, Iterable, Iterator

import lightning as L
import torch

from fl_lightning.checks import check_choice, check_int, check_positive, did_you_mean
from fl_lightning.engines.train_options import CLIP_ALGORITHMS

_OWNER = "FederatedTrainer"

#: ``lightning.Trainer`` arguments with a federated equivalent on ``FederatedTrainer`` (or elsewhere)
EQUIVALENTS = {
    "max_epochs": "local_epochs (epochs per client and round) and rounds",
    "min_epochs": "local_epochs",
    "max_steps": "rounds (a round is the federated step; local_epochs and max_batches_per_epoch bound a client's)",
    "min_steps": "rounds",
    "max_time": "rounds, or an fl_lightning.callbacks callback setting trainer.should_stop",
    "callbacks": "callbacks= with fl_lightning.callbacks (ModelCheckpoint, EarlyStopping, ...)",
    "enable_checkpointing": "checkpoint_every (0: no checkpoints)",
    "enable_model_summary": "nothing: the module is summarised by Lightning when you build it, not per client",
    "strategy": "engine= (\"ray\" trains clients in parallel, \"vmap\" vectorises them)",
    "num_nodes": "engine=RayEngine(address=...) on a Ray cluster",
    "log_every_n_steps": "nothing: every round is logged once",
    "check_val_every_n_epoch": "nothing: the global model is evaluated after every round",
    "val_check_interval": "nothing: the global model is evaluated after every round",
    "limit_val_batches": "the data module's test split",
    "limit_test_batches": "the data module's test split",
    "num_sanity_val_steps": "nothing: there is no sanity check before round 0",
    "fast_dev_run": "rounds=1 with max_batches_per_epoch=1",
    "reload_dataloaders_every_n_epochs": "nothing: clients' data is fixed by the partition",
    "use_distributed_sampler": "the partition (FederatedDataModule(partition=...))",
}


def refuse_lightning_kwargs(kwargs: dict[str, Any], own: Iterable[str]) -> None:
    """``TypeError`` for the first argument ``FederatedTrainer`` does not take (``own``: those it does), naming where
    it went."""
    if not kwargs:
        return
    name = next(iter(kwargs))
    trainer_args = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    if name in EQUIVALENTS:
        raise TypeError(f"{_OWNER} does not take lightning.Trainer's {name!r}; use {EQUIVALENTS[name]}")
    if name in trainer_args:
        raise TypeError(f"{_OWNER} does not take lightning.Trainer's {name!r}; pass it to every client's Trainer "
                        f"with engine=LightningEngine(trainer_kwargs={{{name!r}: ...}})")
    raise TypeError(f"{_OWNER} got an unexpected keyword argument {name!r}"
                    f"{did_you_mean(name, set(own) | trainer_args)}")


def check_limit_train_batches(limit: Any, max_batches_per_epoch: int | None) -> int | float | None:
    """Lightning's ``limit_train_batches``: an int (batches per epoch) or a fraction in (0, 1] of a client's batches."""
    if limit is None:
        return None
    if max_batches_per_epoch is not None:
        raise ValueError(f"{_OWNER}: pass limit_train_batches or max_batches_per_epoch, not both (they are the "
                         "same cap on a client's batches per epoch)")
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        raise TypeError(f"{_OWNER}: limit_train_batches must be an int (batches) or a float in (0, 1] (a fraction "
                        f"of each client's batches), got {limit!r}")
    if isinstance(limit, int):
        return check_int(limit, "limit_train_batches", _OWNER, minimum=1)
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"{_OWNER}: limit_train_batches as a float is a fraction of each client's batches and "
                         f"must be in (0, 1], got {limit}")
    return None if limit == 1.0 else float(limit)


def batches_cap(limit: int | float | None, max_batches_per_epoch: int | None, num_samples: int,
                batch_size: int) -> int | None:
    """A client's cap on batches per epoch: ``max_batches_per_epoch``, or ``limit_train_batches`` applied to it."""
    if isinstance(limit, float):
        batches = math.ceil(num_samples / batch_size) if num_samples else 0
        return max(1, int(batches * limit)) if batches else 0  # Lightning: int(batches * fraction), at least one
    return limit if limit is not None else max_batches_per_epoch


def check_clipping(gradient_clip_val: Any, gradient_clip_algorithm: Any) -> tuple[float | None, str]:
    """``gradient_clip_val`` (``None`` or 0: no clipping) and ``gradient_clip_algorithm`` (``"norm"``/``"value"``)."""
    algorithm = "norm" if gradient_clip_algorithm is None else check_choice(
        str(gradient_clip_algorithm).lower(), CLIP_ALGORITHMS, "gradient_clip_algorithm", _OWNER)
    if gradient_clip_val is None or gradient_clip_val == 0:
        return None, algorithm
    return check_positive(gradient_clip_val, "gradient_clip_val", _OWNER), algorithm


def check_deterministic(deterministic: Any) -> bool | str | None:
    """Lightning's ``deterministic``: ``None`` (torch's setting), ``True``, ``False`` or ``"warn"``."""
    if deterministic is None or isinstance(deterministic, bool) or deterministic == "warn":
        return deterministic
    raise ValueError(f"{_OWNER}: deterministic must be None, True, False or 'warn', got {deterministic!r}")


@contextlib.contextmanager
def deterministic_algorithms(deterministic: bool | str | None) -> Iterator[None]:
    """torch's deterministic-algorithms flag as ``lightning.Trainer(deterministic=...)`` sets it, for the fit only."""
    if deterministic is None:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    previous_cudnn = torch.backends.cudnn.deterministic
    previous_env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=deterministic == "warn")
    if deterministic:
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic = previous_cudnn
        if previous_env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
