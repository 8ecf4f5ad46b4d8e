"""Table 3 at MNIST5k, seed by seed, from a sweep folder's summary.json files (REPRODUCTION.md, issue 23).

For every point: late (last 40% of rounds) clean accuracy and backdoor ASR of the global model, the
attackers' own local models (``attack/local_*``, mean over the rounds they attacked), the attacker's
aggregation weight, and for model replacement the replacement round itself. Prints Markdown.
Run: PYTHONPATH=. python docs/scripts/table3_seeds.py logs/backdoor_mnist_naive-mnist5k [more folders]
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

LATE = 0.4


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def _pct(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def point_numbers(record: dict) -> dict[str, float]:
    """The headline numbers of one point."""
    history = record["history"]
    late = history[-max(1, math.ceil(len(history) * LATE)):]
    metric = lambda rounds, key: _mean([r["metrics"].get(key) for r in rounds])  # noqa: E731
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
    return out


def main(folders: list[str]) -> None:
    """One Markdown table per sweep folder: a row per point, then mean ± sd per rule."""
    for folder in folders:
        rows: dict[str, list[tuple[str, dict]]] = {}
        for path in sorted(Path(folder).glob("*/summary.json")):
            record = json.loads(path.read_text())
            rule = record["point"].rsplit("-seed=", 1)[0]
            rows.setdefault(rule, []).append((record["point"], point_numbers(record)))
        print(f"\n### {folder}\n")
        print("| point | late acc | late ASR | peak ASR | attacker's local acc / ASR | diverged rounds | w attacker |"
              " replacement round: acc / ASR |")
        print("|---|---|---|---|---|---|---|---|")
        for rule, points in rows.items():
            for name, n in points:
                extra = f"{_pct(n['round_acc'])} / {_pct(n['round_asr'])}" if "round_acc" in n else "–"
                print(f"| {name} | {_pct(n['acc'])} | {_pct(n['asr'])} | {_pct(n['peak_asr'])} | "
                      f"{_pct(n['local_acc'])} / {_pct(n['local_asr'])} | {n['diverged']:.0f} of {n['attacked']} | "
                      f"{n['w_att']:.3f} | {extra} |")
            if len(points) > 1:
                accs, asrs = [n["acc"] for _, n in points], [n["asr"] for _, n in points]
                print(f"| **{rule}, mean ± sd** | {_pct(statistics.mean(accs))} ± {_pct(statistics.stdev(accs))} | "
                      f"{_pct(statistics.mean(asrs))} ± {_pct(statistics.stdev(asrs))} | | | | | |")


if __name__ == "__main__":
    main(sys.argv[1:])
