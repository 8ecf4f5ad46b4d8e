"""Aggregation rules: one class per rule, maths in :mod:`fl_lightning.aggregators.functional`."""
from __future__ import annotations

from typing import Any

from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.bulyan import Bulyan
from fl_lightning.aggregators.centered_clipping import CenteredClipping
from fl_lightning.aggregators.fedavg import FedAvg
from fl_lightning.aggregators.flame import FLAME
from fl_lightning.aggregators.fltrust import FLTrust
from fl_lightning.aggregators.foolsgold import FoolsGold
from fl_lightning.aggregators.geometric_median import GeometricMedian
from fl_lightning.aggregators.krum import Krum, MultiKrum
from fl_lightning.aggregators.meamed import Meamed
from fl_lightning.aggregators.median import CoordinateMedian
from fl_lightning.aggregators.norm_clipping import NormClipping
from fl_lightning.aggregators.peer_names import FedMedian, FedTrimmedAvg, Median, TrMean
from fl_lightning.aggregators.pre_aggregators import ARC, NNM, Bucketing, PreAggregator
from fl_lightning.aggregators.repeated_median import RepeatedMedian
from fl_lightning.aggregators.residual_reweight import ResidualReweight
from fl_lightning.aggregators.spectral_rules import CAF, DnC
from fl_lightning.aggregators.subset_rules import MDA, SMEA, MoNNA
from fl_lightning.aggregators.trimmed_mean import TrimmedMean
from fl_lightning.checks import did_you_mean

#: short name -> class, for configs and :func:`get_aggregator`
AGGREGATORS: dict[str, type[Aggregator]] = {
    "fedavg": FedAvg,
    "median": CoordinateMedian,
    "trimmed_mean": TrimmedMean,
    "repeated_median": RepeatedMedian,
    "residual_reweight": ResidualReweight,
    "foolsgold": FoolsGold,
    "krum": Krum,
    "multi_krum": MultiKrum,
    "bulyan": Bulyan,
    "geometric_median": GeometricMedian,
    "centered_clipping": CenteredClipping,
    "norm_clipping": NormClipping,
    "mda": MDA,
    "monna": MoNNA,
    "meamed": Meamed,
    "caf": CAF,
    "smea": SMEA,
    "dnc": DnC,
    "flame": FLAME,
    "fltrust": FLTrust,
}

#: rules that wrap another rule (``inner``); built by name with ``get_aggregator("nnm", inner=...)``
PRE_AGGREGATORS: dict[str, type[PreAggregator]] = {"bucketing": Bucketing, "nnm": NNM, "arc": ARC}

_ALIASES = {"coordinate_median": "median", "rr": "residual_reweight", "rfa": "geometric_median",
            "multikrum": "multi_krum", "trmean": "trimmed_mean", "fedmedian": "median", "fedtrimmedavg": "trimmed_mean"}


def get_aggregator(name_or_instance: str | Aggregator, **kwargs: Any) -> Aggregator:
    """An aggregator from its short name (``"krum"``), class name (``"Krum"``) or an instance (returned as is).

    Examples:
        >>> get_aggregator("krum", f=2)
        Krum(f=2, m=1, exact=True)
        >>> type(get_aggregator("TrMean", f=1)).__name__  # ByzFL's name for the trimmed mean
        'TrimmedMean'
    """
    if isinstance(name_or_instance, Aggregator):
        if kwargs:
            raise ValueError(f"get_aggregator: got an instance of {type(name_or_instance).__name__} and "
                             f"keyword arguments {sorted(kwargs)}; pass a name to build a new one")
        return name_or_instance
    if isinstance(name_or_instance, str):
        key = name_or_instance.strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        by_class = {cls.__name__.lower(): name for name, cls in AGGREGATORS.items()}
        key = by_class.get(key, key)
        by_class.update({cls.__name__.lower(): name for name, cls in PRE_AGGREGATORS.items()})
        key = by_class.get(key, key)
        if key in AGGREGATORS:
            return AGGREGATORS[key](**kwargs)
        if key in PRE_AGGREGATORS:
            return PRE_AGGREGATORS[key](**kwargs)
    names = [*AGGREGATORS, *PRE_AGGREGATORS]
    hint = did_you_mean(str(name_or_instance).strip().lower(), names) if isinstance(name_or_instance, str) else ""
    raise ValueError(f"get_aggregator: unknown aggregator {name_or_instance!r}{hint}; valid names: "
                     f"{', '.join(names)} (or an Aggregator instance)")


__all__ = ["AGGREGATORS", "ARC", "CAF", "FLAME", "MDA", "NNM", "PRE_AGGREGATORS", "SMEA", "AggregationResult",
           "Aggregator", "Bucketing", "Bulyan", "CenteredClipping", "CoordinateMedian", "DnC", "FLTrust", "FedAvg",
           "FedMedian", "FedTrimmedAvg", "FoolsGold", "GeometricMedian", "Krum", "Meamed", "Median", "MoNNA",
           "MultiKrum", "NormClipping", "PreAggregator", "RepeatedMedian", "ResidualReweight", "TrMean",
           "TrimmedMean", "get_aggregator"]
