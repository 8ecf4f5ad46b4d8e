"""The report's PNGs: metric per round per row, final metric per column, and client weights per round."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fl_lightning.sweeps.report_table import TableAxes, cells, mean
from fl_lightning.sweeps.paper import PaperTable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PANELS = 24
#: the report's plots go into this subfolder of the sweep folder
PLOT_FOLDER = "plots"


def write_all(folder: Path, points: list[dict[str, Any]], layout: TableAxes, metrics: list[str],
              paper: PaperTable | None) -> list[Path]:
    """Every plot of the report, written into ``folder/plots``; returns their paths."""
    folder = folder / PLOT_FOLDER
    grouped = cells(points, layout)
    rows = layout.sort({r for r, _ in grouped}, layout.rows)
    columns = layout.sort({c for _, c in grouped}, layout.columns)
    images = []
    for metric in metrics:
        slug = metric.replace("/", "_")
        images.append(_curves(folder / f"{slug}_vs_round.png", metric, grouped, layout, rows, columns))
        if columns != [()]:
            images.append(_finals(folder / f"{slug}_final.png", metric, grouped, layout, rows, columns, paper))
    for point in points:
        if any(r.get("client_weights") for r in point.get("history", [])):
            images.append(client_weights(folder / "weights" / f"{point['point']}.png", point))
    return images


def _mean_curve(group: list[dict[str, Any]], metric: str) -> tuple[list[int], list[float]]:
    by_round: dict[int, list[float]] = {}
    for point in group:
        for record in point.get("history", []):
            value = record.get("metrics", {}).get(metric)
            if value is not None and not math.isnan(value):
                by_round.setdefault(record["round"], []).append(value)
    rounds = sorted(by_round)
    return [r + 1 for r in rounds], [sum(by_round[r]) / len(by_round[r]) for r in rounds]


def _curves(path: Path, metric: str, grouped: dict, layout: TableAxes, rows: list, columns: list) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    shown = columns[:MAX_PANELS]
    across = min(4, len(shown))
    down = math.ceil(len(shown) / across)
    figure = Figure(figsize=(4 * across, 3 * down), layout="constrained")
    axes = figure.subplots(down, across, squeeze=False, sharey=True)
    for panel, column in zip(axes.flat, shown):
        for row in rows:
            group = grouped.get((row, column))
            if group:
                x, y = _mean_curve(group, metric)
                panel.plot(x, y, label=layout.header(layout.rows, row), linewidth=1.2)
        panel.set_title(layout.header(layout.columns, column), fontsize=9)
        panel.set_xlabel("round")
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.grid(alpha=0.3)
    for panel in axes.flat[len(shown):]:
        panel.set_visible(False)
    axes[0, 0].set_ylabel(metric)
    axes[0, 0].legend(fontsize=7)
    more = f" (first {MAX_PANELS} of {len(columns)} columns)" if len(columns) > MAX_PANELS else ""
    figure.suptitle(f"{metric} per round{more}")
    return _save(figure, path)


def _finals(path: Path, metric: str, grouped: dict, layout: TableAxes, rows: list, columns: list,
            paper: PaperTable | None) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(5, 0.6 * len(columns) + 3), 3.5), layout="constrained")
    panel = figure.subplots()
    x = list(range(len(columns)))
    for row in rows:
        y = [mean([p["final"].get(metric) for p in grouped.get((row, c), [])]) for c in columns]
        line = panel.plot(x, [math.nan if v is None else v for v in y], marker="o",
                          label=layout.header(layout.rows, row))[0]
        reference = [paper.value(metric, row, c) if paper else None for c in columns]
        if any(v is not None for v in reference):
            panel.plot(x, [math.nan if v is None else v for v in reference], linestyle="--", marker="x",
                       color=line.get_color(), alpha=0.6)
    panel.set_xticks(x, [layout.header(layout.columns, c) for c in columns], rotation=45, ha="right", fontsize=8)
    panel.set_ylabel(f"final {metric}")
    panel.grid(alpha=0.3)
    panel.legend(fontsize=7)
    panel.set_title(f"final {metric}" + (" (dashed: paper)" if paper and paper.metrics else ""))
    return _save(figure, path)


def client_weights(path: Path, point: dict[str, Any]) -> Path:
    """Each participating client's aggregation weight per round; attackers in red."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    attackers = set(point.get("attackers", []))
    figure = Figure(figsize=(7, 3.5), layout="constrained")
    panel = figure.subplots()
    for kind, color, size in (("honest", "0.55", 8), ("attacker", "tab:red", 18)):
        xs, ys = [], []
        for record in point.get("history", []):
            for client, weight in zip(record["client_ids"], record.get("client_weights") or []):
                if (client in attackers) == (kind == "attacker"):
                    xs.append(record["round"] + 1)
                    ys.append(weight)
        if xs:
            panel.scatter(xs, ys, s=size, color=color, label=kind, alpha=0.7, linewidths=0)
    uniform = [1 / len(r["client_ids"]) for r in point.get("history", []) if r.get("client_weights")]
    if uniform:
        panel.axhline(sum(uniform) / len(uniform), color="k", linestyle=":", linewidth=1, label="1/K")
    panel.set_xlabel("round")
    panel.xaxis.set_major_locator(MaxNLocator(integer=True))
    panel.set_ylabel("client weight")
    panel.set_title(f"{point['point']}: aggregation weight per client")
    panel.legend(fontsize=7)
    panel.grid(alpha=0.3)
    return _save(figure, path)


def _save(figure: "Figure", path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path
