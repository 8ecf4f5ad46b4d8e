"""The names users bring from peer libraries, accepted as aliases of our rules (ByzFL, Flower).

Each alias is a subclass that adds nothing, so a config may write ``class_path: Median`` and jsonargparse
finds it; the command line then runs (and names the run after) the rule it stands for (:data:`PEER_NAMES`).

=================  =================  ==========================================================
alias              our rule           convention
=================  =================  ==========================================================
``Median``         CoordinateMedian   ByzFL: the per-coordinate median (not :class:`RepeatedMedian`)
``TrMean``         TrimmedMean        ByzFL: ``f`` values trimmed at each end (``TrMean(f=2)``)
``FedMedian``      CoordinateMedian   Flower's strategy of that name
``FedTrimmedAvg``  TrimmedMean        Flower: ``beta`` is the share cut at each end (default 0.2)
=================  =================  ==========================================================

ByzFL's ``GeometricMedian`` and ``MultiKrum`` are already our class names.
"""
from __future__ import annotations

from fl_lightning.aggregators.median import CoordinateMedian
from fl_lightning.aggregators.trimmed_mean import TrimmedMean


class Median(CoordinateMedian):
    """ByzFL's name for :class:`~fl_lightning.aggregators.CoordinateMedian` (the per-coordinate median)."""


class TrMean(TrimmedMean):
    """ByzFL's name for :class:`~fl_lightning.aggregators.TrimmedMean` (give ``f``, the count trimmed per end)."""


class FedMedian(CoordinateMedian):
    """Flower's name for :class:`~fl_lightning.aggregators.CoordinateMedian`."""


class FedTrimmedAvg(TrimmedMean):
    """Flower's name for :class:`~fl_lightning.aggregators.TrimmedMean` (``beta``: the share cut at each end)."""


#: alias -> the class of ours it stands for
PEER_NAMES: dict[str, type] = {"Median": CoordinateMedian, "TrMean": TrimmedMean, "FedMedian": CoordinateMedian,
                               "FedTrimmedAvg": TrimmedMean}


def canonical_class_path(class_path: str) -> str:
    """``class_path`` itself, or the full path of our rule when it names an alias (short or full path).

    Examples:
        >>> canonical_class_path("Median")
        'fl_lightning.aggregators.median.CoordinateMedian'
        >>> canonical_class_path("fl_lightning.aggregators.Krum")
        'fl_lightning.aggregators.Krum'
    """
    name = class_path.rsplit(".", 1)[-1]
    if name in PEER_NAMES and class_path in (name, f"{__name__}.{name}", f"fl_lightning.aggregators.{name}"):
        target = PEER_NAMES[name]
        return f"{target.__module__}.{target.__name__}"
    return class_path
