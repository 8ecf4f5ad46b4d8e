"""A table of ``fl-lightning report`` written into REPRODUCTION.md between ``<!-- table:NAME -->`` markers.

The report of a sweep folder (``logs/<sweep>/report.md``: the paper's layout, each cell our final / late
numbers, mean ± sd over the seeds, the paper's number beside) is rebuilt from the folder's ``summary.json``
files, and the table of one metric is copied into the document under a line that records this command,
the commit and the versions (``doc_tables``). Sweeps take tens of minutes to hours, so no test reruns
them; ``--check`` compares the document with the folder.

    python docs/scripts/sweep_table.py fig3-acc logs/mnist_label_flip-mnist5k --metric test/acc
    python docs/scripts/sweep_table.py fig3-asr logs/mnist_label_flip-mnist5k --metric attack/asr --check
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))

import doc_tables  # noqa: E402


def report_table(folder: Path, metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of ``metric``'s table in the folder's freshly written report."""
    from fl_lightning.sweeps.report import report_parser, run_report

    report = run_report(report_parser().parse_args([str(folder)])).read_text().splitlines()
    heading = f"## {metric}"
    if heading not in report:
        found = [line[3:] for line in report if line.startswith("## ")]
        raise SystemExit(f"{folder}: the report has no table for {metric!r}; it has {found}")
    start = report.index(heading) + 1
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
    parser.add_argument("--metric", default="test/acc", help="the report's table to copy (default test/acc)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--doc", type=Path, default=doc_tables.REPRODUCTION, help="the document (REPRODUCTION.md)")
    args = parser.parse_args(argv)
    header, rows = report_table(args.folder, args.metric)
    command = f"python docs/scripts/sweep_table.py {args.name} {args.folder.as_posix()} --metric {args.metric}"
    return doc_tables.main(args.name, header, rows, doc=args.doc, argv=["--check"] if args.check else [],
                           command=command)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
