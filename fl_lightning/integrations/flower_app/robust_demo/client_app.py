"""ClientApp: a few SGD steps on the local partition; a Byzantine SuperNode replies with large noise instead."""
from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from robust_demo.task import make_model, partition

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train from the global model; `byzantine=true` in the node config turns this node into an attacker."""
    model = make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = partition(int(context.node_config["partition-id"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=float(context.run_config["lr"]))
    for _ in range(int(context.run_config["local-steps"])):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
    state = model.state_dict()
    if str(context.node_config.get("byzantine", False)).lower() == "true":  # a string or a TOML bool
        g = torch.Generator().manual_seed(int(msg.content["config"]["server-round"]))
        state = {k: v + 50.0 * torch.randn(v.shape, generator=g) for k, v in state.items()}
    content = RecordDict({"arrays": ArrayRecord(state),
                          "metrics": MetricRecord({"train-loss": float(loss), "num-examples": len(x)})})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global model's loss on the local partition."""
    model = make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = partition(int(context.node_config["partition-id"]))
    with torch.no_grad():
        loss = torch.nn.functional.mse_loss(model(x), y)
    return Message(content=RecordDict({"metrics": MetricRecord({"eval-loss": float(loss), "num-examples": len(x)})}),
                   reply_to=msg)
