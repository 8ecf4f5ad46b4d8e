"""A run writes only inside its save folder: names that leave it, and symlinks on the way, are refused.

``SAVE_DIR/NAME/RUN`` is built from a recipe's ``name``, ``--name``, a sweep point's name and a logger's
``name`` / ``version`` / ``sub_dir``. Each must be a relative path without ``..``; the folder they make must
lie inside ``SAVE_DIR`` (checked on the text, before any folder is created); and no folder between
``SAVE_DIR`` and the run's checkpoints may be a symlink, which would carry the run elsewhere, unless the
user opts in (``follow_symlinks: true``). ``SAVE_DIR`` itself is the user's choice and may be a link.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePath

#: how a user lets a run write through symlinks below its save folder
OPT_IN = "--follow_symlinks true (follow_symlinks: true in the recipe)"


def check_name(name: object, key: str) -> str:
    """``name`` if it is a relative folder path without ``..`` (``mnist``, ``paper/table4``); else ``ValueError``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{key}: {name!r} is not a folder name; write a name such as mnist_label_flip")
    parts = PurePath(name).parts
    if PurePath(name).is_absolute() or name.startswith("~") or ".." in parts or "\\" in name:
        raise ValueError(f"{key}: {name!r} leaves the save folder; a run's name is a folder inside save_dir "
                         "(e.g. mnist or paper/table4), without '..', '~' or a leading '/': set save_dir to "
                         "write elsewhere")
    return name


def check_inside(root: str | Path, folder: str | Path, key: str) -> None:
    """``ValueError`` unless ``folder`` lies inside ``root``, judged on the paths' text (no folder needed)."""
    root_text, folder_text = os.path.normpath(os.path.abspath(root)), os.path.normpath(os.path.abspath(folder))
    if os.path.commonpath([root_text, folder_text]) != root_text:
        raise ValueError(f"{key}: the run would write to {folder}, outside its save folder {root}; use names "
                         "without '..' or a leading '/', or set save_dir to write elsewhere")


def check_no_symlinks(root: str | Path, folder: str | Path, key: str, follow: bool = False) -> None:
    """``ValueError`` if a folder from below ``root`` down to ``folder`` is a symlink (unless ``follow``)."""
    if follow:
        return
    root, folder = Path(root), Path(folder)
    check_inside(root, folder, key)
    relative = Path(os.path.relpath(os.path.abspath(folder), os.path.abspath(root)))
    current = root
    for part in relative.parts:
        if part == ".":
            continue
        current = current / part
        if current.is_symlink():
            raise ValueError(f"{key}: {current} is a symlink (to {os.readlink(current)}), which would carry the "
                             f"run outside {root}; remove the link, or pass {OPT_IN} to write through it")
        if not current.exists():
            return  # nothing further down exists yet, so nothing there is a link
