"""The non-iid defense tables (issue 19) from ``benchmarks/results/heterogeneous_defense.jsonl``: the README's
(``heterogeneous-defense``) and REPRODUCTION.md's (``heterogeneous-frontier``), rewritten in place.

Each line of the file is one quickstart run of ``benchmarks/heterogeneous_defense.py`` (a lever stack, with or
without the flip, a seed). Seed 0 is the quickstart's own and gives the headline columns; where seeds 1 and 2
ran too, their mean ± sd over the seeds sits beside it. Runs take half a minute each on a free core, so no
test reruns them; ``--check`` compares the documents with the file.

    python docs/scripts/heterogeneous_table.py [--check]
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's package, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "benchmarks"))

import doc_tables  # noqa: E402
from heterogeneous_defense import label  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "heterogeneous_defense.jsonl"
HEADER = ["stack", "no attack: final / late acc", "label flip: final / late acc", "late ASR",
          "w attackers / honest", "seeds 0-2: no-attack late acc / flip late acc / ASR (mean ± sd)"]


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _spread(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return _f(values[0])
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def load(path: Path = RESULTS) -> dict[str, dict[tuple[str, int], dict]]:
    """stack -> (attack, seed) -> its last run in the file."""
    runs: dict[str, dict[tuple[str, int], dict]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        runs.setdefault(record["stack"], {})[(record["attack"], record.get("seed", 0))] = record
    return runs


def rows(runs: dict[str, dict[tuple[str, int], dict]]) -> list[list[str]]:
    """One row per stack, FedAvg first, then by seed 0's no-attack late accuracy."""
    def key(stack: str) -> tuple[bool, float]:
        clean = runs[stack].get(("none", 0), {}).get("late_acc")
        return (stack != "fedavg", -(clean if clean is not None else -1.0))

    out = []
    for stack in sorted(runs, key=key):
        by = runs[stack]
        clean, flip = by.get(("none", 0)), by.get(("label_flip", 0))
        seeds = sorted({seed for _, seed in by})
        multi = [s for s in seeds if ("none", s) in by and ("label_flip", s) in by]
        across = "–"
        if len(multi) > 1:
            across = " / ".join(_spread([by[(attack, s)][field] for s in multi]) for attack, field in
                                (("none", "late_acc"), ("label_flip", "late_acc"), ("label_flip", "late_asr")))
            across += f" ({len(multi)} seeds)"
        w = (f"{flip['w_attackers']:.4f} / {flip['w_honest']:.3f}" if flip and flip.get("w_attackers") is not None
             and math.isfinite(flip["w_attackers"]) else "–")
        out.append([label(stack),
                    f"{_f(clean['final_acc'])} / {_f(clean['late_acc'])}" if clean else "–",
                    f"{_f(flip['final_acc'])} / {_f(flip['late_acc'])}" if flip else "–",
                    _f(flip["late_asr"]) if flip else "–", w, across])
    return out


def main(argv: list[str]) -> int:
    table = rows(load())
    status = 0
    for name, doc in (("heterogeneous-defense", doc_tables.README), ("heterogeneous-frontier", doc_tables.REPRODUCTION)):
        status = max(status, doc_tables.main(name, HEADER, table, doc=doc, argv=argv,
                                             command="python docs/scripts/heterogeneous_table.py"))
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
