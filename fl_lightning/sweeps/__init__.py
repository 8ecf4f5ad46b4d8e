"""``fl-lightning sweep`` and ``fl-lightning report``: run a recipe's grid, then tabulate it beside the paper."""
from fl_lightning.sweeps.recipe import Axis, Point, Recipe, load_recipe
from fl_lightning.sweeps.report import report_parser, run_report
from fl_lightning.sweeps.runner import run_sweep, sweep_parser

__all__ = ["Axis", "Point", "Recipe", "load_recipe", "report_parser", "run_report", "run_sweep", "sweep_parser"]
