"""``fl-lightning fit | sweep | report``: LightningCLI-style configs (``class_path`` / ``init_args``, dotted overrides)."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import lightning as L
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from lightning.pytorch.loggers import TensorBoardLogger

# imported so that configs may name any shipped class by its short name (``Krum``, ``LabelFlip``)
import fl_lightning.aggregators  # noqa: F401
import fl_lightning.attacks  # noqa: F401
import fl_lightning.data  # noqa: F401
import fl_lightning.models  # noqa: F401
from fl_lightning.aggregators.base import Aggregator
from fl_lightning.data.datamodule import FederatedDataModule
from fl_lightning.run_summary import RunSummary, print_summaries
from fl_lightning.seeding import seed_everything
from fl_lightning.sweeps import report_parser, run_report, run_sweep, sweep_parser
from fl_lightning.trainer import FederatedTrainer


def fit_parser() -> ArgumentParser:
    """The parser of ``fl-lightning fit`` (also the basis of ``sweep``)."""
    parser = ArgumentParser(description="Run a federated training under attack.", env_prefix="FL_LIGHTNING",
                            default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a recipe YAML")
    parser.add_class_arguments(FederatedTrainer, "trainer", skip={"logger"}, instantiate=False)
    parser.add_subclass_arguments(L.LightningModule, "model", required=True,
                                  help="the LightningModule (class_path + init_args)")
    parser.add_class_arguments(FederatedDataModule, "data")
    parser.link_arguments("trainer.seed", "data.seed")  # one seed: the partition follows the run's seed
    parser.add_argument("--aggregators", type=Optional[list[Aggregator]], default=None,
                        help="several aggregators run one after another on the same seed (overrides "
                             "trainer.aggregator); each becomes its own TensorBoard run")
    parser.add_argument("--name", type=str, default="default", help="run name: logs go to SAVE_DIR/NAME/AGGREGATOR")
    parser.add_argument("--save_dir", type=str, default="logs", help="TensorBoard root folder")
    parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                        help='"last" resumes the latest checkpoint of each run')
    parser.add_argument("--description", type=str, default="", help="what the recipe reproduces")
    parser.add_argument("--sweep", type=Optional[dict], default=None,
                        help="the recipe's grid, run by `fl-lightning sweep` (fit ignores it)")
    parser.add_argument("--profiles", type=Optional[dict], default=None,
                        help="the recipe's named overrides, e.g. small, used by `fl-lightning sweep --profile` "
                             "(fit ignores them)")
    return parser


def run_fit(cfg: Namespace, parser: ArgumentParser, *, quiet: bool = False) -> list[RunSummary]:
    """Run every aggregator of ``cfg`` with the same seed, partition, sampling and attackers."""
    aggregator_cfgs = cfg.aggregators or [cfg.trainer.aggregator]
    summaries = []
    for index, aggregator_cfg in enumerate(aggregator_cfgs):
        run_cfg = cfg.clone()
        run_cfg.trainer.aggregator = aggregator_cfg
        run_cfg.aggregators = None
        summaries.append(_run_one(run_cfg, parser, index, quiet))
    if not quiet:
        print_summaries(summaries, title=cfg.name)
    return summaries


def _run_one(cfg: Namespace, parser: ArgumentParser, index: int, quiet: bool) -> RunSummary:
    trainer = fit_one(cfg, parser, index=index, quiet=quiet)
    return RunSummary.from_trainer(str(trainer.logger.version), trainer)


def fit_one(cfg: Namespace, parser: ArgumentParser, run_name: str | None = None, *, index: int = 0,
            quiet: bool = False) -> FederatedTrainer:
    """Fit ``cfg`` with its ``trainer.aggregator``, logging to SAVE_DIR/NAME/RUN_NAME (default: the aggregator's class)."""
    seed_everything(cfg.trainer.seed)  # the initial weights depend on the seed alone: same for every aggregator
    objects = parser.instantiate(cfg)
    trainer_kwargs = objects.trainer.as_dict() if isinstance(objects.trainer, Namespace) else dict(objects.trainer)
    run_name = run_name or _run_name(trainer_kwargs.get("aggregator"), index)
    logger = TensorBoardLogger(cfg.save_dir, name=cfg.name, version=run_name, default_hp_metric=False)
    trainer = FederatedTrainer(logger=logger, **trainer_kwargs)
    if quiet:
        trainer.enable_progress_bar = False
    trainer.fit(objects.model, objects.data, ckpt_path=cfg.ckpt_path)
    return trainer


def _run_name(aggregator: Aggregator | None, index: int) -> str:
    return type(aggregator).__name__ if aggregator is not None else f"run{index}"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``fl-lightning`` console script."""
    parser = ArgumentParser(prog="fl-lightning", description="Attack-resistant federated learning on Lightning.")
    subcommands = parser.add_subcommands(dest="subcommand")
    subcommands.add_subcommand("fit", fit_parser(), help="train with one or several aggregators")
    subcommands.add_subcommand("sweep", sweep_parser(), help="run every point of a recipe's grid")
    subcommands.add_subcommand("report", report_parser(), help="tables and plots of a finished sweep")
    cfg = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    command = cfg.subcommand
    sub_cfg = cfg[command]
    if command == "fit":
        run_fit(sub_cfg, fit_parser())
    elif command == "sweep":
        run_sweep(sub_cfg)
    else:
        run_report(sub_cfg)

