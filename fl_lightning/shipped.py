"""The files the package ships beside its code: the recipes (addressable by name) and the Flower demo app.

Only the standard library and PyYAML: the command line lists and resolves recipes before torch is imported.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

#: the shipped recipes (``fl_lightning/recipes/*.yaml``; a clone's top-level ``recipes/`` links here)
RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
#: the Flower app of docs/scale-out.md (a ServerApp with RobustStrategy and a ClientApp)
FLOWER_APP_DIR = Path(__file__).resolve().parent / "integrations" / "flower_app"


def recipe_names() -> list[str]:
    """The shipped recipes' names (file stems), sorted."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path | None:
    """The shipped recipe called ``name`` (``quickstart`` or ``quickstart.yaml``), or None.

    Examples:
        >>> recipe_path("quickstart").name
        'quickstart.yaml'
        >>> recipe_path("no_such_recipe") is None
        True
    """
    stem = name[:-5] if name.endswith(".yaml") else name
    if "/" in stem or "\\" in stem or stem.startswith("."):
        return None
    path = RECIPE_DIR / f"{stem}.yaml"
    return path if path.is_file() else None


def resolve_config(value: str) -> str:
    """A ``--config`` value as a file to read: an existing path as given, else the shipped recipe of that name.

    A value that is neither is returned unchanged (the caller reports it as missing).
    """
    if Path(value).is_file():
        return value
    shipped = recipe_path(value)
    return str(shipped) if shipped is not None else value


def recipe_summary(name: str) -> str:
    """A recipe's one-line ``description:`` (empty when it has none)."""
    path = recipe_path(name)
    if path is None:
        raise ValueError(f"no shipped recipe {name!r}")
    content = yaml.safe_load(path.read_text())
    description = content.get("description", "") if isinstance(content, dict) else ""
    return " ".join(str(description).split())


def copy_flower_app(dest: str | Path) -> Path:
    """Copy the shipped Flower app into ``dest`` (which must not exist yet) and return it."""
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; name a new folder for the Flower app")
    shutil.copytree(FLOWER_APP_DIR, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest
