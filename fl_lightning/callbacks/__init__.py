"""Round-level callbacks: the base class with its hooks, checkpoints of the global model, early stopping,
the progress bar and per-class accuracy."""
from fl_lightning.callbacks.base import FederatedCallback
from fl_lightning.callbacks.class_accuracy import ClassAccuracy
from fl_lightning.callbacks.early_stopping import EarlyStopping
from fl_lightning.callbacks.model_checkpoint import ModelCheckpoint
from fl_lightning.callbacks.progress import ProgressBar, RoundProgressBar

__all__ = ["ClassAccuracy", "EarlyStopping", "FederatedCallback", "ModelCheckpoint", "ProgressBar",
           "RoundProgressBar"]
