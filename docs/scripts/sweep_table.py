"""A table of ``fl-lightning report`` written into REPRODUCTION.md between ``<!-- table:NAME -->`` markers.

The report of a sweep folder (``logs/<sweep>/report.md``: the paper's layout, each cell our final / late
numbers, mean ± sd over the seeds, the paper's number beside) is rebuilt from the folder's ``summary.json``
files, and the table of one metric is copied into the document under a line that records this command,
the commit and the versions (``doc_tables``). Sweeps take tens of minutes to hours, so no test reruns
them; ``--check`` compares the document with the folder.

    python docs/scripts/sweep_table.py fig3-acc logs/mnist_label_flip-mnist5k --section test/acc
    python docs/scripts/sweep_table.py fig3-asr logs/mnist_label_flip-mnist5k --section attack/asr --check
    python docs/scripts/sweep_table.py levers-iid logs/robustness_matrix-levers-ranked --section partition=iid
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))

import doc_tables  # noqa: E402


def report_table(folder: Path, section: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first table under the report heading that starts with ``section`` (a metric
    such as ``test/acc``, or a robustness matrix's ``partition=iid: accuracy against protection``)."""
    from fl_lightning.sweeps.report import report_parser, run_report

    report = run_report(report_parser().parse_args([str(folder)])).read_text().splitlines()
    headings = [i for i, line in enumerate(report) if line.startswith("#")]
    titles = {i: report[i].lstrip("#").strip() for i in headings}
    matches = ([i for i in headings if titles[i] == section]                  # an exact heading first
               or [i for i in headings if titles[i].startswith(section)])
    if not matches:
        found = list(titles.values())
        raise SystemExit(f"{folder}: the report has no section {section!r}; it has {found}")
    start = matches[0] + 1
    while not report[start].startswith("|"):
        start += 1
    lines = []
    for line in report[start:]:
        if not line.startswith("|"):
            break
        lines.append(line)
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    return split[0], split[2:]                         # split[1] is the |---| rule


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the table's marker name in the document")
    parser.add_argument("folder", type=Path, help="the sweep folder (logs/<sweep>)")
    parser.add_argument("--metric", "--section", dest="section", default="test/acc",
                        help="the report heading whose table to copy: a metric (default test/acc) or the start of "
                             "another heading (a matrix's 'partition=classes: accuracy against protection')")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--doc", type=Path, default=doc_tables.REPRODUCTION, help="the document (REPRODUCTION.md)")
    args = parser.parse_args(argv)
    header, rows = report_table(args.folder, args.section)
    command = f"python docs/scripts/sweep_table.py {args.name} {args.folder.as_posix()} --section '{args.section}'"
    return doc_tables.main(args.name, header, rows, doc=args.doc, argv=["--check"] if args.check else [],
                           command=command)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
