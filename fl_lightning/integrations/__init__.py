"""Bridges to other federated-learning frameworks (optional extras, imported only when used)."""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Flower is an optional extra: import it only when a strategy is asked for
    if name == "RobustStrategy":
        from fl_lightning.integrations.flower import RobustStrategy

        return RobustStrategy
    if name == "LegacyRobustStrategy":
        from fl_lightning.integrations.flower_legacy import LegacyRobustStrategy

        return LegacyRobustStrategy
    raise AttributeError(f"module 'fl_lightning.integrations' has no attribute {name!r}")


__all__ = ["LegacyRobustStrategy", "RobustStrategy"]
