"""ServerApp: fl_lightning's RobustStrategy(ResidualReweight()) on Flower's Message API."""
from __future__ import annotations

import json

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fl_lightning.aggregators import ResidualReweight
from fl_lightning.integrations.flower import RobustStrategy
from robust_demo.task import make_model

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the rounds, then write every round's diagnostics (node ids, client weights, flagged) as JSON."""
    strategy = RobustStrategy(ResidualReweight(), min_available_nodes=3, fraction_evaluate=1.0,
                              min_evaluate_nodes=3)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(make_model().state_dict()),
                            num_rounds=int(context.run_config["num-server-rounds"]),
                            train_config=ConfigRecord({"lr": float(context.run_config["lr"])}))
    path = str(context.run_config["diagnostics-file"])
    if path:
        rounds = {r: dict(metrics) for r, metrics in result.train_metrics_clientapp.items()}
        evaluation = {r: dict(metrics) for r, metrics in result.evaluate_metrics_clientapp.items()}
        with open(path, "w") as f:
            json.dump({"train": rounds, "evaluate": evaluation}, f)
