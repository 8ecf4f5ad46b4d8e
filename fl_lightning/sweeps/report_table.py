"""The axes of a sweep report's tables: which grid axes are rows, columns, or averaged over, and the cells they make."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fl_lightning.sweeps.paper import PaperTable
from fl_lightning.sweeps.recipe import AGGREGATOR, normalize_key

#: axes the report averages over instead of showing (repeated runs of the same setting)
AVERAGED = ("trainer.seed",)

Labels = tuple[str, ...]


@dataclass
class TableAxes:
    """Row axes, column axes and averaged axes (dotted paths), with each axis's labels in grid order."""

    rows: list[str]
    columns: list[str]
    averaged: list[str]
    order: dict[str, list[str]]
    note: str = ""

    def row(self, record: dict[str, Any]) -> Labels:
        """The row labels of a point's ``summary.json``."""
        return tuple(_labels(record)[p] for p in self.rows)

    def column(self, record: dict[str, Any]) -> Labels:
        """The column labels of a point's ``summary.json``."""
        return tuple(_labels(record)[p] for p in self.columns)

    def sort(self, keys: set[Labels], paths: list[str]) -> list[Labels]:
        """Label tuples in the grid's order."""
        def rank(key: Labels) -> tuple[int, ...]:
            return tuple(self.order[p].index(v) if v in self.order[p] else len(self.order[p])
                         for p, v in zip(paths, key))
        return sorted(keys, key=rank)

    def header(self, paths: list[str], key: Labels) -> str:
        """``clients=5`` style text for a row or column (an aggregator by its label alone)."""
        if not paths:
            return "all"
        return ", ".join(v if p == AGGREGATOR else f"{p.split('.')[-1]}={v}" for p, v in zip(paths, key))

    @staticmethod
    def build(sweep: dict[str, Any] | None, records: list[dict[str, Any]], paper: PaperTable | None) -> "TableAxes":
        """Rows and columns from the paper's table when its axes are in the sweep, else from the sweep."""
        order = _axis_order(sweep, records)
        axes = list(order)
        shown = [p for p in axes if p not in AVERAGED]
        note = ""
        if paper is not None:
            wanted = paper.rows.paths + paper.columns.paths
            missing = [p for p in wanted if p not in order]
            if not missing:
                rest = [p for p in shown if p not in wanted]
                return TableAxes(paper.rows.paths, paper.columns.paths + rest,
                              [p for p in axes if p not in wanted + rest], order)
            note = (f"The paper's {paper.id} is laid out on the axes {missing}, which this sweep does not "
                    "vary; its numbers are left out.")
        requested = [normalize_key(k) for k in (sweep or {}).get("rows") or []]
        rows = ([p for p in requested if p in order] or [p for p in shown if p == AGGREGATOR] or shown[:1])
        columns = [p for p in shown if p not in rows]
        return TableAxes(rows, columns, [p for p in axes if p not in rows + columns], order, note)


def _labels(record: dict[str, Any]) -> dict[str, str]:
    return {normalize_key(k): v for k, v in record.get("labels", {}).items()}


def _axis_order(sweep: dict[str, Any] | None, records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each axis's labels in grid order: from ``sweep.json``, else in the order the points show them."""
    if sweep and sweep.get("axes"):
        return {a["path"]: [str(v) for v in a["labels"]] for a in sweep["axes"]}
    order: dict[str, list[str]] = {}
    for record in records:
        for path, label in _labels(record).items():
            labels = order.setdefault(path, [])
            if label not in labels:
                labels.append(label)
    return order


def cells(points: list[dict[str, Any]], layout: TableAxes) -> dict[tuple[Labels, Labels], list[dict[str, Any]]]:
    """The points of every (row, column) cell (several when an averaged axis such as the seed varies)."""
    grouped: dict[tuple[Labels, Labels], list[dict[str, Any]]] = defaultdict(list)
    for point in points:
        grouped[(layout.row(point), layout.column(point))].append(point)
    return grouped


def mean(values: list[float | None]) -> float | None:
    """Mean of the values that exist."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None


def sd(values: list[float | None]) -> float | None:
    """Sample standard deviation (n - 1) of the values that exist; ``None`` with fewer than two."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if len(present) < 2:
        return None
    centre = sum(present) / len(present)
    return math.sqrt(sum((v - centre) ** 2 for v in present) / (len(present) - 1))
