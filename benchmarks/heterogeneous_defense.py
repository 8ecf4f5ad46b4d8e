"""The quickstart (MNIST5k two-digit shards, label flip 1 -> 7, seed 0) with each lever stack, with and without
the attack: late accuracy and late ASR per run, one JSON line each (appended to ``--out``).

    OMP_NUM_THREADS=1 python benchmarks/heterogeneous_defense.py --stacks fedavg rr_nnm_cm_sm --out frontier.jsonl

A stack is a list of overrides of ``recipes/quickstart.yaml`` (:data:`STACKS`); ``--rounds`` shortens the runs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"

RR = '{"class_path": "fl_lightning.aggregators.ResidualReweight", "init_args": {"lambda_": 2.0, "thresh": 0.1}}'
NNM_RR = ('{"class_path": "fl_lightning.aggregators.NNM", "init_args": {"f": 2, "inner": ' + RR + '}}')
TM = '{"class_path": "fl_lightning.aggregators.TrimmedMean", "init_args": {"f": 2}}'
NNM_TM = ('{"class_path": "fl_lightning.aggregators.NNM", "init_args": {"f": 2, "inner": ' + TM + '}}')
RR_L = '{"class_path": "fl_lightning.aggregators.ResidualReweight", "init_args": {"lambda_": %s, "thresh": 0.1}}'
NNM_RR_L = ('{"class_path": "fl_lightning.aggregators.NNM", "init_args": {"f": 2, "inner": ' + RR_L + '}}')
NNM1_RR = ('{"class_path": "fl_lightning.aggregators.NNM", "init_args": {"f": 1, "inner": ' + RR + '}}')
CM = '{"class_path": "fl_lightning.aggregators.CoordinateMedian"}'
NNM_CM = ('{"class_path": "fl_lightning.aggregators.NNM", "init_args": {"f": 2, "inner": ' + CM + '}}')
CC = '{"class_path": "fl_lightning.aggregators.CenteredClipping"}'
FEDAVG = '{"class_path": "fl_lightning.aggregators.FedAvg"}'
SGD_M = '{"class_path": "torch.optim.SGD", "init_args": {"lr": 1.0, "momentum": 0.9}}'
SGD_M5 = '{"class_path": "torch.optim.SGD", "init_args": {"lr": 1.0, "momentum": 0.5}}'
SGD_LR15 = '{"class_path": "torch.optim.SGD", "init_args": {"lr": 1.5}}'
CC_NNM = ('{"class_path": "fl_lightning.aggregators.NNM", "init_args": {"f": 2, "inner": ' + CC + '}}')
SGD_M7 = '{"class_path": "torch.optim.SGD", "init_args": {"lr": 1.0, "momentum": 0.7}}'

#: stack name -> (aggregator, extra overrides)
STACKS: dict[str, tuple[str, list[str]]] = {
    "fedavg": (FEDAVG, []),
    "rr": (RR, []),
    "rr_cm": (RR, ["--trainer.client_momentum", "0.9"]),
    "rr_nnm": (NNM_RR, []),
    "rr_nnm1": (NNM1_RR, []),
    "rr_nnm_l3": (NNM_RR_L % 3.0, []),
    "rr_nnm_l5": (NNM_RR_L % 5.0, []),
    "rr_nnm_cm": (NNM_RR, ["--trainer.client_momentum", "0.9"]),
    "rr_nnm_cm_sm": (NNM_RR, ["--trainer.client_momentum", "0.9", "--trainer.server_optimizer", SGD_M]),
    "rr_cm_sm": (RR, ["--trainer.client_momentum", "0.9", "--trainer.server_optimizer", SGD_M]),
    "rr_sm": (RR, ["--trainer.server_optimizer", SGD_M]),
    "rr_sm5": (RR, ["--trainer.server_optimizer", SGD_M5]),
    "rr_nnm_sm": (NNM_RR, ["--trainer.server_optimizer", SGD_M]),
    "rr_nnm_sm5": (NNM_RR, ["--trainer.server_optimizer", SGD_M5]),
    "rr_nnm_sm7": (NNM_RR, ["--trainer.server_optimizer", SGD_M7]),
    "fedavg_sm5": (FEDAVG, ["--trainer.server_optimizer", SGD_M5]),
    "rr_nnm_cm5": (NNM_RR, ["--trainer.client_momentum", "0.5"]),
    "rr_prox": (RR, ["--trainer.proximal_mu", "0.01"]),
    "rr_nnm_prox": (NNM_RR, ["--trainer.proximal_mu", "0.01"]),
    "tm_nnm_cm": (NNM_TM, ["--trainer.client_momentum", "0.9"]),
    "tm_nnm_cm_sm": (NNM_TM, ["--trainer.client_momentum", "0.9", "--trainer.server_optimizer", SGD_M]),
    "cm_nnm_cm": (NNM_CM, ["--trainer.client_momentum", "0.9"]),
    "cc_cm": (CC, ["--trainer.client_momentum", "0.9"]),
    "cc_cm_sm": (CC, ["--trainer.client_momentum", "0.9", "--trainer.server_optimizer", SGD_M]),
    "cc": (CC, []),
    "tm_nnm": (NNM_TM, []),
    "cm_nnm": (NNM_CM, []),
    "cc_nnm": (CC_NNM, []),
    "rr_nnm_lr15": (NNM_RR, ["--trainer.server_optimizer", SGD_LR15]),
    "fedavg_cm": (FEDAVG, ["--trainer.client_momentum", "0.9"]),
    "fedavg_sm": (FEDAVG, ["--trainer.server_optimizer", SGD_M]),
}


#: how the docs' tables name a stack
LABELS: dict[str, str] = {
    "fedavg": "FedAvg",
    "rr": "ResidualReweight (RR)",
    "rr_nnm": "NNM(f=2) + RR",
    "rr_nnm1": "NNM(f=1) + RR",
    "rr_nnm_l3": "NNM + RR(lambda=3)",
    "rr_nnm_l5": "NNM + RR(lambda=5)",
    "rr_nnm_prox": "NNM + RR, FedProx mu=0.01",
    "rr_nnm_sm5": "NNM + RR, server SGD(lr=1, momentum=0.5)",
    "rr_nnm_sm7": "NNM + RR, server momentum 0.7",
    "rr_nnm_sm": "NNM + RR, server momentum 0.9",
    "rr_nnm_cm_sm": "NNM + RR, client momentum 0.9 + server momentum 0.9",
    "rr_nnm_cm": "NNM + RR, client momentum 0.9",
    "fedavg_sm5": "FedAvgM: FedAvg, server SGD(lr=1, momentum=0.5)",
    "rr_nnm_lr15": "NNM + RR, server SGD(lr=1.5)",
    "tm_nnm": "NNM + TrimmedMean(f=2)",
    "cm_nnm": "NNM + CoordinateMedian",
    "cc_nnm": "NNM + CenteredClipping",
    "cc": "CenteredClipping",
}


def label(stack: str) -> str:
    """The stack's name in the docs' tables."""
    return LABELS.get(stack, stack)


def run(stack: str, attack: bool, rounds: int | None, seed: int = 0) -> dict:
    """Fit the quickstart with ``stack`` (and the flip if ``attack``); its late means as a flat dict."""
    sys.path.insert(0, str(ROOT))
    from fl_lightning.fit_config import fit_parser, fit_one
    from fl_lightning.run_summary import RunSummary

    aggregator, extra = STACKS[stack]
    args = ["--config", str(RECIPE), "--trainer.aggregator", aggregator, "--trainer.logger", "false",
            "--trainer.checkpoint_every", "0", "--trainer.enable_progress_bar", "false", *extra]
    if not attack:
        args += ["--trainer.attacks", "[]"]
    if rounds is not None:
        args += ["--trainer.rounds", str(rounds)]
    args += ["--trainer.seed", str(seed)]
    parser = fit_parser()
    cfg = parser.parse_args(args)
    cfg.aggregators = None
    cfg.save_dir = "/tmp/fl_hetero_runs"
    started = time.perf_counter()
    trainer = fit_one(cfg, parser, run_name=f"{stack}-{'flip' if attack else 'clean'}-{time.time_ns()}", quiet=True)
    summary = RunSummary.from_trainer(stack, trainer)
    return {"stack": stack, "attack": "label_flip" if attack else "none", "seed": seed, "rounds": summary.rounds,
            "late_acc": summary.late_mean.get("test/acc"), "late_asr": summary.late_mean.get("attack/asr"),
            "final_acc": summary.final.get("test/acc"), "seconds": round(time.perf_counter() - started, 1),
            "w_attackers": summary.weight_attackers_mean, "w_honest": summary.weight_honest_mean}


def plot(lines: Path, path: Path) -> Path:
    """No-attack late accuracy against late accuracy under the flip, one point per stack, Pareto front marked."""
    sys.path.insert(0, str(ROOT))
    from fl_lightning.sweeps.frontier import Stack, draw, pareto_front

    runs: dict[str, dict[str, float]] = {}
    for line in lines.read_text().splitlines():
        record = json.loads(line)
        if record.get("seed", 0) != 0:           # the figure is the quickstart's seed
            continue
        runs.setdefault(record["stack"], {})[record["attack"]] = record["late_acc"]
    stacks = [Stack(name, r["none"], r["label_flip"], "label_flip") for name, r in runs.items()
              if "none" in r and "label_flip" in r]
    pareto_front(stacks)
    return draw(path, stacks, "classes (quickstart, seed 0)", {"heatmap": {"figures": "partition"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plot", type=Path, default=None, help="draw the frontier of --out's runs into this PNG")
    parser.add_argument("--stacks", nargs="+", default=["fedavg"], choices=sorted(STACKS))
    parser.add_argument("--attack", choices=["both", "flip", "none"], default="both")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="the quickstart's seed is 0")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.plot is not None:
        print(plot(args.out, args.plot))
        return
    attacks = {"both": [False, True], "flip": [True], "none": [False]}[args.attack]
    for seed in args.seeds:
        for stack in args.stacks:
            for attack in attacks:
                line = json.dumps(run(stack, attack, args.rounds, seed))
                print(line, flush=True)
                if args.out is not None:
                    with args.out.open("a") as file:
                        file.write(line + "\n")


if __name__ == "__main__":
    main()
