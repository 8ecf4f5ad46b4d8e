"""REPRODUCTION.md's Table 3 at MNIST5k, seed by seed, from sweep folders' ``summary.json`` files (issue 23).

For every point: late (last 40% of rounds) clean accuracy and backdoor ASR of the global model, the peak
ASR, the attackers' own local models (``attack/local_*``, mean over the rounds they attacked), how many of
those rounds the run flagged as diverged, the attacker's aggregation weight and, for model replacement,
the global model right after the replacement round. Then mean ± sd per rule and how many seeds meet
issue 23's goal. Each table is written in place between ``<!-- table:NAME -->`` markers (``doc_tables``):

    python docs/scripts/table3_seeds.py table3-naive logs/backdoor_mnist_naive-mnist5k-passes
    python docs/scripts/table3_seeds.py table3-replacement logs/backdoor_mnist_replacement-mnist5k
    ... --check   (compare with the folder instead of writing)

The runs take an hour or more on one core, so no test runs this script; the provenance line above each
table records the command and the commit it ran from.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))

import doc_tables  # noqa: E402

LATE = 0.4
HEADER = ["point", "late acc", "late ASR", "peak ASR", "attacker's local acc / ASR", "diverged rounds",
          "w attacker (replacement: in its round)", "global model after the replacement round: acc / ASR"]
#: the paper's Table 3 (MNIST): clean accuracy and backdoor ASR, naive and replacement, per rule
PAPER = {"naive": {"FedAvg": (99.08, 99.71), "CoordinateMedian": (98.91, 10.34), "TrimmedMean": (98.97, 10.34),
                   "RepeatedMedian": (98.96, 10.36), "FoolsGold": (96.20, 12.51),
                   "ResidualReweight": (98.97, 10.35)},
         "replacement": {"FedAvg": (98.75, 17.85), "CoordinateMedian": (98.87, 10.35),
                         "TrimmedMean": (98.81, 10.34), "RepeatedMedian": (98.82, 10.32),
                         "FoolsGold": (97.96, 10.27), "ResidualReweight": (98.88, 10.31)}}
#: the order of the paper's rows
RULE_ORDER = list(PAPER["naive"])


def _mean(values: list[float | None]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def point_numbers(record: dict) -> dict[str, float]:
    """The headline numbers of one point from its ``summary.json``."""
    history = record["history"]
    late = history[-max(1, math.ceil(len(history) * LATE)):]

    def metric(rounds: list[dict], key: str) -> float:
        return _mean([r["metrics"].get(key) for r in rounds])

    attacked = [r for r in history if "attack/local_acc" in r["metrics"]]
    out = {"acc": metric(late, "test/acc"), "asr": metric(late, "attack/backdoor_asr"),
           "local_acc": metric(attacked, "attack/local_acc"),
           "local_asr": metric(attacked, "attack/local_backdoor_asr"),
           "diverged": sum(r["metrics"].get("attack/local_diverged", 0) for r in attacked),
           "attacked": len(attacked),
           "w_att": metric(history, "aggregator/weight_attackers_mean"),
           "peak_asr": max((r["metrics"].get("attack/backdoor_asr", 0.0) for r in history), default=math.nan)}
    if len(attacked) == 1:  # one attack round (replacement): the global model right after it
        index = history.index(attacked[0])
        out["round_acc"] = history[index]["metrics"].get("test/acc", math.nan)
        out["round_asr"] = history[index]["metrics"].get("attack/backdoor_asr", math.nan)
        # the attacker's weight in the round it attacked (in the other rounds it takes part as an honest client)
        out["w_att"] = _mean([attacked[0]["metrics"].get("aggregator/weight_attackers_mean")])
    return out


def _rule_of(point: str) -> str:
    return point.rsplit("-seed=", 1)[0]


def table_rows(folder: Path, kind: str) -> list[list[str]]:
    """A row per point, then per rule (with more than one seed) mean ± sd beside the paper's numbers."""
    by_rule: dict[str, list[tuple[str, dict]]] = {}
    for path in sorted(folder.glob("*/summary.json")):
        record = json.loads(path.read_text())
        by_rule.setdefault(_rule_of(record["point"]), []).append((record["point"], point_numbers(record)))
    if not by_rule:
        raise SystemExit(f"{folder}: no */summary.json (run the sweep first)")
    rows = []
    for rule in sorted(by_rule, key=lambda r: (RULE_ORDER.index(r) if r in RULE_ORDER else len(RULE_ORDER), r)):
        points = by_rule[rule]
        for name, n in points:
            after = f"{_pct(n['round_acc'])} / {_pct(n['round_asr'])}" if "round_acc" in n else "–"
            rows.append([name, _pct(n["acc"]), _pct(n["asr"]), _pct(n["peak_asr"]),
                         f"{_pct(n['local_acc'])} / {_pct(n['local_asr'])}", f"{n['diverged']:.0f} of {n['attacked']}",
                         "–" if not math.isfinite(n["w_att"]) else f"{n['w_att']:.3f}", after])
        accs, asrs = [n["acc"] for _, n in points], [n["asr"] for _, n in points]
        paper_acc, paper_asr = PAPER[kind].get(rule, (math.nan, math.nan))
        spread = (lambda v: f" ± {_pct(statistics.stdev(v))}") if len(points) > 1 else (lambda v: "")
        seeds = f"{len(points)} seeds" if len(points) > 1 else "1 seed"
        rows.append([f"**{rule}, mean{' ± sd' if len(points) > 1 else ''} of {seeds}** (paper)",
                     f"**{_pct(statistics.mean(accs))}{spread(accs)}** ({paper_acc})",
                     f"**{_pct(statistics.mean(asrs))}{spread(asrs)}** ({paper_asr})", "", "", "", "", ""])
    return rows


def main(argv: list[str]) -> int:
    """``NAME FOLDER [--check] [--doc PATH]``: write (or check) REPRODUCTION.md's table NAME from FOLDER."""
    positional = [a for i, a in enumerate(argv) if not a.startswith("--") and (i == 0 or argv[i - 1] != "--doc")]
    if len(positional) != 2 or positional[0] not in ("table3-naive", "table3-replacement"):
        print(__doc__, file=sys.stderr)
        return 2
    name, folder = positional
    kind = "naive" if name == "table3-naive" else "replacement"
    rows = table_rows(Path(folder), kind)
    header = HEADER
    if kind == "naive":                                   # no replacement round: drop its column
        header, rows = [*HEADER[:-2], "w attacker"], [row[:-1] for row in rows]
    options = [a for a in argv if a not in positional]
    return doc_tables.main(name, header, rows, doc=doc_tables.REPRODUCTION, argv=options,
                           command=f"python docs/scripts/table3_seeds.py {name} {folder}")

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
