"""How the clients of a round are trained: in-process one by one, many at once with torch.func, on Ray, or
with a real ``lightning.Trainer`` per client."""
from __future__ import annotations

from typing import Any

from fl_lightning.engines.base import ClientOutcome, ClientTask, Engine
from fl_lightning.engines.sequential import SequentialEngine

ENGINE_NAMES = ("sequential", "vmap", "ray", "lightning")


def get_engine(engine: str | Engine) -> Engine:
    """An engine instance from a name in :data:`ENGINE_NAMES` or an instance (returned as is)."""
    if isinstance(engine, Engine):
        return engine
    if engine == "sequential":
        return SequentialEngine()
    if engine == "vmap":
        from fl_lightning.engines.vmap import VmapEngine

        return VmapEngine()
    if engine == "ray":
        from fl_lightning.engines.ray import RayEngine

        return RayEngine()
    if engine == "lightning":
        from fl_lightning.engines.lightning import LightningEngine

        return LightningEngine()
    raise ValueError(f"unknown engine {engine!r}; choose one of {list(ENGINE_NAMES)} or pass an Engine")


def __getattr__(name: str) -> Any:
    # VmapEngine, RayEngine and LightningEngine import lazily: Ray is an optional extra, and a Trainer per
    # client is only for modules that need it
    if name == "VmapEngine":
        from fl_lightning.engines.vmap import VmapEngine

        return VmapEngine
    if name == "RayEngine":
        from fl_lightning.engines.ray import RayEngine

        return RayEngine
    if name == "LightningEngine":
        from fl_lightning.engines.lightning import LightningEngine

        return LightningEngine
    raise AttributeError(f"module 'fl_lightning.engines' has no attribute {name!r}")


__all__ = ["ClientOutcome", "ClientTask", "Engine", "ENGINE_NAMES", "LightningEngine", "RayEngine", "SequentialEngine",
           "VmapEngine", "get_engine"]
