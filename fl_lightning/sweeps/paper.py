"""The paper's own numbers (``fl_lightning/paper_results.yaml``) laid out on a sweep's axes."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fl_lightning.sweeps.recipe import normalize_key, value_label

SOURCES = ("table", "text", "figure")


@dataclass
class PaperAxes:
    """The rows (or the columns) of a paper table: which sweep axes they are and their values."""

    paths: list[str]
    values: list[tuple[str, ...]]
    names: list[str]

    @staticmethod
    def parse(spec: dict | None, where: str) -> "PaperAxes":
        """Read ``{key | keys, values, names}``; no spec means a single unnamed column."""
        if not spec:
            return PaperAxes([], [()], [""])
        keys = spec.get("keys") or [spec.get("key")]
        if not all(isinstance(k, str) for k in keys):
            raise ValueError(f"{where}: give key: AXIS or keys: [AXIS, ...]")
        values = spec.get("values") or []
        rows = [tuple(value_label(x) for x in (v if len(keys) > 1 else [v])) for v in values]
        if any(len(r) != len(keys) for r in rows):
            raise ValueError(f"{where}: every value needs one entry per key {keys}")
        names = spec.get("names") or [""] * len(rows)  # unnamed: the paper writes them as the values
        if len(names) != len(rows):
            raise ValueError(f"{where}: {len(names)} names for {len(rows)} values")
        return PaperAxes([normalize_key(k) for k in keys], rows, [str(n) for n in names])


@dataclass
class PaperTable:
    """One table or figure of the paper: layout, values (as fractions, like our metrics) and where they come from."""

    id: str
    title: str
    source: str
    rows: PaperAxes
    columns: PaperAxes
    metrics: dict[str, list[list[float | None]]] = field(default_factory=dict)
    recipe: str | None = None
    notes: str = ""

    def value(self, metric: str, row: tuple[str, ...], column: tuple[str, ...]) -> float | None:
        """The paper's value of ``metric`` at these row and column labels, if it reports one."""
        if metric not in self.metrics or row not in self.rows.values or column not in self.columns.values:
            return None
        return self.metrics[metric][self.rows.values.index(row)][self.columns.values.index(column)]

    def row_name(self, row: tuple[str, ...]) -> str | None:
        """What the paper calls this row (``Ours`` for ResidualReweight), if it names it."""
        if row not in self.rows.values:
            return None
        return self.rows.names[self.rows.values.index(row)] or None


def default_path() -> Path:
    """The packaged ``paper_results.yaml``."""
    return Path(str(resources.files("fl_lightning") / "paper_results.yaml"))


def load_paper_results(path: str | Path | None = None) -> dict[str, PaperTable]:
    """Every entry of the paper's data file, checked for shape."""
    path = Path(path) if path is not None else default_path()
    raw: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return {table_id: _table(table_id, spec, f"{path}: {table_id}") for table_id, spec in raw.items()}


def _table(table_id: str, spec: dict, where: str) -> PaperTable:
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"{where}: source must be one of {SOURCES}, got {source!r}")
    rows = PaperAxes.parse(spec.get("rows"), f"{where}.rows")
    columns = PaperAxes.parse(spec.get("columns"), f"{where}.columns")
    units = {"percent": 0.01, "fraction": 1.0}
    if spec.get("unit", "percent") not in units:
        raise ValueError(f"{where}: unit must be one of {list(units)}, got {spec.get('unit')!r}")
    scale = units[spec.get("unit", "percent")]
    metrics = {metric: [[None if v is None else v * scale for v in row] for row in matrix]
               for metric, matrix in (spec.get("metrics") or {}).items()}
    for metric, matrix in metrics.items():
        shape_ok = len(matrix) == len(rows.values) and all(len(r) == len(columns.values) for r in matrix)
        if not shape_ok:
            raise ValueError(f"{where}.metrics.{metric}: expected {len(rows.values)} rows of "
                             f"{len(columns.values)} values")
    return PaperTable(id=table_id, title=str(spec.get("title", table_id)), source=source, rows=rows,
                      columns=columns, metrics=metrics, recipe=spec.get("recipe"),
                      notes=str(spec.get("notes", "")).strip())
