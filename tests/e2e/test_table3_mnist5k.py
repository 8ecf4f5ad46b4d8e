"""Paper Table 3 (naive pixel backdoor) at MNIST5k, one seed: the table must tell FedAvg from residual reweighting.

Runs the recipe's own profile through ``fl-lightning sweep`` (two points, tens of minutes on one core),
so it checks the recipe a reader runs, not a copy of it. REPRODUCTION.md reports the three-seed sweep.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fl_lightning.cli import main

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "backdoor_mnist_naive.yaml"
#: honest clients at the paper's passes over their data, the attacker at the paper's 300 steps a round
PROFILE = "mnist5k-passes"
#: the least FedAvg's late backdoor success rate must exceed residual reweighting's by
MARGIN = 0.5


@pytest.mark.slow
def test_fedavg_takes_the_backdoor_and_residual_reweighting_does_not(tmp_path: Path) -> None:
    main(["sweep", "--config", str(RECIPE), "--profile", PROFILE, "--set", f"[save_dir={tmp_path}]",
          "--only", "[FedAvg-seed=0, ResidualReweight-seed=0]"])
    late = {}
    for rule in ("FedAvg", "ResidualReweight"):
        (summary,) = tmp_path.glob(f"*/{rule}-seed=0/summary.json")
        late[rule] = json.loads(summary.read_text())["late_mean"]
    assert late["FedAvg"]["attack/backdoor_asr"] >= late["ResidualReweight"]["attack/backdoor_asr"] + MARGIN, late
    # the backdoor was learned: the attacker's own model obeys the trigger, whatever the rule does with it
    assert late["ResidualReweight"]["attack/local_backdoor_asr"] > 0.5, late
    assert late["ResidualReweight"]["test/acc"] >= 0.85, late
