"""``fl-lightning report``: ``report.md`` and PNG plots of a sweep folder, beside the paper's numbers."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from jsonargparse import ArgumentParser, Namespace

from fl_lightning.run_summary import LATE_FRACTION
from fl_lightning.sweeps import heatmaps, plots, records
from fl_lightning.sweeps.recipe import normalize_key
from fl_lightning.sweeps.report_table import Labels, TableAxes, cells, mean, sd
from fl_lightning.sweeps.paper import PaperTable, load_paper_results

#: metric keys that get a table: accuracy, per-class accuracy and every attack rate
TABLE_PREFIXES = ("test/acc", "attack/")


def report_parser() -> ArgumentParser:
    """The parser of ``fl-lightning report``."""
    parser = ArgumentParser(description="Write report.md and PNG plots for a sweep folder (finished points only).")
    parser.add_argument("path", type=str, help="the sweep folder, e.g. logs/mnist_label_flip")
    parser.add_argument("--paper", type=Optional[str], default=None,
                        help="entry of fl_lightning/paper_results.yaml to compare with (default: the recipe's "
                             "sweep.paper); 'none' shows ours alone")
    return parser


def run_report(cfg: Namespace) -> Path:
    """Write ``report.md`` and the plots into the sweep folder; returns the report's path."""
    folder = Path(cfg.path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass a sweep folder such as logs/mnist_label_flip")
    points = records.read_points(folder)
    finished = {p["point"] for p in points}
    failed = [f for f in records.read_points(folder, records.FAILED_FILE) if f["point"] not in finished]
    if not points and not failed:
        raise ValueError(f"{folder} holds no finished point (no */{records.SUMMARY_FILE}); "
                         f"run `fl-lightning sweep --config RECIPE` first")
    sweep_path = folder / records.SWEEP_FILE
    sweep = records.read_json(sweep_path) if sweep_path.is_file() else None
    paper = _paper(cfg.paper if cfg.paper is not None else (sweep or {}).get("paper"))
    layout = TableAxes.build(sweep, points + failed, paper)
    if layout.note:
        paper = None
    metrics = [m for m in _metrics(points) if m.startswith(TABLE_PREFIXES)] or ["test/acc"]
    if sweep and sweep.get("heatmap"):  # a robustness matrix: heatmaps instead of one curve per point
        images = heatmaps.write_all(folder, sweep, points) if points else []
        text = _matrix_markdown(folder, sweep, points, failed, images)
    else:
        images = plots.write_all(folder, points, layout, metrics, paper) if points else []
        text = _markdown(folder, sweep, points, failed, layout, metrics, paper, images)
    out = folder / "report.md"
    out.write_text(text)
    print(f"wrote {out} and {len(images)} plots")
    return out


#: profiles whose numbers are only a check that the recipe runs
SMOKE_TEST_PROFILES = ("small",)


def _smoke_test_profile(sweep: dict | None) -> str | None:
    """The profile's name when the sweep ran a smoke-test profile (``small``), else ``None``."""
    profile = (sweep or {}).get("profile")
    return profile if profile in SMOKE_TEST_PROFILES else None


def _paper(table_id: str | None) -> PaperTable | None:
    if not table_id or table_id == "none":
        return None
    tables = load_paper_results()
    if table_id not in tables:
        raise ValueError(f"paper entry {table_id!r} is not in fl_lightning/paper_results.yaml; "
                         f"choose one of {sorted(tables)} or 'none'")
    return tables[table_id]


def _metrics(points: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for point in points:
        # the attackers' own local models (attack/local_*) may be measured only in rounds they attack: late means
        seen = {**point.get("final", {}), **{k: v for k, v in point.get("late_mean", {}).items()
                                             if k.startswith("attack/local_")}}
        keys += [k for k, v in seen.items() if k not in keys and v is not None and k != "attack/local_diverged"
                 and not k.endswith("loss")]
    return sorted(keys, key=lambda k: (k != "test/acc", k))


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _markdown(folder: Path, sweep: dict | None, points: list[dict[str, Any]], failed: list[dict[str, Any]],
              layout: TableAxes, metrics: list[str], paper: PaperTable | None, images: list[Path]) -> str:
    late = int(LATE_FRACTION * 100)
    name = (sweep or {}).get("name", folder.name)
    smoke = _smoke_test_profile(sweep)
    lines = [f"# Report: {name}" + (" (smoke-test scale)" if smoke else ""), ""]
    if smoke:
        lines += [f"**Smoke-test scale**: built from the `{smoke}` profile (a few rounds on small data), so these "
                  "numbers only show that every point runs; they are not comparable with the paper's.", ""]
    if sweep:
        lines += [f"Recipe `{sweep.get('recipe')}`" + (f", profile `{sweep['profile']}`" if sweep.get("profile") else "")
                  + f"; {len(points)} of {len(sweep.get('points', []))} points finished."]
        missing = sorted(set(sweep.get("points", [])) - {p["point"] for p in points + failed})
        if missing:
            lines += ["", f"Not run yet (left out below): {', '.join(missing)}."]
    if failed:
        lines += ["", f"Failed (cells say so): {', '.join(f['point'] for f in failed)}; see Failed points below."]
    rounds = sorted({p.get("rounds", 0) for p in points})
    lines += ["", f"Rounds per point: {', '.join(map(str, rounds))}. Each cell: **final round** / mean over the "
              f"last {late}% of rounds" + (" (paper)" if paper and paper.metrics else "") + ", in percent."]
    if layout.averaged:
        lines += [f"Cells average the runs over {', '.join(layout.averaged)}: **final mean ± sd** / late mean ± sd "
                  "[each run's late mean, in seed order] (sd: sample standard deviation over the runs)."]
    if paper:
        lines += ["", f"Paper: {paper.title} ({paper.source}" + (", no values typed: plot only" if not paper.metrics
                                                                  else "") + ")."]
        if paper.notes:
            lines += ["", f"> {paper.notes}"]
    if layout.note:
        lines += ["", layout.note]
    grouped = cells(points + failed, layout)
    row_keys = layout.sort({r for r, _ in grouped}, layout.rows)
    col_keys = layout.sort({c for _, c in grouped}, layout.columns)
    for metric in metrics:
        lines += ["", f"## {metric}" + (" (smoke-test scale)" if smoke else ""), ""]
        lines += _table(metric, grouped, layout, row_keys, col_keys, paper)
    lines += ["", "## Points", ""] + _points_table(points)
    if failed:
        lines += ["", "## Failed points", ""] + [f"- {f['point']}: {f.get('error', '?')}" for f in failed]
    if images:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.relative_to(folder).as_posix()})" for p in images]
    return "\n".join(lines) + "\n"


def _matrix_markdown(folder: Path, sweep: dict[str, Any], points: list[dict[str, Any]],
                     failed: list[dict[str, Any]], images: list[Path]) -> str:
    """The report of a sweep with ``sweep.heatmap``: no-attack beside under-attack accuracy, tables, heatmaps."""
    lines = [f"# Report: {sweep.get('name', folder.name)} (robustness matrix)", "",
             f"Recipe `{sweep.get('recipe')}`" + (f", profile `{sweep['profile']}`" if sweep.get("profile") else "")
             + f"; {len(points)} of {len(sweep.get('points', []))} points finished."]
    missing = sorted(set(sweep.get("points", [])) - {p["point"] for p in points + failed})
    if missing:
        lines += ["", f"Not run yet (left out below): {len(missing)} points, e.g. {', '.join(missing[:5])}."]
    if failed:
        lines += ["", f"Failed (left out below): {', '.join(f['point'] for f in failed)}."]
    rounds = sorted({p.get("rounds", 0) for p in points})
    lines += ["", f"Rounds per point: {', '.join(map(str, rounds))}. Late accuracy: the mean test accuracy over "
              f"the last {int(LATE_FRACTION * 100)}% of rounds. The `none` column ran without any attack, once per "
              "rule, split and seed; accuracy drops are against it, seed by seed."]
    lines += heatmaps.markdown(sweep, points)
    if images:
        lines += ["", "## Heatmaps", ""] + [f"![{p.stem}]({p.relative_to(folder).as_posix()})" for p in images]
    lines += ["", "## Points", ""] + _points_table(points)
    if failed:
        lines += ["", "## Failed points", ""] + [f"- {f['point']}: {f.get('error', '?')}" for f in failed]
    return "\n".join(lines) + "\n"


def _table(metric: str, grouped: dict, layout: TableAxes, row_keys: list[Labels], col_keys: list[Labels],
           paper: PaperTable | None) -> list[str]:
    head = " / ".join(p.split(".")[-1] for p in layout.rows) or "run"
    out = [f"| {head} | " + " | ".join(layout.header(layout.columns, c) for c in col_keys) + " |",
           "|---" * (len(col_keys) + 1) + "|"]
    for row in row_keys:
        label = layout.header(layout.rows, row)
        name = paper.row_name(row) if paper else None
        if name and name != label:
            label += f" (paper: {name})"
        texts = []
        for column in col_keys:
            group = grouped.get((row, column), [])
            done = [p for p in group if "final" in p]
            text = _cell(metric, done, layout.averaged) if done else "failed" if group else ""
            if done and len(done) < len(group):
                text += f" ({len(group) - len(done)} failed)"
            reference = paper.value(metric, row, column) if paper else None
            if reference is not None:
                text += f" ({_pct(reference, 2)})"
            texts.append(text)
        out.append(f"| {label} | " + " | ".join(texts) + " |")
    return out


def _cell(metric: str, done: list[dict[str, Any]], averaged: list[str]) -> str:
    """``**final** / late``; over several runs (seeds) each as mean ± sd, then each run's late value in seed order."""
    runs = sorted(done, key=lambda p: tuple(_seed_rank(_labels(p).get(a, "")) for a in averaged))
    finals = [p["final"].get(metric) for p in runs]
    lates = [p.get("late_mean", {}).get(metric) for p in runs]
    if len(runs) < 2:
        return f"**{_pct(mean(finals))}** / {_pct(mean(lates))}"
    each = ", ".join(_pct(v) for v in lates)
    return f"**{_pct(mean(finals))} ± {_pct(sd(finals))}** / {_pct(mean(lates))} ± {_pct(sd(lates))} [{each}]"


def _labels(point: dict[str, Any]) -> dict[str, str]:
    return {normalize_key(k): str(v) for k, v in point.get("labels", {}).items()}


def _seed_rank(label: str) -> tuple[int, str]:
    return (int(label), "") if label.lstrip("-").isdigit() else (0, label)


def _points_table(points: list[dict[str, Any]]) -> list[str]:
    out = ["| point | rounds | acc | attack | weight attackers | weight honest | seconds |", "|---" * 7 + "|"]
    for p in points:
        final = p.get("final", {})
        attack = ", ".join(f"{k.split('/')[1]} {_pct(v)}" for k, v in final.items()
                           if k.startswith("attack/") and v is not None) or "–"
        weights = [p.get("weight_attackers_mean"), p.get("weight_honest_mean")]
        shown = ["–" if w is None else f"{w:.4f}" for w in weights]
        out.append(f"| {p['point']} | {p.get('rounds', 0)} | {_pct(final.get('test/acc'))} | {attack} | "
                   f"{shown[0]} | {shown[1]} | {p.get('seconds', '–')} |")
    return out
