"""The frontier of accuracy against protection: per rule and lever stack, late accuracy without attack against
the worst late accuracy under the matrix's attacks, with the Pareto front marked.

A stack is on the front when no other stack of the same split is at least as good on both axes and better on
one. Points come from a robustness-matrix sweep (``sweep.heatmap``); the worst case is the minimum over
attacks and attacker counts of the seed-mean late accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_lightning.sweeps.heatmaps import HEATMAP_FOLDER, LATE_ACC, NO_ATTACK, Matrix, build


@dataclass
class Stack:
    """One row of the matrix on one split: its no-attack and worst-case late accuracy."""

    name: str
    clean: float
    worst: float
    worst_attack: str
    on_front: bool = False


def pareto_front(stacks: list[Stack]) -> list[Stack]:
    """Mark (and return) the stacks no other stack dominates on (clean, worst)."""
    for s in stacks:
        s.on_front = not any((o.clean >= s.clean and o.worst >= s.worst) and (o.clean > s.clean or o.worst > s.worst)
                             for o in stacks)
    return [s for s in stacks if s.on_front]


def stacks_of(matrix: Matrix, figure: str) -> list[Stack]:
    """Every row with both a no-attack cell and at least one attacked cell on ``figure``."""
    out = []
    for row in matrix.rows:
        clean = [matrix.cell(figure, p, row, NO_ATTACK).mean for p in matrix.panels]
        clean = [c for c in clean if c is not None]
        attacked = [(f"{column} ({panel})", matrix.cell(figure, panel, row, column).mean)
                    for panel in matrix.panels for column in matrix.columns if column != NO_ATTACK]
        attacked = [(name, value) for name, value in attacked if value is not None]
        if clean and attacked:
            worst = min(attacked, key=lambda item: item[1])
            out.append(Stack(row, clean[0], worst[1], worst[0]))
    pareto_front(out)
    return out


_SHORT = (("ResidualReweight", "RR"), ("NNM_inner=", "NNM+"), ("client_momentum=", "cm="),
          ("server_optimizer=", "server="), ("proximal_mu=", "mu="))


def short_name(name: str) -> str:
    """A stack's label for a figure: arguments by value only (``SGD(1,0.9)``), long names abbreviated."""
    import re

    name = re.sub(r"\(([^()]*)\)", lambda m: "(" + ",".join(v.split("=")[-1] for v in m.group(1).split(",")) + ")",
                  name)
    for long, short in _SHORT:
        name = name.replace(long, short)
    return name


def write_all(folder: Path, sweep: dict[str, Any], points: list[dict[str, Any]]) -> list[Path]:
    """One scatter per split into ``folder/heatmaps/frontier-<split>.png``; returns their paths."""
    matrix = build(sweep, points, LATE_ACC)
    images = []
    for figure in matrix.figures:
        stacks = stacks_of(matrix, figure)
        if len(stacks) >= 2:
            images.append(draw(folder / HEATMAP_FOLDER / f"frontier-{figure}.png", stacks, figure, sweep))
    return images


def draw(path: Path, stacks: list[Stack], figure_label: str, sweep: dict[str, Any]) -> Path:
    """No-attack late accuracy (x) against worst-case late accuracy (y); the front joined and labelled."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5.5), layout="constrained")
    axes = figure.subplots()
    off = [s for s in stacks if not s.on_front]
    front = sorted((s for s in stacks if s.on_front), key=lambda s: s.clean)
    axes.scatter([s.clean for s in off], [s.worst for s in off], s=18, color="tab:gray", label="dominated")
    axes.plot([s.clean for s in front], [s.worst for s in front], "o-", color="tab:red", label="Pareto front")
    for s in front:
        note = axes.annotate(short_name(s.name), (s.clean, s.worst), fontsize=6.5, xytext=(3, 3),
                             textcoords="offset points")
        note.set_in_layout(False)  # long labels must not squeeze the axes
    axes.set_xlabel("late accuracy without attack")
    axes.set_ylabel("worst late accuracy under the attacks")
    split = sweep["heatmap"].get("figures", "").split(".")[-1] or "split"
    axes.set_title(f"accuracy vs protection, {split}={figure_label} ({len(stacks)} rule x lever stacks)", fontsize=9)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path


def markdown(sweep: dict[str, Any], points: list[dict[str, Any]]) -> list[str]:
    """Per split: every stack's no-attack and worst-case late accuracy, front first."""
    matrix = build(sweep, points, LATE_ACC)
    split = sweep["heatmap"].get("figures", "").split(".")[-1] or "all"
    lines: list[str] = []
    for figure in matrix.figures:
        stacks = stacks_of(matrix, figure)
        if not stacks:
            continue
        lines += ["", f"### {split}={figure}: accuracy against protection (Pareto front marked *)", "",
                  "| stack | no attack | worst under attack | worst attack |", "|---|---|---|---|"]
        for s in sorted(stacks, key=lambda s: (not s.on_front, -s.worst)):
            lines.append(f"| {'*' if s.on_front else ''}{s.name} | {s.clean:.3f} | {s.worst:.3f} | {s.worst_attack} |")
    return lines
