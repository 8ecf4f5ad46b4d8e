"""Round-level callbacks: the base class with its hooks, the progress bar and per-class accuracy."""
from fl_lightning.callbacks.base import FederatedCallback
from fl_lightning.callbacks.class_accuracy import ClassAccuracy
from fl_lightning.callbacks.progress import RoundProgressBar

__all__ = ["ClassAccuracy", "FederatedCallback", "RoundProgressBar"]
