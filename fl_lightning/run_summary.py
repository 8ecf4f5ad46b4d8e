"""The end-of-run table: final and late-round means of accuracy, attack success and client weights."""
from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from fl_lightning.trainer import FederatedTrainer, RoundRecord

#: the late rounds averaged in summaries: the last round alone depends on whether attackers were sampled
LATE_FRACTION = 0.4


@dataclass
class RunSummary:
    """One run's headline numbers."""

    name: str
    final: dict[str, float]
    late_mean: dict[str, float]
    weight_attackers_mean: float
    weight_honest_mean: float
    log_dir: str
    rounds: int = 0
    extra: dict = field(default_factory=dict)

    @staticmethod
    def from_trainer(name: str, trainer: "FederatedTrainer") -> "RunSummary":
        """Summarise a finished trainer's history and final test metrics."""
        return RunSummary.from_history(name, trainer.history, trainer.test(), str(trainer.log_dir))

    @staticmethod
    def from_history(name: str, history: Sequence["RoundRecord"], final: dict[str, float],
                     log_dir: str = "") -> "RunSummary":
        """Summarise a list of round records."""
        late = history[-max(1, math.ceil(len(history) * LATE_FRACTION)):] if history else []
        keys = sorted({k for r in late for k in r.metrics if k.startswith(("test/", "attack/"))})
        late_mean = {k: _mean([r.metrics[k] for r in late if k in r.metrics]) for k in keys}
        attacked = [r for r in history if "aggregator/weight_attackers_mean" in r.metrics]
        return RunSummary(
            name=name, final=dict(final), late_mean=late_mean,
            weight_attackers_mean=_mean([r.metrics["aggregator/weight_attackers_mean"] for r in attacked]),
            weight_honest_mean=_mean([r.metrics["aggregator/weight_honest_mean"] for r in attacked
                                      if "aggregator/weight_honest_mean" in r.metrics]),
            log_dir=log_dir, rounds=len(history))

    def as_dict(self) -> dict[str, float | str]:
        """Flat numbers, e.g. for JSON."""
        out: dict[str, float | str] = {"name": self.name, "rounds": self.rounds, "log_dir": self.log_dir}
        out.update({f"final/{k}": v for k, v in self.final.items()})
        out.update({f"late_mean/{k}": v for k, v in self.late_mean.items()})
        out["weight_attackers_mean"] = self.weight_attackers_mean
        out["weight_honest_mean"] = self.weight_honest_mean
        return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def print_summaries(summaries: Sequence[RunSummary], title: str = "") -> None:
    """A rich table, one row per run, then where the runs' logs are."""
    from rich.console import Console
    from rich.table import Table

    from fl_lightning.console_tables import print_whole

    pct = int(LATE_FRACTION * 100)
    table = Table(title=f"{title}: final round, and mean over the last {pct}% of rounds (late)")
    table.add_column("aggregator", no_wrap=True)
    for column in ("acc", "acc late", "ASR", "ASR late", "w attack", "w honest"):
        table.add_column(column, justify="right", no_wrap=True)
    asr_key = next((k for s in summaries for k in s.final if k.startswith("attack/")), None)
    for s in summaries:
        table.add_row(s.name, _fmt(s.final.get("test/acc")), _fmt(s.late_mean.get("test/acc")),
                      _fmt(s.final.get(asr_key)) if asr_key else "-",
                      _fmt(s.late_mean.get(asr_key)) if asr_key else "-",
                      _fmt(s.weight_attackers_mean, 4), _fmt(s.weight_honest_mean, 4))
    console = Console()
    print_whole(console, table)
    console.print("w attack / w honest: mean client weight of attackers / honest clients over the rounds "
                  "where attackers took part")
    if asr_key:
        console.print(f"ASR: {asr_key}")
    dirs = sorted({str(s.log_dir) for s in summaries})
    roots = sorted({str(Path(d).parent) for d in dirs})
    console.print("Logs:", *dirs, sep="\n  ")
    if any(any(Path(d).glob("events.out.tfevents.*")) for d in dirs):
        console.print(f"View them with: tensorboard --logdir {' '.join(roots)}")


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
