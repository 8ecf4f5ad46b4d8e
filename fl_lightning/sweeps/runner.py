"""``fl-lightning sweep``: run every point of a recipe's grid in-process, resumably."""
from __future__ import annotations

import copy
import fnmatch
import time
import traceback
from pathlib import Path
from typing import Any, Optional, Union

from jsonargparse import ArgumentParser, Namespace
from rich.console import Console
from rich.table import Table

from fl_lightning.checkpoint import CHECKPOINT_NAME, run_files
from fl_lightning.console_tables import print_whole
from fl_lightning.fit_config import check_recipe, fit_one, fit_parser
from fl_lightning.recipe_bounds import safe_load
from fl_lightning.recipe_loggers import check_loggers
from fl_lightning.run_paths import check_name, check_no_symlinks
from fl_lightning.run_summary import RunSummary, print_summaries
from fl_lightning.sweeps import records
from fl_lightning.sweeps.recipe import Point, Recipe, load_recipe


def sweep_parser() -> ArgumentParser:
    """The parser of ``fl-lightning sweep``."""
    parser = ArgumentParser(description="Run every point of a recipe's sweep grid, one after another; "
                                        "finished points are skipped and interrupted ones resume.")
    parser.add_argument("--config", type=str, required=True, help="the recipe YAML (its sweep.grid is the grid)")
    parser.add_argument("--profile", type=Optional[str], default=None,
                        help="apply the recipe's profiles.NAME first (small: every recipe in seconds); "
                             "logs then go to SAVE_DIR/NAME-PROFILE")
    parser.add_argument("--set", type=list[str], default=[],
                        help="dotted overrides applied after the profile, KEY=VALUE with VALUE in YAML, e.g. "
                             "--set '[trainer.rounds=100, model.init_args.lr=0.05]'")
    parser.add_argument("--only", type=Optional[Union[list[str], str]], default=None,
                        help="run only the points whose name matches one of these globs, e.g. "
                             "--only '[ResidualReweight-*, FedAvg-*]'")
    parser.add_argument("--dry_run", type=bool, default=False, help="list the points and their state, run nothing")
    parser.add_argument("--name", type=Optional[str], default=None, help="sweep folder name (default: the recipe's)")
    parser.add_argument("--save_dir", type=Optional[str], default=None,
                        help="TensorBoard root (default: the recipe's save_dir)")
    parser.add_argument("--follow_symlinks", type=bool, default=False,
                        help="let the points write through symlinks below SAVE_DIR (default: refused)")
    return parser


def run_sweep(cfg: Namespace, console: Console | None = None) -> list[RunSummary]:
    """Run (or with ``dry_run`` list) the points of ``cfg.config``; returns the summaries of the points run or found."""
    console = console or Console()
    recipe = load_recipe(cfg.config, cfg.profile, parse_overrides(cfg.set))
    if cfg.name:
        recipe.base["name"] = cfg.name
    if cfg.save_dir:
        recipe.base["save_dir"] = cfg.save_dir
    if cfg.follow_symlinks:
        recipe.base["follow_symlinks"] = True
    check_name(recipe.name, "name")  # before anything is written under SAVE_DIR/NAME
    follow = bool(recipe.base.get("follow_symlinks", False))
    points = recipe.points()
    for point in points:
        check_name(point.name, f"sweep point {point.name!r}")
        check_no_symlinks(recipe.save_dir, Path(recipe.save_dir) / recipe.name / point.name / "checkpoints",
                          f"sweep point {point.name!r}", follow)
    globs = [cfg.only] if isinstance(cfg.only, str) else cfg.only
    selected = [p for p in points if globs is None or any(fnmatch.fnmatchcase(p.name, g) for g in globs)]
    if not selected:
        raise ValueError(f"--only {cfg.only!r} matches none of the {len(points)} points; "
                         f"for example {[p.name for p in points[:3]]}" + _list_read_as_one_glob(globs))
    parser = fit_parser()
    parser.exit_on_error = False  # a bad point raises (named by parse_point) instead of exiting
    configs = [parse_point(parser, p) for p in selected]  # a typo fails here, before any point runs
    for config in configs:  # as is a logger that is not one, or its wrong init_args
        check_loggers(config.trainer.logger)
    root = Path(recipe.save_dir) / recipe.name
    _print_plan(console, recipe, selected, root)
    if cfg.dry_run:
        return []
    records.write_json(root / records.SWEEP_FILE, records.sweep_record(recipe, points))
    summaries, failed = [], []
    for number, (point, point_cfg) in enumerate(zip(selected, configs), start=1):
        console.rule(f"[bold]{recipe.name}[/] point {number}/{len(selected)}: [cyan]{point.name}")
        summary = run_point(point, point_cfg, parser, recipe, console)
        if summary is None:
            failed.append(point.name)
        else:
            summaries.append(summary)
    if summaries:
        print_summaries(summaries, title=recipe.name)
    console.print(f"Report: fl-lightning report {root}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(selected)} points failed: {', '.join(failed)}; each folder's "
                           f"{records.FAILED_FILE} says why (the report lists them as failed)")
    return summaries


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["trainer.rounds=100", ...]`` -> ``{"trainer.rounds": 100}`` (values read as YAML)."""
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r} is not KEY=VALUE; write e.g. --set trainer.rounds=100")
        overrides[key.strip()] = safe_load(value, f"--set {key.strip()}")
    return overrides


def parse_point(parser: ArgumentParser, point: Point) -> Namespace:
    """The point's config checked by the fit parser; an invalid key or value names the point."""
    try:
        cfg = parser.parse_object(copy.deepcopy(point.config))  # jsonargparse edits what it is given
        check_recipe(cfg)  # nothing of any point is built before every point passed
        return cfg
    except Exception as exc:  # argparse.ArgumentError from jsonargparse, or an import error of a class_path
        raise ValueError(f"sweep point {point.name!r} ({point.params}) is not a valid fit config: {exc}. "
                         "Check the sweep.grid and profile keys against `fl-lightning fit --help`.") from exc


def run_point(point: Point, cfg: Namespace, parser: ArgumentParser, recipe: Recipe,
              console: Console) -> RunSummary | None:
    """Run one point (or skip it when its ``summary.json`` exists); resume it from its own checkpoint.

    A point whose training raises (e.g. every client diverged) gets a ``failed.json`` and returns ``None``; a
    missing file (the dataset) raises ``FileNotFoundError`` at once, since every other point would fail alike.
    """
    folder = Path(recipe.save_dir) / recipe.name / point.name
    summary_path = folder / records.SUMMARY_FILE
    if summary_path.is_file():
        record = records.read_json(summary_path)
        _check_same(record.get("config", {}), point, summary_path)
        console.print(f"finished earlier, skipped ({summary_path})")
        return records.summary_from_record(record)
    point_path = folder / records.POINT_FILE
    if point_path.is_file():
        _check_same(records.read_json(point_path).get("config", {}), point, point_path)
    records.write_json(point_path, {"point": point.name, "params": point.params, "config": point.config})
    checkpoint = folder / "checkpoints" / CHECKPOINT_NAME
    cfg.save_dir, cfg.name = recipe.save_dir, recipe.name
    # never another point's checkpoint; a retried point that failed before its first checkpoint starts again
    # from round 0 in its folder ("last" finds none), its earlier logs dropped, instead of being refused
    cfg.ckpt_path = str(checkpoint) if checkpoint.is_file() else "last" if run_files(folder) else None
    if checkpoint.is_file():
        console.print(f"resuming from {checkpoint}")
    started = time.perf_counter()
    failed_path = folder / records.FAILED_FILE
    try:
        trainer = fit_one(cfg, parser, run_name=point.name)
    except FileNotFoundError:  # a missing dataset fails every point alike: stop at the first with its message
        raise
    except Exception as exc:  # a diverged or broken point must not stop the others (Ctrl-C still does)
        records.write_json(failed_path, {"point": point.name, "params": point.params, "labels": point.labels,
                                         "error": f"{type(exc).__name__}: {exc}",
                                         "traceback": traceback.format_exc()})
        console.print(f"[red]failed[/]: {type(exc).__name__}: {exc}", soft_wrap=True)
        console.print(f"details: {failed_path} (the next sweep run tries this point again)", soft_wrap=True)
        return None
    failed_path.unlink(missing_ok=True)
    summary = RunSummary.from_trainer(point.name, trainer)
    records.write_json(summary_path, records.point_record(point, trainer, summary, time.perf_counter() - started))
    shown = "  ".join(f"{k} {v:.3f}" for k, v in summary.final.items()
                      if k == "test/acc" or k.startswith("attack/"))
    console.print(shown or "finished", soft_wrap=True)
    console.print(f"summary: {summary_path}", soft_wrap=True)
    return summary


def _check_same(saved: dict, point: Point, path: Path) -> None:
    difference = records.config_difference(records.comparable(saved), records.comparable(point.config))
    if difference:
        raise ValueError(f"{path} belongs to a run of point {point.name!r} with another config "
                         f"(first difference: {difference}); delete {path.parent} to rerun it, or pass "
                         "--name to sweep into a new folder")


def _print_plan(console: Console, recipe: Recipe, points: list[Point], root: Path) -> None:
    table = Table(title=f"{recipe.name}: {len(points)} points -> {root}"
                        + (f" (profile {recipe.profile})" if recipe.profile else ""),
                  caption=f"the recipe's profiles: {', '.join(recipe.profiles) or 'none'}")
    table.add_column("#", justify="right")
    table.add_column("point")
    table.add_column("state")
    for number, point in enumerate(points, start=1):
        folder = root / point.name
        state = ("done" if (folder / records.SUMMARY_FILE).is_file()
                 else "resume" if (folder / "checkpoints" / CHECKPOINT_NAME).is_file() else "new")
        table.add_row(str(number), point.name, state)
    print_whole(console, table)


def _list_read_as_one_glob(globs: list[str]) -> str:
    """A hint when a bracketed list reached ``--only`` as one string: YAML reads ``[*x]`` as an alias
    (``*`` starts one) and the list is then kept whole, where ``[...]`` is a character class."""
    if len(globs) == 1 and globs[0].startswith("[") and globs[0].endswith("]"):
        return ("; the list was read as one pattern (in YAML a leading * starts an alias): quote its items, "
                "--only '[\"*x-*\", \"y-*\"]', or give one pattern without brackets, --only '*x-*'")
    return ""
