"""Build and run one fit from a config: the parser of ``fl-lightning fit`` and the code that runs what it parsed.

Both the command line (``cli.py``) and the sweep runner (``sweeps/runner.py``) import this module; it
imports neither of them.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional, Union

import lightning as L
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from lightning.pytorch.loggers import TensorBoardLogger

# imported so that configs may name any shipped class by its short name (``Krum``, ``LabelFlip``)
import fl_lightning.aggregators  # noqa: F401
import fl_lightning.attacks  # noqa: F401
import fl_lightning.data  # noqa: F401
import fl_lightning.models  # noqa: F401
import fl_lightning.optim  # noqa: F401
from fl_lightning.aggregators.base import Aggregator
from fl_lightning.data.datamodule import FederatedDataModule
from fl_lightning.recipe_loggers import build_loggers, check_loggers
from fl_lightning.recipe_bounds import bound_parser_loader
from fl_lightning.recipe_safety import check_buildable, keep_loose_values_plain
from fl_lightning.run_paths import check_inside, check_name, check_no_symlinks
from fl_lightning.run_summary import RunSummary, print_summaries
from fl_lightning.seeding import seed_everything
from fl_lightning.trainer import FederatedTrainer


def fit_parser() -> ArgumentParser:
    """The parser of ``fl-lightning fit`` (also the basis of ``sweep``)."""
    keep_loose_values_plain()  # a class_path inside trainer_kwargs / init_kwargs / Any is never built
    bound_parser_loader()  # every YAML text the parser reads is within the recipe bounds first
    parser = ArgumentParser(description="Run a federated training under attack.", env_prefix="FL_LIGHTNING",
                            default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a recipe YAML")
    parser.add_class_arguments(FederatedTrainer, "trainer", skip={"logger"}, instantiate=False)
    parser.add_argument("--trainer.logger", type=Optional[Union[bool, dict[str, Any], list[dict[str, Any]]]],
                        default=None,
                        help="Lightning logger(s): a class_path/init_args entry or a list of them (TensorBoardLogger, "
                             "CSVLogger, any lightning.pytorch.loggers.Logger); save_dir, name and version left at "
                             "their defaults become SAVE_DIR, NAME and the run's name; false: no logging; absent: "
                             "TensorBoard in SAVE_DIR/NAME/RUN")
    parser.add_subclass_arguments(L.LightningModule, "model", required=True,
                                  help="the LightningModule (class_path + init_args)")
    parser.add_class_arguments(FederatedDataModule, "data")
    parser.link_arguments("trainer.seed", "data.seed")  # one seed: the partition follows the run's seed
    parser.add_argument("--aggregators", type=Optional[list[Aggregator]], default=None,
                        help="several aggregators run one after another on the same seed (overrides "
                             "trainer.aggregator); each becomes its own TensorBoard run, named by its class "
                             "plus the arguments that tell two of the same class apart")
    parser.add_argument("--name", type=str, default="default", help="run name: logs go to SAVE_DIR/NAME/AGGREGATOR")
    parser.add_argument("--save_dir", type=str, default="logs",
                        help="root folder of the runs' logs and checkpoints (SAVE_DIR/NAME/RUN)")
    parser.add_argument("--follow_symlinks", type=bool, default=False,
                        help="let the run write through symlinks below SAVE_DIR (SAVE_DIR/NAME, the run's folder); "
                             "without it such a link is refused, since it carries the run outside SAVE_DIR")
    parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                        help='"last" resumes each run from its own checkpoint (a run without one starts at round '
                             '0); without it, a run whose folder already holds a run is refused')
    parser.add_argument("--description", type=str, default="", help="what the recipe reproduces")
    parser.add_argument("--sweep", type=Optional[dict], default=None,
                        help="the recipe's grid, run by `fl-lightning sweep` (fit ignores it)")
    parser.add_argument("--profiles", type=Optional[dict], default=None,
                        help="the recipe's named overrides, e.g. small, used by `fl-lightning sweep --profile` "
                             "(fit ignores them)")
    return parser


def run_fit(cfg: Namespace, parser: ArgumentParser, *, quiet: bool = False) -> list[RunSummary]:
    """Run every aggregator of ``cfg`` with the same seed, partition, sampling and attackers, each in its own folder."""
    aggregator_cfgs = cfg.aggregators or [cfg.trainer.aggregator]
    names = run_names(aggregator_cfgs)
    check_loggers(cfg.trainer.logger)  # a wrong logger fails before the first run trains
    summaries = []
    for aggregator_cfg, name in zip(aggregator_cfgs, names):
        run_cfg = cfg.clone()
        run_cfg.trainer.aggregator = aggregator_cfg
        run_cfg.aggregators = None
        trainer = fit_one(run_cfg, parser, run_name=name, quiet=quiet, several_runs=len(names) > 1)
        summaries.append(RunSummary.from_trainer(name, trainer))
    if not quiet:
        print_summaries(summaries, title=cfg.name)
    return summaries


def fit_one(cfg: Namespace, parser: ArgumentParser, run_name: str | None = None, *, index: int = 0,
            quiet: bool = False, several_runs: bool = True) -> FederatedTrainer:
    """Fit ``cfg`` with its ``trainer.aggregator``, logging to SAVE_DIR/NAME/RUN_NAME (default: the aggregator's class).

    ``trainer.logger`` entries are built for this run (:func:`~fl_lightning.recipe_loggers.build_loggers`);
    with ``several_runs`` (a recipe of several aggregators, a sweep point) a logger that pins its ``version``
    gets the run's name appended to its ``name``. With logging off, the checkpoints go to SAVE_DIR/NAME/RUN_NAME
    unless ``trainer.default_root_dir`` is set.
    """
    check_recipe(cfg)
    seed_everything(cfg.trainer.seed)  # the initial weights depend on the seed alone: same for every aggregator
    objects = parser.instantiate(cfg)
    trainer_kwargs = objects.trainer.as_dict() if isinstance(objects.trainer, Namespace) else dict(objects.trainer)
    logger_value = trainer_kwargs.pop("logger", None)  # plain entries: built below, for this run
    if run_name is None:
        run_name = run_names([cfg.trainer.aggregator])[0] if cfg.trainer.aggregator is not None else f"run{index}"
    check_name(cfg.name, "name")
    check_name(run_name, "the run's folder name")
    loggers = build_loggers(logger_value, save_dir=cfg.save_dir, name=cfg.name, run_name=run_name,
                            separate_pinned=several_runs)
    run_dir = Path(cfg.save_dir) / cfg.name / run_name
    follow = bool(getattr(cfg, "follow_symlinks", False))
    check_no_symlinks(cfg.save_dir, run_dir / "checkpoints", f"{cfg.save_dir}/{cfg.name}/{run_name}", follow)
    for number, built in enumerate(loggers or []):
        check_logger_folder(built, f"trainer.logger.{number}", follow)
    if loggers is None:
        logger: Any = TensorBoardLogger(cfg.save_dir, name=cfg.name, version=run_name, default_hp_metric=False)
    elif loggers:
        logger = loggers
    else:
        logger = False
        if trainer_kwargs.get("default_root_dir", _DEFAULT_ROOT_DIR) == _DEFAULT_ROOT_DIR:
            trainer_kwargs["default_root_dir"] = run_dir  # the run's own folder, as with a logger
        elif several_runs:
            trainer_kwargs["default_root_dir"] = Path(trainer_kwargs["default_root_dir"]) / run_name
    trainer = FederatedTrainer(logger=logger, **trainer_kwargs)
    if quiet:
        trainer.enable_progress_bar = False
    trainer.fit(objects.model, objects.data, ckpt_path=cfg.ckpt_path)
    return trainer


def check_logger_folder(logger: Any, key: str, follow: bool = False) -> None:
    """A logger's folder (``name`` / ``version`` / ``sub_dir`` under its ``save_dir``) stays inside its save_dir."""
    root, folder = getattr(logger, "save_dir", None), getattr(logger, "log_dir", None)
    if root is None or folder is None:
        return  # a logger without folders (e.g. a remote service)
    check_inside(root, folder, key)
    check_no_symlinks(root, Path(folder) / "checkpoints", key, follow)


#: keys of a fit config that hold data ``fit`` never builds (the grid and profiles are built by ``sweep``)
NOT_BUILT = ("sweep", "profiles")


def check_recipe(cfg: Namespace) -> None:
    """Refuse, naming the key, any ``class_path`` of ``cfg`` that is not a plug-in class a recipe may build."""
    check_buildable(cfg, skip=NOT_BUILT)


#: FederatedTrainer's own default_root_dir (a recipe that leaves it there gets the run's folder when logging is off)
_DEFAULT_ROOT_DIR = inspect.signature(FederatedTrainer).parameters["default_root_dir"].default


def run_names(aggregator_cfgs: list[Any]) -> list[str]:
    """One distinct run (folder) name per aggregator config: its class, plus the arguments that differ from
    another entry of the same class (``TrimmedMean-beta0.1``), plus ``-2``, ``-3`` for exact repeats.

    Examples:
        >>> run_names([{"class_path": "FedAvg"}, {"class_path": "TrimmedMean", "init_args": {"beta": 0.1}},
        ...            {"class_path": "TrimmedMean", "init_args": {"beta": 0.2}}, {"class_path": "FedAvg"}])
        ['FedAvg', 'TrimmedMean-beta0.1', 'TrimmedMean-beta0.2', 'FedAvg-2']
        >>> run_names([{"class_path": "NNM", "init_args": {"f": 2, "inner": {"class_path": "a.CoordinateMedian"}}},
        ...            {"class_path": "NNM", "init_args": {"f": 2, "inner": {"class_path": "a.ResidualReweight",
        ...                                                               "init_args": {"lambda_": 2.0}}}}])
        ['NNM-innerCoordinateMedian', 'NNM-innerResidualReweight']
    """
    classes = [_class_name(c) for c in aggregator_cfgs]
    args = [_init_args(c) for c in aggregator_cfgs]
    names = []
    for cls, own in zip(classes, args):
        peers = [a for c, a in zip(classes, args) if c == cls]
        differing = [(k, v) for k, v in own.items() if any(p.get(k, _MISSING) != v for p in peers)]
        names.append("-".join([cls] + [f"{k}{_label(v)}" for k, v in differing]))
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


_MISSING = object()


def _class_name(cfg: Any) -> str:
    if cfg is None:
        return "run"
    if isinstance(cfg, Aggregator):
        return type(cfg).__name__
    class_path = cfg.get("class_path") if isinstance(cfg, (dict, Namespace)) else None
    return str(class_path or type(cfg).__name__).rsplit(".", 1)[-1]


def _init_args(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, Aggregator):
        return {k: v for k, v in vars(cfg).items() if not k.startswith("_")}
    init_args = cfg.get("init_args") if isinstance(cfg, (dict, Namespace)) else None
    if isinstance(init_args, Namespace):
        init_args = init_args.as_dict()
    return dict(init_args or {})


def _label(value: Any) -> str:
    """A value as it appears in a folder name: ``0.1``, ``true``, ``a+b``, a nested plug-in by its class
    (``NNM-innerCoordinateMedian``); path-unsafe characters become ``_``."""
    if isinstance(value, (dict, Namespace)) and value.get("class_path") or isinstance(value, Aggregator):
        text = _class_name(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "+".join(_label(v) for v in value)
    else:
        text = str(value)
    return "".join(ch if ch.isalnum() or ch in "._+=" else "_" for ch in text)

