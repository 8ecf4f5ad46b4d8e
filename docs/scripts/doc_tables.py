"""Tables in the docs written by scripts: each sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``
in a Markdown file, under one provenance line (the command, the commit, torch / Lightning / fl_lightning
versions), and a script rewrites it in place or, with ``--check``, fails when the numbers drifted.

A table script (``quickstart_table.py`` is the example) computes its rows and ends with::

    raise SystemExit(doc_tables.main("quickstart-short", header, rows, doc=README, argv=sys.argv[1:]))

``--check`` compares the table lines only (the provenance line names a commit and would always differ);
``--doc PATH`` writes or checks another copy of the document (a trial run of a long table).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
REPRODUCTION = ROOT / "REPRODUCTION.md"


def _commit() -> str:
    """The checkout's commit, marked when tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip():
            commit += " + local changes"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    return commit


#: the commit when the script started (a long table's runs take minutes; the checkout may move meanwhile)
COMMIT_AT_START = _commit()


def provenance(command: str) -> str:
    """The provenance line: what produced the table, from which commit, with which versions."""
    import lightning
    import torch

    import fl_lightning

    commit = COMMIT_AT_START
    return (f"<sub>Written by `{command}` at commit {commit} with torch {torch.__version__}, "
            f"lightning {lightning.__version__}, fl_lightning {fl_lightning.__version__}.</sub>")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(.*?)(<!-- /table:{re.escape(name)} -->)", re.S)


def table_lines(block: str) -> list[str]:
    """The table rows of a block (its provenance and blank lines left out)."""
    return [line for line in block.splitlines() if line.startswith("|")]


def main(name: str, header: Sequence[str], rows: Sequence[Sequence[str]], *, doc: Path, argv: Sequence[str],
         command: str | None = None) -> int:
    """Write the table ``name`` into ``doc`` (``--doc PATH``: another file), or check it (``--check``)."""
    argv = list(argv)
    check = "--check" in argv
    if "--doc" in argv:
        doc = Path(argv[argv.index("--doc") + 1])
    text = doc.read_text()
    match = _block(name).search(text)
    if match is None:
        print(f"{doc}: no <!-- table:{name} --> ... <!-- /table:{name} --> block to write into", file=sys.stderr)
        return 2
    table = markdown_table(header, rows)
    if check:
        if table_lines(match.group(2)) == table_lines(table):
            print(f"{doc.name}: table {name} matches the code")
            return 0
        print(f"{doc.name}: table {name} drifted from the code; regenerate it with "
              f"`{command or 'python ' + shlex.join(sys.argv)}` (without --check)\nin the doc:\n{match.group(2)}"
              f"\nfrom the code:\n{table}", file=sys.stderr)
        return 1
    if "--doc" in argv:  # the command as it writes the document it sits in
        at = argv.index("--doc")
        argv = argv[:at] + argv[at + 2:]
    command = command or "python " + shlex.join([str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *argv])
    new = f"{provenance(command)}\n\n{table}\n"
    doc.write_text(text[:match.start(2)] + new + text[match.end(2):])
    print(f"wrote table {name} into {doc}")
    return 0
