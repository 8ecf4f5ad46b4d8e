"""The command line's schema: each command's ``--help`` text and valid keys, written to ``cli_schema.json``
so that ``fl-lightning fit --help`` and a mistyped key are answered without importing torch or Lightning.

The file is generated from the live parsers (``python -m fl_lightning.cli_schema``) and shipped in the
wheel; ``python -m fl_lightning.cli_schema --check`` (run by the tests) fails when it no longer matches
them, e.g. after a new trainer argument. The fast answers only ever refuse a key the live parser would
refuse too: keys under a class or mapping option (``model.init_args.lr``) are left to the live parser.
"""
from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

#: the generated file, beside this module
SCHEMA_FILE = Path(__file__).resolve().parent / "cli_schema.json"
#: the width the help text is laid out at (argparse reads COLUMNS)
HELP_COLUMNS = 100
#: keys jsonargparse accepts beside the parser's own options
SPECIAL_KEYS = ("help", "print_config", "config")


def _parsers() -> dict[str, "ArgumentParser"]:
    """The live parser of every command that takes options."""
    from fl_lightning.fit_config import fit_parser
    from fl_lightning.sweeps import report_parser, sweep_parser

    parsers = {"fit": fit_parser(), "sweep": sweep_parser(), "report": report_parser()}
    for command, parser in parsers.items():
        parser.prog = f"fl-lightning {command}"
    return parsers


def command_schema(parser: "ArgumentParser") -> dict[str, Any]:
    """One command's schema: its help text, its dotted keys, and the keys that take any sub-key (``open``)."""
    keys: list[str] = []
    help_of_class: set[str] = set()
    mappings: set[str] = set()
    for action in parser._actions:  # jsonargparse exposes no public list of the dotted keys
        for option in action.option_strings:
            if option.startswith("--"):
                keys.append(option[2:].rstrip("+"))
        typehint = str(getattr(action, "_typehint", None) or "")
        names = [s[2:] for s in action.option_strings if s.startswith("--")]
        if names and names[0].endswith(".help") and type(action).__name__ == "_ActionHelpClassPath":
            help_of_class.add(names[0][:-len(".help")])
        elif names and ("dict" in typehint or "Any" in typehint):
            mappings.add(names[0].rstrip("+"))
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_COLUMNS)
    try:
        text = parser.format_help()
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return {"help": text, "keys": sorted(set(keys)), "open": sorted(help_of_class | mappings)}


def build_schema() -> dict[str, Any]:
    """The schema of every command, from the live parsers (imports torch and Lightning)."""
    from fl_lightning.version import __version__

    return {"version": __version__, "commands": {c: command_schema(p) for c, p in _parsers().items()}}


def load_schema() -> dict[str, Any] | None:
    """The shipped schema, or None when it is missing or written for another version of the package."""
    from fl_lightning.version import __version__

    try:
        schema = json.loads(SCHEMA_FILE.read_text())
    except (OSError, ValueError):
        return None
    return schema if isinstance(schema, dict) and schema.get("version") == __version__ else None


def option_keys(args: list[str]) -> Iterator[str]:
    """The dotted keys of the ``--key`` / ``--key=value`` options in ``args`` (values skipped)."""
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            yield arg[2:].partition("=")[0].rstrip("+")


def config_keys(mapping: dict[str, Any], command: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """The dotted keys a recipe mapping sets, down to the keys the schema knows or leaves open."""
    known, open_keys = set(command["keys"]), set(command["open"])
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        yield dotted
        is_group = any(k.startswith(dotted + ".") for k in known)
        if isinstance(value, dict) and is_group and dotted not in open_keys and not _under_open(dotted, open_keys):
            yield from config_keys(value, command, dotted + ".")


def unknown_key(key: str, command: dict[str, Any]) -> bool:
    """Whether the live parser refuses ``key`` for sure (it is not a key, nor under a class or mapping option)."""
    if not isinstance(key, str):
        return False
    abbreviates = sum(k.startswith(key) for k in command["keys"]) == 1  # argparse takes a unique prefix
    return (key not in command["keys"] and not abbreviates and key.split(".")[0] not in SPECIAL_KEYS
            and not _under_open(key, set(command["open"])) and not key.endswith(".help"))


def _under_open(key: str, open_keys: set[str]) -> bool:
    return any(key.startswith(o + ".") for o in open_keys)


def main(argv: list[str] | None = None) -> int:
    """Write the schema (no argument) or, with ``--check``, fail when the shipped one differs from the live one."""
    argv = sys.argv[1:] if argv is None else argv
    live = build_schema()
    text = json.dumps(live, indent=1, sort_keys=True) + "\n"
    if argv == ["--check"]:
        shipped = SCHEMA_FILE.read_text() if SCHEMA_FILE.is_file() else ""
        if shipped == text:
            print(f"{SCHEMA_FILE.name} matches the live parsers")
            return 0
        diff = difflib.unified_diff(shipped.splitlines(), text.splitlines(), "shipped", "live", lineterm="", n=1)
        print("\n".join(list(diff)[:60]))
        print(f"{SCHEMA_FILE} is out of date; regenerate it with `python -m fl_lightning.cli_schema`", file=sys.stderr)
        return 1
    if argv:
        print("usage: python -m fl_lightning.cli_schema [--check]", file=sys.stderr)
        return 2
    SCHEMA_FILE.write_text(text)
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
