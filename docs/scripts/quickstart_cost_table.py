"""The README's long quickstart table ("What it costs and what it buys"): the quickstart recipe as shipped
(100 rounds, seed 0) with and without its label-flipping attack, for FedAvg and residual reweighting with the
reference's and the paper's weights. Six full runs: about half an hour on two free CPU cores; not run by the
tests. ``python docs/scripts/quickstart_cost_table.py`` rewrites the README's table and REPRODUCTION.md's copy (``--check`` compares,
``--rounds N --doc COPY.md`` tries the script on a short run and a copy of the README).
"""
from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))

import doc_tables  # noqa: E402

RULES = [("FedAvg", "{class_path: FedAvg}"),
         ("ResidualReweight (reference, the default)", "{class_path: ResidualReweight}"),
         ('ResidualReweight(variant="paper")', "{class_path: ResidualReweight, init_args: {variant: paper}}")]
HEADER = ["rule", "no attack: acc / late acc", "no attack: rounds 1-50 at <= 0.2 acc", "label flip: acc / late acc",
          "late ASR", "w attackers / honest"]


def _run(aggregator: str, rounds: int, attacked: bool):
    """One quickstart run; returns its summary and its per-round test accuracies."""
    from fl_lightning.fit_config import fit_one, fit_parser
    from fl_lightning.run_summary import RunSummary
    from fl_lightning.shipped import recipe_path

    parser = fit_parser()
    with tempfile.TemporaryDirectory() as save_dir:
        args = ["--config", str(recipe_path("quickstart")), "--trainer.rounds", str(rounds), "--save_dir", save_dir,
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--aggregators", "null",
                "--trainer.aggregator", aggregator]
        if not attacked:
            args += ["--trainer.attacks", "[]"]
        cfg = parser.parse_args(args)
        trainer = fit_one(cfg, parser, "run", quiet=True, several_runs=False)
        accs = [r.metrics.get("test/acc", math.nan) for r in trainer.history]
        return RunSummary.from_trainer("run", trainer), accs


def rows(rounds: int) -> list[list[str]]:
    """One row per rule: the run without attack beside the run under label flipping."""
    import torch

    torch.set_num_threads(1)
    out = []
    early = min(50, rounds)
    for label, aggregator in RULES:
        clean, clean_accs = _run(aggregator, rounds, attacked=False)
        flip, _ = _run(aggregator, rounds, attacked=True)
        asr = next((v for k, v in flip.late_mean.items() if k.startswith("attack/")), math.nan)
        out.append([label, f"{clean.final['test/acc']:.3f} / {clean.late_mean['test/acc']:.3f}",
                    f"{sum(a <= 0.2 for a in clean_accs[:early])} of {early}",
                    f"{flip.final['test/acc']:.3f} / {flip.late_mean['test/acc']:.3f}", f"{asr:.3f}",
                    f"{flip.weight_attackers_mean:.3f} / {flip.weight_honest_mean:.3f}"])
    return out


if __name__ == "__main__":
    argv = sys.argv[1:]
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 100
    table = rows(rounds)
    # the README's table, and REPRODUCTION.md's copy under its discussion (--doc PATH: that one file)
    docs = [doc_tables.README] if "--doc" in argv else [doc_tables.README, doc_tables.REPRODUCTION]
    raise SystemExit(max([doc_tables.main("quickstart-cost", HEADER, table, doc=doc, argv=argv) for doc in docs]))
