"""The README's shortened quickstart table: the quickstart recipe as shipped, cut to a few rounds, seed 0.

Fast enough for the tests (tests/release/test_doc_tables.py runs it with --check); the README shows its
numbers beside the command, so a reader can run the same and compare. Run from the repository root:
``python docs/scripts/quickstart_table.py`` (rewrites the README) or ``... --check``.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))

import doc_tables  # noqa: E402

#: the rounds of the shortened run (the README's command says the same)
ROUNDS = 12


def rows() -> list[list[str]]:
    """One row per aggregator of the quickstart: final accuracy, ASR and the attackers' / honest weights."""
    import torch

    from fl_lightning.fit_config import fit_parser, run_fit
    from fl_lightning.shipped import recipe_path

    torch.set_num_threads(1)
    parser = fit_parser()
    with tempfile.TemporaryDirectory() as save_dir:
        cfg = parser.parse_args(["--config", str(recipe_path("quickstart")), "--trainer.rounds", str(ROUNDS),
                                 "--save_dir", save_dir, "--trainer.logger", "false",
                                 "--trainer.enable_progress_bar", "false"])
        summaries = run_fit(cfg, parser, quiet=True)
    return [[s.name, _fmt(s.final["test/acc"]), _fmt(s.final["attack/asr"]),
             f"{_fmt(s.weight_attackers_mean, 4)} / {_fmt(s.weight_honest_mean, 4)}"] for s in summaries]


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN: no round had an attacker


HEADER = ["rule", f"acc after {ROUNDS} rounds", "ASR", "w attackers / honest"]

if __name__ == "__main__":
    raise SystemExit(doc_tables.main("quickstart-short", HEADER, rows(), doc=doc_tables.README, argv=sys.argv[1:]))
