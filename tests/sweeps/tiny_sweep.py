"""A tiny recipe (generated data, TinyNet, 3 rounds, FedAvg vs residual reweighting x 0/1 attackers)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from rich.console import Console

TINY = {
    "name": "tiny",
    "trainer": {"rounds": 3, "local_epochs": 1, "clients_per_round": 4, "batch_size": 16, "seed": 0,
                "enable_progress_bar": False,
                "attacks": [{"class_path": "fl_lightning.attacks.LabelFlip",
                             "init_args": {"source": 1, "target": 2, "clients": 1, "extra_epochs": 1, "lr": 0.2}}]},
    "model": {"class_path": "tests.helpers.TinyNet", "init_args": {"num_classes": 4}},
    "data": {"dataset": {"class_path": "fl_lightning.data.synthetic.SyntheticDataset",
                         "init_args": {"shape": [1, 8, 8], "num_classes": 4, "n": 160}},
             "num_clients": 6, "partition": "classes", "classes_per_client": 2},
    "aggregators": [{"class_path": "fl_lightning.aggregators.FedAvg"},
                    {"class_path": "fl_lightning.aggregators.ResidualReweight",
                     "init_args": {"lambda_": 2.0, "thresh": 0.1}}],
    "sweep": {"paper": "fig3", "grid": {"trainer.attacks.0.init_args.clients": [0, 1]}},
    "profiles": {"small": {"trainer.rounds": 1, "max_values_per_axis": 1}},
}


def write_recipe(folder: Path, **changes: Any) -> Path:
    """The tiny recipe with top-level ``changes``, saving its logs under ``folder/logs``."""
    recipe = {**TINY, "save_dir": str(folder / "logs"), **changes}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def sweep_args(config: Path, **overrides: Any) -> Namespace:
    """The namespace ``fl-lightning sweep`` would build."""
    from fl_lightning.sweeps import sweep_parser

    args = sweep_parser().parse_args(["--config", str(config)])
    for key, value in overrides.items():
        args[key] = value
    return args


def quiet() -> Console:
    """A console that prints nowhere."""
    return Console(file=io.StringIO())
