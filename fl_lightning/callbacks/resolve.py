"""The trainer's callback list: federated callbacks only (a Lightning one is refused, naming its equivalent)."""
from __future__ import annotations

from typing import Any, Sequence

from fl_lightning.callbacks.base import FederatedCallback
from fl_lightning.callbacks.model_checkpoint import ModelCheckpoint
from fl_lightning.callbacks.progress import ProgressBar, RoundProgressBar

_OWNER = "FederatedTrainer"


def lightning_equivalent(callback: Any) -> str:
    """What to use instead of the Lightning callback ``callback`` in a federated run."""
    from lightning.pytorch import callbacks as lightning_callbacks

    name = type(callback).__name__
    if isinstance(callback, lightning_callbacks.ModelCheckpoint):
        return "use fl_lightning.callbacks.ModelCheckpoint (same arguments, counted in rounds)"
    if isinstance(callback, lightning_callbacks.EarlyStopping):
        return "use fl_lightning.callbacks.EarlyStopping(monitor=..., patience=..., mode=...), checked after each round"
    if isinstance(callback, lightning_callbacks.LearningRateMonitor):
        return ("leave it out: every round already logs each optimizer's learning rate as lr-<Optimizer> "
                "(LearningRateMonitor's names) to the trainer's loggers")
    if isinstance(callback, lightning_callbacks.ProgressBar):
        return ("use fl_lightning.callbacks.RoundProgressBar (the default with enable_progress_bar=True) "
                "or your own fl_lightning.callbacks.ProgressBar")
    return (f"write it as an fl_lightning.callbacks.FederatedCallback (round-level hooks), or run {name} inside "
            f"each client's own lightning.Trainer with engine=LightningEngine(trainer_kwargs={{'callbacks': "
            f"[{name}(...)]}}) from fl_lightning.engines.lightning")


def _is_lightning_callback(callback: Any) -> bool:
    from lightning.pytorch.callbacks import Callback

    return isinstance(callback, Callback)


def resolve_callbacks(callbacks: Sequence[Any], enable_progress_bar: bool) -> list[FederatedCallback]:
    """``callbacks`` checked, plus the default :class:`RoundProgressBar` when a bar is on and none was given,
    with :class:`ModelCheckpoint` instances moved to the end.

    A Lightning ``Callback`` is a ``TypeError`` naming its federated equivalent: its hooks
    (``on_train_epoch_end``...) are Lightning's, and the federated loop has rounds, not epochs.
    """
    resolved = []
    for callback in callbacks:
        if _is_lightning_callback(callback):
            raise TypeError(f"{_OWNER}: callbacks must be fl_lightning FederatedCallbacks, got the Lightning callback "
                            f"{type(callback).__name__}; {lightning_equivalent(callback)}")
        if not isinstance(callback, FederatedCallback):
            raise TypeError(f"{_OWNER}: callbacks must be fl_lightning FederatedCallbacks, got "
                            f"{type(callback).__name__}; subclass fl_lightning.callbacks.FederatedCallback")
        resolved.append(callback)
    bars = [type(c).__name__ for c in resolved if isinstance(c, ProgressBar)]
    if len(bars) > 1:
        raise ValueError(f"{_OWNER}: callbacks hold {len(bars)} progress bars ({', '.join(bars)}); keep one")
    if bars and not enable_progress_bar:
        raise ValueError(f"{_OWNER}: enable_progress_bar=False but callbacks hold the progress bar {bars[0]}; "
                         "set enable_progress_bar=True or remove the bar")
    if enable_progress_bar and not bars:
        resolved.append(RoundProgressBar())
    # checkpoints last, as Lightning orders them: they see every metric and ``should_stop`` of the round
    return sorted(resolved, key=lambda c: isinstance(c, ModelCheckpoint))
