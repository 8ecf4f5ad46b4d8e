"""Robustness-matrix heatmaps: late accuracy and accuracy drop per rule x attack, one panel per attacker count.

A sweep with ``sweep.heatmap`` names which grid axes make the figures (e.g. the data split), the rows (the
aggregator), the columns (the attack) and the panels (the number of attackers). Points of ``sweep.baseline``
ran without attacks; their attack label is ``none`` and they are the shared 0-attacker column: every
accuracy drop is the same rule's late accuracy without attacks (same split, same seed) minus its late
accuracy under the attack. Each cell is the mean over the averaged axes (the seeds) with their standard
deviation.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_lightning.sweeps.recipe import normalize_key

#: the heatmaps' metrics: late accuracy, and its drop against the same rule without attacks
LATE_ACC = "late_acc"
ACC_DROP = "acc_drop"
#: the label the attack axes take in a point that ran without attacks
NO_ATTACK = "none"
#: the report's heatmaps go into this subfolder of the sweep folder
HEATMAP_FOLDER = "heatmaps"


@dataclass
class Cell:
    """The values of one heatmap cell, one per seed (or other averaged axis)."""

    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        """Mean of the values, ``None`` when there are none."""
        return statistics.fmean(self.values) if self.values else None

    @property
    def spread(self) -> float | None:
        """Sample standard deviation (0 for a single value), ``None`` when there are none."""
        if not self.values:
            return None
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self, digits: int = 2) -> str:
        """``0.91±0.02`` (or ``–`` for an empty cell)."""
        if self.mean is None:
            return "–"
        return f"{self.mean:.{digits}f}±{self.spread:.{digits}f}"


@dataclass
class Matrix:
    """Every cell of one metric: ``cells[figure][panel][(row, column)]``, with each axis's labels in order."""

    metric: str
    figures: list[str]
    panels: list[str]
    rows: list[str]
    columns: list[str]
    cells: dict[str, dict[str, dict[tuple[str, str], Cell]]]

    def cell(self, figure: str, panel: str, row: str, column: str) -> Cell:
        """One cell (empty when that combination did not run)."""
        return self.cells.get(figure, {}).get(panel, {}).get((row, column), Cell())


def _labels(record: dict[str, Any]) -> dict[str, str]:
    return {normalize_key(k): str(v) for k, v in record.get("labels", {}).items()}


def _axis_labels(sweep: dict[str, Any], path: str | None) -> list[str]:
    if path is None:
        return ["all"]
    for axis in sweep.get("axes", []):
        if axis["path"] == path:
            return [str(label) for label in axis["labels"]]
    return []


def row_label(sweep: dict[str, Any], labels: dict[str, str]) -> str:
    """The heatmap row of a point: its ``rows`` label, then ``name=value`` of each lever axis with several values."""
    roles = sweep["heatmap"]
    parts = [labels.get(roles["rows"], "all")]
    for path in roles.get("levers", []):
        if len(_axis_labels(sweep, path)) > 1:
            parts.append(f"{path.split('.')[-1]}={labels.get(path, '?')}")
    return " ".join(parts)


def row_labels(sweep: dict[str, Any]) -> list[str]:
    """Every row: each rule with each lever stack (levers with one value left out of the label)."""
    import itertools

    roles = sweep["heatmap"]
    levers = [path for path in roles.get("levers", []) if len(_axis_labels(sweep, path)) > 1]
    rows = []
    for rule in _axis_labels(sweep, roles["rows"]):
        for values in itertools.product(*[_axis_labels(sweep, path) for path in levers]):
            rows.append(" ".join([rule] + [f"{path.split('.')[-1]}={v}" for path, v in zip(levers, values)]))
    return rows


def _late_acc(record: dict[str, Any]) -> float | None:
    value = record.get("late_mean", {}).get("test/acc")
    return None if value is None or math.isnan(value) else float(value)


def build(sweep: dict[str, Any], points: list[dict[str, Any]], metric: str) -> Matrix:
    """The cells of ``metric`` (:data:`LATE_ACC`, :data:`ACC_DROP` or a ``late_mean`` key) over the finished points."""
    roles = sweep["heatmap"]
    figure_path, panel_path = roles.get("figures"), roles.get("panels")
    column_path = roles["columns"]
    baseline_paths = set(sweep.get("baseline") or {})

    def get(labels: dict[str, str], path: str | None) -> str:
        return labels.get(path, "all") if path else "all"

    def pairing_key(labels: dict[str, str]) -> tuple:
        """Everything but the attack's own axes: the baseline run this point is compared with."""
        return tuple(sorted((p, v) for p, v in labels.items() if p not in {column_path, panel_path}
                            and p not in baseline_paths and not p.startswith("trainer.attacks")))

    clean = {}
    for record in points:
        labels = _labels(record)
        if labels.get(column_path) == NO_ATTACK and _late_acc(record) is not None:
            clean[pairing_key(labels)] = _late_acc(record)
    cells: dict[str, dict[str, dict[tuple[str, str], Cell]]] = {}
    for record in points:
        labels = _labels(record)
        if metric == LATE_ACC:
            value = _late_acc(record)
        elif metric == ACC_DROP:
            late, reference = _late_acc(record), clean.get(pairing_key(labels))
            value = None if late is None or reference is None else reference - late
        else:
            raw = record.get("late_mean", {}).get(metric)
            value = None if raw is None or math.isnan(raw) else float(raw)
        if value is None or (metric == ACC_DROP and labels.get(column_path) == NO_ATTACK):
            continue
        figure, panel = get(labels, figure_path), get(labels, panel_path)
        key = (row_label(sweep, labels), get(labels, column_path))
        cells.setdefault(figure, {}).setdefault(panel, {}).setdefault(key, Cell()).values.append(value)
    columns = _axis_labels(sweep, column_path)
    if any(NO_ATTACK == key[1] for f in cells.values() for p in f.values() for key in p):
        columns = [NO_ATTACK] + columns
    return Matrix(metric, _axis_labels(sweep, figure_path), _axis_labels(sweep, panel_path),
                  row_labels(sweep), columns, cells)


def metrics_of(points: list[dict[str, Any]]) -> list[str]:
    """The heatmaps to draw: late accuracy, accuracy drop, and every attack rate the points logged."""
    attack = sorted({k for p in points for k, v in p.get("late_mean", {}).items()
                     if k.startswith("attack/") and v is not None and not math.isnan(v)})
    return [LATE_ACC, ACC_DROP] + attack


def title(metric: str) -> str:
    """How a heatmap metric is named in titles and headings."""
    return {LATE_ACC: "late accuracy (mean over the last 40% of rounds)",
            ACC_DROP: "accuracy drop vs the same rule without attack (late accuracy)"}.get(
        metric, f"late {metric}")


def write_all(folder: Path, sweep: dict[str, Any], points: list[dict[str, Any]]) -> list[Path]:
    """One PNG per figure value and metric, into ``folder/heatmaps``; returns their paths."""
    images = []
    for metric in metrics_of(points):
        matrix = build(sweep, points, metric)
        for figure in matrix.figures:
            if matrix.cells.get(figure):
                slug = f"{metric.replace('/', '_')}-{figure}"
                images.append(draw(folder / HEATMAP_FOLDER / f"{slug}.png", matrix, figure, sweep))
    return images


def draw(path: Path, matrix: Matrix, figure_label: str, sweep: dict[str, Any]) -> Path:
    """A row of heatmap panels (one per attacker count); each cell annotated ``mean±sd`` over the seeds."""
    from matplotlib.figure import Figure

    roles = sweep["heatmap"]
    panels = [p for p in matrix.panels if matrix.cells.get(figure_label, {}).get(p)]
    widths = [len(_panel_columns(matrix, figure_label, p)) for p in panels]
    figure = Figure(figsize=(2.2 + 0.95 * sum(widths) + 0.3 * len(panels), 0.9 + 0.42 * len(matrix.rows)),
                    layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    low, high = (0.0, 1.0) if matrix.metric != ACC_DROP else (
        min(0.0, _extreme(matrix, figure_label, min)), max(0.05, _extreme(matrix, figure_label, max)))
    colormap = "RdYlGn" if matrix.metric == LATE_ACC else "Reds"
    image = None
    for panel_axes, panel in zip(axes, panels):
        columns = _panel_columns(matrix, figure_label, panel)
        grid = [[_nan(matrix.cell(figure_label, panel, r, c).mean) for c in columns] for r in matrix.rows]
        image = panel_axes.imshow(grid, cmap=colormap, vmin=low, vmax=high, aspect="auto")
        for i, row in enumerate(matrix.rows):
            for j, column in enumerate(columns):
                cell = matrix.cell(figure_label, panel, row, column)
                if cell.mean is not None:
                    panel_axes.text(j, i, cell.text().replace("±", "\n±"), ha="center", va="center", fontsize=6.5)
        panel_axes.set_xticks(range(len(columns)), columns, rotation=40, ha="right", fontsize=7)
        panel_axes.set_yticks(range(len(matrix.rows)), matrix.rows if panel_axes is axes[0] else [], fontsize=7)
        panel_name = roles.get("panels", "").split(".")[-1] or "all"
        panel_axes.set_title(f"{panel_name}={panel}", fontsize=8)
    if image is not None:
        figure.colorbar(image, ax=list(axes), shrink=0.8)
    split = roles.get("figures", "").split(".")[-1]
    figure.suptitle(f"{title(matrix.metric)}; {split}={figure_label}; mean±sd over seeds", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    return path


def _panel_columns(matrix: Matrix, figure: str, panel: str) -> list[str]:
    present = {column for _, column in matrix.cells.get(figure, {}).get(panel, {})}
    return [c for c in matrix.columns if c in present]


def _extreme(matrix: Matrix, figure: str, pick: Any) -> float:
    values = [cell.mean for panel in matrix.cells.get(figure, {}).values() for cell in panel.values()
              if cell.mean is not None]
    return pick(values) if values else 0.0


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def markdown(sweep: dict[str, Any], points: list[dict[str, Any]]) -> list[str]:
    """Per figure value: each rule's accuracy without attack beside under attack, then the full tables."""
    late = build(sweep, points, LATE_ACC)
    drop = build(sweep, points, ACC_DROP)
    roles = sweep["heatmap"]
    split = roles.get("figures", "").split(".")[-1] or "all"
    panel_name = roles.get("panels", "").split(".")[-1] or "attackers"
    lines: list[str] = []
    for figure in late.figures:
        if not late.cells.get(figure):
            continue
        attacked = [p for p in late.panels if any(c != NO_ATTACK for _, c in late.cells[figure].get(p, {}))]
        lines += ["", f"### {split}={figure}: accuracy without attack beside under attack", "",
                  "Late accuracy, mean±sd over seeds. Under attack: the mean over the attacks, and the worst "
                  "attack with its accuracy.", "",
                  "| rule | no attack | " + " | ".join(f"{panel_name}={p}: mean | worst" for p in attacked) + " |",
                  "|---" * (2 + 2 * len(attacked)) + "|"]
        for row in late.rows:
            clean = next((late.cell(figure, p, row, NO_ATTACK) for p in late.panels
                          if late.cell(figure, p, row, NO_ATTACK).mean is not None), None)
            texts = [clean.text() if clean else "–"]
            for panel in attacked:
                cells = {c: late.cell(figure, panel, row, c) for c in late.columns if c != NO_ATTACK}
                means = [cell.mean for cell in cells.values() if cell.mean is not None]
                worst = min(((c, cell) for c, cell in cells.items() if cell.mean is not None),
                            key=lambda item: item[1].mean, default=None)
                texts += [f"{statistics.fmean(means):.2f}" if means else "–",
                          f"{worst[0]} {worst[1].text()}" if worst else "–"]
            lines.append(f"| {row} | " + " | ".join(texts) + " |")
        for matrix in (late, drop):
            for panel in attacked:
                columns = [c for c in matrix.columns if c != NO_ATTACK]
                lines += ["", f"{title(matrix.metric)}, {split}={figure}, {panel_name}={panel}:", "",
                          "| rule | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
                lines += [f"| {row} | " + " | ".join(matrix.cell(figure, panel, row, c).text() for c in columns)
                          + " |" for row in matrix.rows]
    return lines
