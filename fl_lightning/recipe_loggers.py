"""A recipe's ``trainer.logger``: Lightning loggers from ``class_path`` / ``init_args`` entries, one folder per run.

``fit_config`` parses ``trainer.logger`` loosely (``false``, one entry or a list) and builds the loggers here
for each run: a short class name (``CSVLogger``) resolves among the ``lightning.pytorch.loggers.Logger``
subclasses, anything else is refused in one line, and the folder arguments a logger leaves at their defaults
(``save_dir``, ``name``, ``version``) become the recipe's ``save_dir``, ``name`` and the run's name, so the
logger writes to ``SAVE_DIR/NAME/RUN`` as the default TensorBoard logger does.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from lightning.pytorch.loggers import Logger

from fl_lightning.checks import did_you_mean
from fl_lightning.recipe_safety import check_buildable, keep_loose_values_plain

#: where the recipe's logger setting sits, as named in messages
KEY = "trainer.logger"


def logger_entries(value: Any) -> list[dict[str, Any]] | None:
    """``trainer.logger`` as a list of ``{"class_path", "init_args"}`` entries; ``None``: the default logger.

    ``false`` or ``[]`` give ``[]`` (logging off); ``true`` or absent give ``None``.
    """
    if value is None or value is True:
        return None
    if value is False:
        return []
    items = value if isinstance(value, list) else [value]
    entries = []
    for index, item in enumerate(items):
        where = f"{KEY}.{index}" if isinstance(value, list) else KEY
        if not isinstance(item, dict) or not isinstance(item.get("class_path"), str):
            raise TypeError(f"{where} must be a class_path/init_args mapping (e.g. {{class_path: CSVLogger}}), "
                            f"a list of them, or false, got {item!r}")
        unknown = set(item) - {"class_path", "init_args"}
        if unknown:
            raise ValueError(f"{where} must hold only class_path and init_args, got {sorted(unknown)}")
        init_args = item.get("init_args") or {}
        if not isinstance(init_args, dict):
            raise TypeError(f"{where}.init_args must be a mapping, got {init_args!r}")
        entries.append({"class_path": item["class_path"], "init_args": dict(init_args)})
    return entries


def logger_class(class_path: str, where: str = KEY) -> type[Logger]:
    """The ``Logger`` subclass ``class_path`` names: a full import path, or a short name such as ``CSVLogger``."""
    if "." in class_path:
        module_name, _, name = class_path.rpartition(".")
        try:
            found = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{where}: cannot import {class_path!r} ({exc}); write a logger's full import path "
                             "or a short name such as TensorBoardLogger or CSVLogger") from None
    else:
        known = known_loggers()
        other = _shipped_class(class_path)
        if class_path not in known and other is not None:
            known = {class_path: other}  # e.g. FedAvg: refused below as not a logger
        elif class_path not in known:
            raise ValueError(f"{where}: {class_path!r} is not a known logger{did_you_mean(class_path, known)}; "
                             f"write one of {', '.join(sorted(known))} or a full import path")
        found = known[class_path]
    if not (inspect.isclass(found) and issubclass(found, Logger)):
        raise TypeError(f"{where}: {class_path} is not a Lightning logger; write a lightning.pytorch.loggers.Logger "
                        "subclass such as TensorBoardLogger or CSVLogger")
    return found


def _shipped_class(name: str) -> Any:
    """The class a plug-in package of fl_lightning exports under ``name`` (``FedAvg``, ``ModelCheckpoint``), or None."""
    for package in ("aggregators", "attacks", "callbacks", "models", "data"):
        module = importlib.import_module(f"fl_lightning.{package}")
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    return None


def known_loggers() -> dict[str, type[Logger]]:
    """Short name -> class of every ``Logger`` subclass imported so far (Lightning's loggers are always there)."""
    import lightning.pytorch.loggers  # noqa: F401  (registers Lightning's loggers as subclasses)

    found: dict[str, type[Logger]] = {}
    pending = [Logger]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            if not sub.__name__.startswith("_"):
                found.setdefault(sub.__name__, sub)
    return found


def run_init_args(cls: type[Logger], init_args: dict[str, Any], *, save_dir: str, name: str, run_name: str,
                  separate_pinned: bool) -> dict[str, Any]:
    """``init_args`` with the folder arguments the logger left at their defaults set to ``SAVE_DIR/NAME/RUN``.

    A logger that pins its ``version`` keeps it; with ``separate_pinned`` (several runs from one recipe) the
    run's name is appended to its ``name`` (``NAME/RUN/VERSION``), so two runs never share a folder.
    """
    params = inspect.signature(cls.__init__).parameters
    args = dict(init_args)

    def unset(key: str) -> bool:
        default = params[key].default
        return key not in args or (default is not inspect.Parameter.empty and args[key] == default)

    if "save_dir" in params and unset("save_dir"):
        args["save_dir"] = save_dir
    if "name" in params and unset("name"):
        args["name"] = name
    if "version" in params and unset("version"):
        args["version"] = run_name
    elif "name" in params and separate_pinned:
        args["name"] = f"{args['name']}/{run_name}"
    if "flush_logs_every_n_steps" in params and unset("flush_logs_every_n_steps"):
        args["flush_logs_every_n_steps"] = 1  # CSV: every round reaches metrics.csv, also in a killed run
    if "default_hp_metric" in params and unset("default_hp_metric"):
        args["default_hp_metric"] = False  # hparams go with the run's own metrics, as the default logger's
    return args


def check_loggers(value: Any) -> None:
    """Check ``trainer.logger`` (classes and ``init_args``) without building a logger, before any run starts."""
    build_loggers(value, save_dir="logs", name="check", run_name="check", instantiate=False)


def build_loggers(value: Any, *, save_dir: str, name: str, run_name: str, separate_pinned: bool = True,
                  instantiate: bool = True) -> list[Logger] | None:
    """The loggers ``trainer.logger`` asks for, for the run ``run_name`` (``None``: the default; ``[]``: off).

    Each entry's ``init_args`` are checked against its class by jsonargparse, as LightningCLI does; a
    mistake raises ``ValueError`` / ``TypeError`` naming the entry.
    """
    from jsonargparse import ArgumentError, ArgumentParser

    entries = logger_entries(value)
    if entries is None:
        return None
    keep_loose_values_plain()
    loggers = []
    for index, entry in enumerate(entries):
        where = f"{KEY}.{index}" if isinstance(value, list) else KEY
        check_buildable(entry["init_args"], f"{where}.init_args")  # plain data: no class is built from them
        cls = logger_class(entry["class_path"], where)
        args = run_init_args(cls, entry["init_args"], save_dir=save_dir, name=name, run_name=run_name,
                             separate_pinned=separate_pinned)
        parser = ArgumentParser(exit_on_error=False)
        parser.add_argument("--logger", type=Logger)
        try:
            cfg = parser.parse_object({"logger": {"class_path": f"{cls.__module__}.{cls.__qualname__}",
                                                  "init_args": args}})
        except ArgumentError as exc:
            text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise ValueError(f"{where} ({cls.__name__}): invalid init_args: {text}") from None
        if instantiate:
            loggers.append(parser.instantiate(cfg).logger)
    return loggers
