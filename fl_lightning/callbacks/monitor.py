"""A monitored round metric, shared by ``ModelCheckpoint`` and ``EarlyStopping``: read it, compare two values."""
from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

from fl_lightning.checks import did_you_mean

if TYPE_CHECKING:
    from fl_lightning.trainer import RoundRecord

MODES = ("min", "max")


def monitored_value(owner: str, monitor: str, record: "RoundRecord", seen_before: bool) -> float | None:
    """``record.metrics[monitor]`` as a float.

    Missing in the first round a callback checks: ``ValueError`` naming the metrics there are (a typo
    or a metric this run never logs). Missing later (e.g. ``defense/*`` in a round that kept the
    previous model): a warning and ``None``, the round is not ranked.
    """
    if monitor in record.metrics:
        return float(record.metrics[monitor])
    if not seen_before:
        raise ValueError(f"{owner}: monitor {monitor!r} is not a metric of round {record.round}"
                         f"{did_you_mean(monitor, record.metrics)}; available: {', '.join(sorted(record.metrics))}")
    warnings.warn(f"{owner}: monitor {monitor!r} is missing in round {record.round}; this round is not compared",
                  RuntimeWarning, stacklevel=3)
    return None


def is_better(value: float, reference: float, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` improves on ``reference`` by more than ``min_delta`` (NaN never improves)."""
    if math.isnan(value):
        return False
    if math.isnan(reference):
        return True
    return value < reference - min_delta if mode == "min" else value > reference + min_delta


def worst(mode: str) -> float:
    """The value every real score improves on."""
    return math.inf if mode == "min" else -math.inf
