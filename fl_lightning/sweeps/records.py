"""The files a sweep leaves: ``sweep.json`` (the grid) and one ``summary.json`` per finished point."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fl_lightning.attacks.compose import all_attacker_ids
from fl_lightning.run_summary import RunSummary

if TYPE_CHECKING:
    from fl_lightning.sweeps.recipe import Point, Recipe
    from fl_lightning.trainer import FederatedTrainer

SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "summary.json"
POINT_FILE = "point.json"
FAILED_FILE = "failed.json"
#: config keys that may change between runs of the same point without making it another point
COSMETIC_KEYS = ("description",)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a kill mid-write leaves no half file); NaN becomes null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(_finite(data), stream, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """Read a JSON file, naming it in the error when it is broken."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it to run that point again") from exc


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {str(k): _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def sweep_record(recipe: "Recipe", points: list["Point"]) -> dict[str, Any]:
    """What ``sweep.json`` holds: the recipe, profile, axes and point names (the report's layout)."""
    return {"name": recipe.name, "recipe": recipe.path, "profile": recipe.profile, "paper": recipe.paper,
            "rows": recipe.rows, "baseline": recipe.baseline, "heatmap": recipe.heatmap,
            "axes": [{"key": a.key, "path": a.path, "values": a.values, "labels": a.labels()} for a in recipe.axes],
            "points": [p.name for p in points]}


def comparable(config: dict) -> dict:
    """The parts of a point's config that decide its results."""
    return {k: v for k, v in config.items() if k not in COSMETIC_KEYS}


def config_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """The first dotted path where two configs differ, with both values; ``None`` when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = config_difference(old.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}.")
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = config_difference(a, b, f"{prefix}{i}.")
            if found:
                return found
        return None
    return None if _finite(old) == _finite(new) else f"{prefix.rstrip('.')}: {old!r} -> {new!r}"


def point_record(point: "Point", trainer: "FederatedTrainer", summary: RunSummary,
                 seconds: float) -> dict[str, Any]:
    """What ``summary.json`` holds: headline numbers plus every round's metrics and client weights."""
    attackers = [int(c) for c in all_attacker_ids(trainer.attacks)]
    history = [{"round": r.round, "client_ids": [int(c) for c in r.client_ids],
                "client_weights": None if r.client_weights is None else [float(w) for w in r.client_weights],
                "metrics": dict(r.metrics)} for r in trainer.history]
    final = dict(trainer.history[-1].metrics) if trainer.history else {}
    final.update(summary.final)  # the test() numbers; round-only metrics (callbacks) kept from the last round
    return {"point": point.name, "params": point.params, "labels": point.labels,
            "config": point.config, "rounds": summary.rounds, "final": final, "late_mean": summary.late_mean,
            "weight_attackers_mean": summary.weight_attackers_mean,
            "weight_honest_mean": summary.weight_honest_mean, "attackers": attackers,
            "log_dir": summary.log_dir, "seconds": round(seconds, 2), "history": history}


def summary_from_record(record: dict[str, Any]) -> RunSummary:
    """The :class:`RunSummary` of a finished point read back from its ``summary.json``."""
    nan = float("nan")
    return RunSummary(name=record["point"], final=record.get("final", {}), late_mean=record.get("late_mean", {}),
                      weight_attackers_mean=_or(record.get("weight_attackers_mean"), nan),
                      weight_honest_mean=_or(record.get("weight_honest_mean"), nan),
                      log_dir=record.get("log_dir", ""), rounds=record.get("rounds", 0))


def _or(value: Any, default: float) -> float:
    return default if value is None else value


def read_points(folder: str | Path, name: str = SUMMARY_FILE) -> list[dict[str, Any]]:
    """Every ``*/summary.json`` (or ``*/<name>``) under a sweep folder, in point-name order."""
    return [read_json(p) for p in sorted(Path(folder).glob(f"*/{name}"))]
