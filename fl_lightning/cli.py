"""``fl-lightning fit | sweep | report | recipes``: LightningCLI-style configs (``class_path`` / ``init_args``, dotted overrides).

The command line checks what it can before the heavy imports (torch, Lightning): the subcommand, that
every ``--config`` names a file or a shipped recipe (``--config quickstart``) holding a YAML mapping. A
mistake in a config prints one line naming the key and the fix, and exits with status 2.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

import yaml

from fl_lightning import shipped
from fl_lightning.checks import did_you_mean
from fl_lightning.recipe_bounds import RecipeTooLarge, check_bounds, read_text
from fl_lightning.stopping import StopRequested
from fl_lightning.version import __version__

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

#: the subcommands and their one-line help
COMMANDS = {"fit": "train with one or several aggregators",
            "sweep": "run every point of a recipe's grid",
            "report": "tables and plots of a finished sweep",
            "recipes": "list the shipped recipes; `recipes show NAME` prints one",
            "flower-app": "copy the Flower app of docs/scale-out.md into a new folder"}
#: exit status of a usage or config mistake (argparse's)
USAGE_ERROR = 2


class ConfigError(Exception):
    """A mistake on the command line or in a recipe, reported as one line."""


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``fl-lightning`` console script.

    A command-line or config mistake prints one line and exits with status 2. With ``argv=None`` (the console
    script) an invalid setting found while building the run (a ``ValueError``/``TypeError`` from the library's
    checks, a missing data file, a run folder that holds another run or is in use) is printed the same way;
    any other failure while running (an ``OSError`` of a full disk or a read-only folder, a diverged run) is
    one line with status 1 (``FL_LIGHTNING_TRACEBACK=1`` shows the traceback); SIGTERM is one line with status
    143 and Ctrl-C one with 130; output cut off by its reader (``| head``) ends quietly with 141. Errors during
    cleanup are appended to the line of the error that caused them.
    A caller passing ``argv`` gets the exception.
    """
    console = argv is None
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else None
    try:
        if command in (None, "-h", "--help"):
            _print_help()
            return
        if command in ("-V", "--version"):
            print(f"fl-lightning {__version__}")
            return
        if command not in COMMANDS:
            raise ConfigError(f"unknown command {command!r}{did_you_mean(str(command), COMMANDS)}; "
                              f"choose one of {', '.join(COMMANDS)}")
        if command == "recipes":
            recipes_command(args[1:])
            return
        if command == "flower-app":
            flower_app_command(args[1:])
            return
        options = resolve_recipe_names(args[1:])
        check_config_files(options)  # before torch and Lightning are imported
        if answer_from_schema(command, options):
            return
        _run(command, options)
    except ConfigError as exc:
        _fail(command, str(exc))
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:  # FileExistsError: a run's folder
        if not console:
            raise
        _fail(command, _with_cleanup(str(exc), exc))
    except StopRequested as exc:  # SIGTERM: the fit abandoned its round and released its folder
        if not console:
            raise
        _fail(command, str(exc), status=exc.exit_status, label="stopped")
    except BrokenPipeError:  # `fl-lightning recipes | head`: the reader left; stop quietly, as a shell tool does
        if not console:
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        raise SystemExit(BROKEN_PIPE) from None
    except KeyboardInterrupt as exc:
        if not console:
            raise
        _fail(command, _with_cleanup("interrupted (Ctrl-C); resume with --ckpt_path last", exc),
              status=INTERRUPTED, label="stopped")
    except Exception as exc:  # a failure while running (a full disk, a read-only folder, a diverged run)
        if not console or os.environ.get(TRACEBACK_VARIABLE):
            raise
        _fail(command, _with_cleanup(f"{type(exc).__name__}: {exc} (set {TRACEBACK_VARIABLE}=1 for the "
                                     "traceback)", exc), status=RUN_ERROR)


#: exit status of a run that failed while running (not a usage mistake)
RUN_ERROR = 1
#: exit status after Ctrl-C (128 + SIGINT), as a shell reports it
INTERRUPTED = 130
#: exit status when the reader of stdout went away (128 + SIGPIPE), as a shell reports it
BROKEN_PIPE = 141
#: set this environment variable to get the traceback of a run's failure instead of one line
TRACEBACK_VARIABLE = "FL_LIGHTNING_TRACEBACK"


def _with_cleanup(message: str, exc: BaseException) -> str:
    """``message`` plus the cleanup failures noted on ``exc`` (the first error stays the one reported)."""
    from fl_lightning.stopping import cleanup_notes

    notes = cleanup_notes(exc)
    return message + "".join(f"; {note}" for note in notes)


def _fail(command: str | None, message: str, status: int = USAGE_ERROR, label: str = "error") -> NoReturn:
    prefix = f"fl-lightning {command}" if command in COMMANDS else "fl-lightning"
    print(f"{prefix}: {label}: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(status)


def _print_help() -> None:
    lines = [f"usage: fl-lightning {{{','.join(COMMANDS)}}} [--help] ...", "       fl-lightning --version", "",
             "Attack-resistant federated learning on Lightning.", "", "commands:"]
    lines += [f"  {name:<12}{text}" for name, text in COMMANDS.items()]
    lines += ["", "`fl-lightning COMMAND --help` lists a command's options."]
    print("\n".join(lines))


def config_paths(args: Sequence[str]) -> list[str]:
    """The values of every ``--config PATH`` / ``--config=PATH`` in ``args``."""
    paths = []
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            paths.append(args[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.partition("=")[2])
    return paths


def resolve_recipe_names(args: Sequence[str]) -> list[str]:
    """``args`` with every ``--config NAME`` that is not a file but a shipped recipe's name replaced by its path."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        if arg == "--config" and i + 1 < len(resolved):
            resolved[i + 1] = shipped.resolve_config(resolved[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + shipped.resolve_config(arg.partition("=")[2])
    return resolved


def check_config_files(args: Sequence[str]) -> None:
    """Every ``--config`` names a readable file holding a YAML mapping within the size and depth bounds
    (:mod:`fl_lightning.recipe_bounds`), and every other value is within them too; else :class:`ConfigError`."""
    for value in args:
        try:
            check_bounds(value, "a command-line value")
        except RecipeTooLarge as exc:
            raise ConfigError(str(exc)) from None
        except yaml.YAMLError:
            pass  # not YAML: the parser says what it expected
    for path in map(Path, config_paths(args)):
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file or shipped recipe"
                              f"{did_you_mean(path.stem, shipped.recipe_names())}; pass a path or a name that "
                              "`fl-lightning recipes` lists, such as --config quickstart")
        try:
            text = read_text(path, f"--config {path}")
            check_bounds(text, f"--config {path}")
            content = yaml.safe_load(text)
        except RecipeTooLarge as exc:
            raise ConfigError(str(exc)) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"--config {path}: not valid YAML{where}: {problem}; fix the file's "
                              "indentation or quoting there") from None
        if not isinstance(content, dict):
            raise ConfigError(f"--config {path}: a recipe is a YAML mapping (trainer:, model:, data:, ...), "
                              f"got {type(content).__name__}")


def answer_from_schema(command: str, args: list[str]) -> bool:
    """Answer ``COMMAND --help`` from the shipped schema, and refuse an unknown key on the command line or in a
    fit recipe, without importing torch or Lightning; True when the help was printed. Without a schema for this
    version (:mod:`fl_lightning.cli_schema`) the live parser answers both."""
    from fl_lightning.cli_schema import config_keys, load_schema, option_keys, unknown_key

    schema = load_schema()
    entry = schema["commands"].get(command) if schema else None
    if entry is None:
        return False
    if args in (["--help"], ["-h"]):
        print(entry["help"], end="")
        return True
    for key in option_keys(args):
        if unknown_key(key, entry):
            raise ConfigError(f"unknown key {key!r}{did_you_mean(key, entry['keys'])}; "
                              f"`fl-lightning {command} --help` lists the valid keys")
    if command == "fit":
        check_aggregator_options(args)
        for path in config_paths(args):
            for key in config_keys(yaml.safe_load(read_text(Path(path), f"--config {path}")), entry):
                if unknown_key(key, entry):
                    raise ConfigError(f"--config {path}: unknown key {key!r}{did_you_mean(key, entry['keys'])}; "
                                      f"`fl-lightning {command} --help` lists the valid keys")
    return False


def check_aggregator_options(args: list[str]) -> None:
    """A ``--trainer.aggregator`` that a recipe's ``aggregators:`` list would override is an error (before torch)."""
    from fl_lightning.aggregator_options import ignored_aggregator_message, listed_in_configs, sets_trainer_aggregator

    if not sets_trainer_aggregator(args) or any(a.startswith("--aggregators") for a in args):
        return  # an --aggregators on the command line is checked once parsed
    listed = listed_in_configs([yaml.safe_load(read_text(Path(p), f"--config {p}")) for p in config_paths(args)])
    if listed:
        raise ConfigError(ignored_aggregator_message(listed))


def recipes_command(args: Sequence[str]) -> None:
    """``fl-lightning recipes``: one line per shipped recipe; ``recipes show NAME``: the recipe's YAML."""
    if args and args[0] in ("-h", "--help"):
        print("usage: fl-lightning recipes [show NAME]\n\nLists the shipped recipes; `show NAME` prints one "
              "to copy and edit. Run one with `fl-lightning fit --config NAME` (or `sweep --config NAME`).")
        return
    if not args:
        names = shipped.recipe_names()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {shipped.recipe_summary(name)}")
        return
    if args[0] != "show":
        raise ConfigError(f"unknown argument {args[0]!r}; use `fl-lightning recipes` to list them or "
                          "`fl-lightning recipes show NAME` to print one")
    if len(args) != 2:
        raise ConfigError("`show` takes one recipe name, e.g. `fl-lightning recipes show quickstart`")
    path = shipped.recipe_path(args[1])
    if path is None:
        raise ConfigError(f"no shipped recipe {args[1]!r}"
                          f"{did_you_mean(args[1], shipped.recipe_names())}; `fl-lightning recipes` lists them")
    print(path.read_text(), end="")


def flower_app_command(args: Sequence[str]) -> None:
    """``fl-lightning flower-app [DEST]``: copy the shipped Flower app (default folder ``flower_app``)."""
    if args and args[0] in ("-h", "--help"):
        print("usage: fl-lightning flower-app [DEST]\n\nCopies the Flower app of docs/scale-out.md (a ServerApp "
              "running RobustStrategy(ResidualReweight()) and its ClientApp) into DEST (default: flower_app); "
              "then `flwr run DEST`.")
        return
    if len(args) > 1:
        raise ConfigError("takes at most one folder, e.g. `fl-lightning flower-app my_app`")
    dest = shipped.copy_flower_app(args[0] if args else "flower_app")
    print(f"Flower app copied to {dest}; run it with `flwr run {dest}` (docs/scale-out.md)")


def _run(command: str, args: list[str]) -> None:
    if command == "fit":
        from fl_lightning.fit_config import check_recipe, fit_parser, run_fit

        from fl_lightning.aggregator_options import (canonical_aggregators, ignored_aggregator_message,
                                                     sets_trainer_aggregator)

        parser = _quiet_parser(fit_parser(), command)
        cfg = parse(parser, args)
        check_recipe(cfg)  # before any class of it is built
        if cfg.aggregators and sets_trainer_aggregator(args):
            raise ConfigError(ignored_aggregator_message(cfg.aggregators))
        canonical_aggregators(cfg)
        warn_replaced_attacks(parser, args, cfg)
        run_fit(cfg, parser)
    elif command == "sweep":
        from fl_lightning.sweeps import run_sweep, sweep_parser

        run_sweep(parse(_quiet_parser(sweep_parser(), command), args))
    else:
        from fl_lightning.sweeps import report_parser, run_report

        run_report(parse(_quiet_parser(report_parser(), command), args))


def _quiet_parser(parser: "ArgumentParser", command: str) -> "ArgumentParser":
    parser.prog = f"fl-lightning {command}"
    parser.exit_on_error = False  # parse() turns the error into one line
    return parser


def parse(parser: "ArgumentParser", args: list[str]) -> "Namespace":
    """``parser.parse_args(args)``, with a parse error turned into a one-line :class:`ConfigError`."""
    from jsonargparse import ArgumentError

    try:
        return parser.parse_args(args)
    except ArgumentError as exc:
        raise ConfigError(explain(str(exc), parser)) from None


def explain(message: str, parser: "ArgumentParser") -> str:
    """One line from a jsonargparse error: the key, what is wrong, the closest valid key or class, and the help."""
    import re

    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    union = re.match(r'Parser key "([^"]+)": Does not validate against any of the Union subtypes.*'
                     r'Given value: (.*)$', text)
    if union:
        key, value = union.groups()
        option = re.search(r"Problem with given class_path '([^']+)': Option '([^']+)' is not accepted", text)
        if option:
            class_path, name = option.groups()
            params = [p for p in _defaults(class_path, every=True)]
            return (f"{key}: {class_path.rsplit('.', 1)[-1]} takes no argument {name!r}{did_you_mean(name, params)}; "
                    f"its init_args are {', '.join(params) or 'none'}")
        if key == "trainer.logger":
            return (f"{key}: {value!r} is not a logger setting; write a logger entry such as "
                    "{class_path: CSVLogger}, a list of them, or false")
        name = _unknown_class(text, value)
        return (f"{key}: {name!r} is not a class it accepts{did_you_mean(name, _shipped_classes())}; "
                f"write a shipped class name (e.g. Krum) or a full import path in class_path")
    group = re.search(r"Group '([A-Za-z0-9_.]+)' does not accept option '([A-Za-z0-9_.]+)'", text)
    if group:
        key = ".".join(group.groups())
        return (f"unknown key {key!r}{did_you_mean(key, _valid_keys(parser))}; `{parser.prog} --help` lists "
                "the valid keys")
    hint = "".join(did_you_mean(key, _valid_keys(parser)) for key in _unknown_keys(text))
    return f"{text}{hint}; `{parser.prog} --help` lists the valid keys"


def _unknown_class(text: str, value: str) -> str:
    """The first class name in ``value`` (one name, or a list such as ``--aggregators``) that is not shipped;
    ``value`` itself when there is none to single out."""
    import re

    from fl_lightning.aggregator_options import class_names_in

    named = (re.search(r"Expected a dot import path string: (\S+)", text)
             or re.search(r"Problem with given class_path '([^']+)'", text))
    if named and named.group(1) != value:
        return named.group(1).rsplit(".", 1)[-1]
    names = class_names_in(value)
    shipped_names = set(_shipped_classes())
    unknown = [n for n in names if n.rsplit(".", 1)[-1] not in shipped_names or "." in n and not _importable(n)]
    return unknown[0] if unknown and (len(names) > 1 or names[0] != value) else value


def _importable(class_path: str) -> bool:
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def _unknown_keys(text: str) -> list[str]:
    """The dotted keys an 'unrecognized arguments' message complains about."""
    import re

    keys = []
    if "unrecognized arguments:" in text:
        keys += re.findall(r"--([A-Za-z0-9_.]+)", text.split("unrecognized arguments:", 1)[1])
    return keys


def _shipped_classes() -> list[str]:
    """The short class names a config may use (what the plug-in packages export)."""
    import importlib

    names: list[str] = []
    for package in ("aggregators", "attacks", "models", "data"):
        names += getattr(importlib.import_module(f"fl_lightning.{package}"), "__all__", [])
    return names


def _valid_keys(parser: "ArgumentParser") -> list[str]:
    keys = []
    for action in parser._actions:  # jsonargparse exposes no public list of the dotted keys
        keys += [s.lstrip("-") for s in action.option_strings if s.startswith("--")]
    return keys


def warn_replaced_attacks(parser: "ArgumentParser", args: list[str], cfg: "Namespace") -> None:
    """Warn when a command-line ``--trainer.attacks`` replaced an attack's class but kept its old ``init_args``.

    jsonargparse merges a new list item into the old one by position, so ``PixelBackdoor`` in place of a
    ``LabelFlip`` silently keeps LabelFlip's ``lr: 0.25``; every kept value that differs from the new class's
    default is named.
    """
    overrides = [i for i, a in enumerate(args) if a.startswith("--trainer.attacks")]
    if not overrides or not cfg.trainer.attacks:
        return
    from jsonargparse import ArgumentError

    try:
        before = parser.parse_args(_without(args, overrides))
    except ArgumentError:  # the rest does not parse alone (e.g. the attacks exist only on the command line)
        return
    old_attacks = before.trainer.attacks or []
    for index, (old, new) in enumerate(zip(old_attacks, cfg.trainer.attacks)):
        if old.class_path == new.class_path:
            continue
        given = _given_init_args(args, overrides, index)
        defaults = _defaults(new.class_path)
        old_args, new_args = dict(old.init_args or {}), dict(new.init_args or {})
        kept = {k: v for k, v in new_args.items()
                if k in old_args and old_args[k] == v and k not in given and defaults.get(k, _NONE) != v}
        if kept:
            old_name, new_name = old.class_path.rsplit(".", 1)[-1], new.class_path.rsplit(".", 1)[-1]
            shown = ", ".join(f"{k}: {v!r}" for k, v in kept.items())
            warnings.warn(f"trainer.attacks.{index}: {new_name} replaced {old_name} and kept its init_args "
                          f"{shown} (not {new_name}'s defaults); give them in the override's init_args if that "
                          "is not what you meant", UserWarning, stacklevel=2)


_NONE = object()


def _without(args: list[str], indices: list[int]) -> list[str]:
    """``args`` minus the options at ``indices`` and their values."""
    drop = set()
    for i in indices:
        drop.add(i)
        if "=" not in args[i] and i + 1 < len(args):
            drop.add(i + 1)
    return [a for i, a in enumerate(args) if i not in drop]


def _given_init_args(args: list[str], indices: list[int], position: int) -> set[str]:
    """The init_args keys the command line wrote for the attack at ``position``."""
    given: set[str] = set()
    for i in indices:
        option, sep, value = args[i].partition("=")
        if not sep:
            value = args[i + 1] if i + 1 < len(args) else ""
        try:
            parsed: Any = yaml.safe_load(value)
        except yaml.YAMLError:
            continue
        items = parsed if isinstance(parsed, list) else [parsed]
        if option.endswith("+"):
            continue  # an appended attack replaces nothing
        if position < len(items) and isinstance(items[position], dict):
            given |= set(items[position].get("init_args") or {})
    return given


def _defaults(class_path: str, every: bool = False) -> dict[str, Any]:
    """The class's constructor defaults (``every``: all its named parameters, defaults or not)."""
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        signature = inspect.signature(getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError, TypeError, ValueError):
        return {}
    return {k: p.default for k, p in signature.parameters.items()
            if (every and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)) or p.default is not inspect.Parameter.empty}


if __name__ == "__main__":
    main()
