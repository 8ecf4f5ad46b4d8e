"""fl_lightning: attack-resistant federated learning as a PyTorch Lightning workflow.

The public names below are imported on first use (PEP 562), so ``import fl_lightning`` and the
command line's first checks do not wait for torch and Lightning.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fl_lightning.aggregators.base import AggregationResult, Aggregator
    from fl_lightning.attacks.base import Attack
    from fl_lightning.callbacks import FederatedCallback
    from fl_lightning.context import LocalConfig, RoundContext
    from fl_lightning.data.datamodule import FederatedDataModule
    from fl_lightning.seeding import seed_everything
    from fl_lightning.trainer import FederatedTrainer, RoundRecord

from fl_lightning.version import __version__

#: public name -> the module that defines it
_PUBLIC = {
    "AggregationResult": "fl_lightning.aggregators.base",
    "Aggregator": "fl_lightning.aggregators.base",
    "Attack": "fl_lightning.attacks.base",
    "FederatedCallback": "fl_lightning.callbacks",
    "LocalConfig": "fl_lightning.context",
    "RoundContext": "fl_lightning.context",
    "FederatedDataModule": "fl_lightning.data.datamodule",
    "FederatedTrainer": "fl_lightning.trainer",
    "RoundRecord": "fl_lightning.trainer",
    "seed_everything": "fl_lightning.seeding",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fl_lightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
