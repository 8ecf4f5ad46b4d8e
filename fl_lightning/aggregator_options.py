"""The command line's aggregator options: ``--trainer.aggregator`` against a recipe's ``aggregators:`` list,
peers' names for our rules, and the unknown class names inside a list value."""
from __future__ import annotations

import ast
from typing import Any, Sequence

import yaml

from fl_lightning.aggregators.peer_names import canonical_class_path


def sets_trainer_aggregator(args: Sequence[str]) -> bool:
    """Whether the command line sets ``--trainer.aggregator`` (or one of its init_args)."""
    return any(a == "--trainer.aggregator" or a.startswith(("--trainer.aggregator=", "--trainer.aggregator."))
               for a in args)


def ignored_aggregator_message(aggregators: list[Any]) -> str:
    """The error for a ``--trainer.aggregator`` that a recipe's ``aggregators:`` list would silently override."""
    names = ", ".join(_short_name(a) for a in aggregators)
    return (f"--trainer.aggregator would be ignored: the recipe runs its aggregators list ({names}); "
            "choose the rules with --aggregators instead, e.g. --aggregators '[Krum]' (one) or "
            "--aggregators '[FedAvg, Krum]', or pass --aggregators null to run trainer.aggregator")


def canonical_aggregators(cfg: Any) -> None:
    """Rewrite, in place, every aggregator of a parsed fit config that a peer's name chose (``Median``) to our
    class (``CoordinateMedian``), so that runs are built and named by the rule they are."""
    entries = [cfg.trainer.aggregator] + list(cfg.aggregators or [])
    for entry in entries:
        class_path = getattr(entry, "class_path", None)
        if isinstance(class_path, str):
            entry.class_path = canonical_class_path(class_path)


def class_names_in(value: str) -> list[str]:
    """The class names a list (or single) value written on the command line or in YAML names.

    ``"['Krumm', {'class_path': 'FedAvg'}]"`` -> ``['Krumm', 'FedAvg']``; what does not parse gives ``[]``.
    """
    parsed: Any = None
    for parse in (ast.literal_eval, yaml.safe_load):
        try:
            parsed = parse(value)
            break
        except (ValueError, SyntaxError, yaml.YAMLError):
            continue
    items = parsed if isinstance(parsed, list) else [parsed]
    names = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("class_path")
        if isinstance(item, str):
            names.append(item)
    return names


def listed_in_configs(configs: list[Any]) -> list[Any]:
    """The ``aggregators:`` list the last of the parsed recipe mappings that has one sets (empty: none)."""
    listed: list[Any] = []
    for content in configs:
        if isinstance(content, dict) and "aggregators" in content:
            listed = list(content["aggregators"] or [])
    return listed


def _short_name(entry: Any) -> str:
    if isinstance(entry, str):
        return entry.rsplit(".", 1)[-1]
    class_path = entry.get("class_path") if isinstance(entry, dict) else getattr(entry, "class_path", None)
    return str(class_path or type(entry).__name__).rsplit(".", 1)[-1]
