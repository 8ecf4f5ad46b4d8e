"""RobustStrategy on Flower's Message API: the direct aggregate, memory across rounds, bad replies dropped, start()."""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Iterable

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl_lightning.aggregators import CoordinateMedian, FedAvg, FoolsGold, Krum, ResidualReweight
from fl_lightning.context import RoundContext
from fl_lightning.integrations import LegacyRobustStrategy as LazyLegacy
from fl_lightning.integrations import RobustStrategy as LazyRobust
from fl_lightning.integrations.flower import LegacyRobustStrategy, RobustStrategy
from fl_lightning.param_layout import ParamLayout

SHAPES = {"fc1.weight": (6, 5), "fc1.bias": (6,), "fc2.weight": (3, 6), "fc2.bias": (3,)}
KEYS = [*SHAPES, "bn.num_batches_tracked"]
N = sum(int(np.prod(s)) for s in SHAPES.values())
# Flower node ids are unsigned 64-bit: some above 2**63 on purpose
NODES = [2**64 - 5, 17, 9_000_000_000_000_000_001, 4, 2**63 + 11, 123456789]


@pytest.fixture(autouse=True)
def serverapp_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages read the run / task / node of the process, which a ServerApp process sets at start-up."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def _model(seed: int = 0) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    arrays = {k: Array(rng.normal(size=s).astype(np.float32)) for k, s in SHAPES.items()}
    arrays["bn.num_batches_tracked"] = Array(np.array(7, dtype=np.int64))  # an integer array
    return ArrayRecord(arrays)


def _deltas(k: int, seed: int) -> np.ndarray:
    """``[K, N]`` honest client steps, the last client an outlier."""
    rng = np.random.default_rng(seed)
    deltas = rng.normal(scale=0.01, size=(k, N)).astype(np.float32) + 0.02
    deltas[-1] = 5.0
    return deltas


def _instruction(node: int, model: ArrayRecord, message_type: str = MessageType.TRAIN) -> Message:
    return Message(RecordDict({"arrays": model, "config": ConfigRecord()}), dst_node_id=node,
                   message_type=message_type)


def _local(model: ArrayRecord, delta: np.ndarray) -> ArrayRecord:
    """``global + delta`` on the float arrays; a client's integer state differs (it must be ignored)."""
    arrays, offset = {}, 0
    for key in model.keys():
        array = model[key].numpy()
        if np.issubdtype(array.dtype, np.floating):
            arrays[key] = Array(array + delta[offset:offset + array.size].reshape(array.shape))
            offset += array.size
        else:
            arrays[key] = Array(np.asarray(array + 100))
    return ArrayRecord(arrays)


def _reply(node: int, model: ArrayRecord, delta: np.ndarray, num_examples: float, **metrics: float) -> Message:
    content = RecordDict({"arrays": _local(model, delta),
                          "metrics": MetricRecord({"num-examples": num_examples, **metrics})})
    return Message(content, reply_to=_instruction(node, model))


def _direct(aggregator, model: ArrayRecord, deltas: np.ndarray, ids: list[int], num_examples: list[float],
            server_round: int):
    """The aggregator called by hand on ``local - global`` (as sent, so rounded) and the same context."""
    layout = ParamLayout.from_shapes(list(SHAPES), list(SHAPES.values()))
    flat = torch.cat([torch.from_numpy(model[k].numpy().reshape(-1)) for k in SHAPES])
    ctx = RoundContext(round=server_round, client_ids=ids, num_samples=torch.tensor(num_examples, dtype=torch.float32),
                       layout=layout, global_params=flat, num_clients=len(ids))
    result = aggregator.aggregate((flat + torch.from_numpy(deltas)) - flat, ctx)
    new = {k: (model[k].numpy().reshape(-1) + result.update[s.slice].numpy()).reshape(SHAPES[k])
           for k, s in zip(SHAPES, layout.params)}
    return new, result


def _aggregate(strategy: RobustStrategy, server_round: int, model: ArrayRecord, replies: list[Message]):
    strategy.configure_train(server_round, model, ConfigRecord(), _FakeGrid(sorted(r.metadata.src_node_id
                                                                                   for r in replies)))
    return strategy.aggregate_train(server_round, replies)


class _FakeGrid(Grid):
    """A Grid whose nodes are local functions: ``client(node, message) -> reply content or Error``."""

    def __init__(self, nodes: list[int], client: Callable[[int, Message], RecordDict | Error] | None = None) -> None:
        self.nodes, self.client, self.sent = list(nodes), client, []

    def set_run(self, run) -> None:  # type: ignore[no-untyped-def]
        raise NotImplementedError

    @property
    def run(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        self.sent.append(messages)
        replies = []
        for message in messages:
            answer = self.client(message.metadata.dst_node_id, message)
            replies.append(Message(answer, reply_to=message) if isinstance(answer, RecordDict)
                           else Message(answer, reply_to=message))
        return replies


@pytest.mark.parametrize("make", [FedAvg, ResidualReweight, CoordinateMedian, lambda: Krum(f=1)],
                         ids=["fedavg", "residual_reweight", "median", "krum"])
def test_same_aggregate_as_the_aggregator_called_directly(make) -> None:
    model, deltas = _model(), _deltas(6, seed=1)
    num_examples = [30, 10, 20, 25, 15, 40]
    seen = []
    strategy = RobustStrategy(make(), on_aggregate=lambda r, nodes, res: seen.append((r, nodes, res)))
    assert isinstance(strategy, Strategy)
    replies = [_reply(n, model, d, w) for n, d, w in zip(NODES, deltas, num_examples)]
    arrays, metrics = _aggregate(strategy, 1, model, replies)

    order = sorted(range(6), key=lambda i: NODES[i])  # rows are ordered by node id
    want, result = _direct(make(), model, deltas[order], list(range(6)), [num_examples[i] for i in order], 1)
    assert list(arrays.keys()) == KEYS
    for key in SHAPES:
        have = arrays[key].numpy()
        assert have.dtype == np.float32 and have.shape == SHAPES[key]
        np.testing.assert_array_equal(have, want[key])
    np.testing.assert_array_equal(arrays["bn.num_batches_tracked"].numpy(), np.array(7))  # the global's
    sorted_nodes = sorted(NODES)
    assert strategy.client_index == {node: i for i, node in enumerate(sorted_nodes)}
    assert [(r, nodes) for r, nodes, _ in seen] == [(1, sorted_nodes)]
    assert metrics["node-ids"] == sorted_nodes
    assert metrics["num-clients"] == 6 and metrics["num-dropped"] == 0
    if result.client_weights is None:  # e.g. the coordinate median weighs no client as a whole
        assert "client-weights" not in metrics
    else:
        np.testing.assert_allclose(metrics["client-weights"], result.client_weights.double().numpy(), rtol=1e-12)
    flagged = result.diagnostics.get("flagged")
    if flagged is not None:
        assert metrics["num-flagged"] == int(flagged.sum())
        assert metrics["flagged-node-ids"] == [n for n, f in zip(sorted_nodes, flagged.tolist()) if f]
    MetricRecord.inflate(metrics.deflate())  # every value survives Flower's wire format


def test_a_byzantine_node_is_down_weighted() -> None:
    model, deltas = _model(), _deltas(5, seed=2)  # the last node sends +5.0 everywhere
    nodes = [11, 22, 33, 44, 55]
    _, metrics = _aggregate(RobustStrategy(ResidualReweight()), 1, model,
                            [_reply(n, model, d, 10) for n, d in zip(nodes, deltas)])
    weights = dict(zip(metrics["node-ids"], metrics["client-weights"]))
    assert weights[55] < 0.1 * min(weights[n] for n in nodes[:4])
    assert 55 in metrics["flagged-node-ids"]


def test_failed_malformed_and_non_finite_replies_are_dropped_and_the_round_goes_on() -> None:
    model, deltas = _model(), _deltas(4, seed=3)
    good = [_reply(n, model, d, 10, loss=float(n)) for n, d in zip([1, 2, 3, 4], deltas)]
    nan = deltas[0].copy()
    nan[3] = float("nan")
    wrong_shape = RecordDict({"arrays": ArrayRecord({k: Array(np.zeros(2, np.float32)) for k in KEYS}),
                              "metrics": MetricRecord({"num-examples": 10})})
    missing_key = RecordDict({"arrays": ArrayRecord({k: model[k] for k in KEYS[:3]}),
                              "metrics": MetricRecord({"num-examples": 10})})
    no_weight = RecordDict({"arrays": _local(model, deltas[0]), "metrics": MetricRecord({"loss": 1.0})})
    bad = [Message(Error(code=1, reason="client crashed"), reply_to=_instruction(90, model)),
           _reply(91, model, nan, 10),
           Message(wrong_shape, reply_to=_instruction(92, model)),
           Message(missing_key, reply_to=_instruction(93, model)),
           Message(no_weight, reply_to=_instruction(94, model)),
           _reply(95, model, deltas[0], float("inf"))]
    strategy = RobustStrategy(FedAvg())
    with pytest.warns(RuntimeWarning) as caught:
        arrays, metrics = _aggregate(strategy, 1, model, good + bad)
    messages = " | ".join(str(w.message) for w in caught)
    for node, why in [(90, "client crashed"), (91, "NaN or Inf"), (92, "has shape"), (93, "has keys"),
                      (94, "'num-examples' is None"), (95, "'num-examples' is inf")]:
        assert f"node {node} is dropped" in messages and why in messages
    want, _ = _direct(FedAvg(), model, deltas, [0, 1, 2, 3], [10] * 4, 1)
    for key in SHAPES:
        np.testing.assert_array_equal(arrays[key].numpy(), want[key])
    assert metrics["num-clients"] == 4 and metrics["num-dropped"] == 6 and metrics["node-ids"] == [1, 2, 3, 4]
    assert metrics["loss"] == pytest.approx(2.5)  # the clients' own metrics, averaged over the accepted ones
    assert set(strategy.client_index) == {1, 2, 3, 4}  # dropped nodes get no client id


def test_too_few_usable_replies_keep_the_previous_model() -> None:
    model, deltas = _model(), _deltas(3, seed=4)
    replies = [_reply(1, model, deltas[0], 5), _reply(2, model, deltas[1], 5),
               Message(Error(code=1, reason="lost"), reply_to=_instruction(3, model))]
    with pytest.warns(RuntimeWarning) as caught:
        arrays, metrics = _aggregate(RobustStrategy(ResidualReweight()), 1, model, replies)
    assert [str(w.message) for w in caught] == [
        "round 1: node 3 is dropped: its reply is an error (lost)",
        "round 1: 2 usable replies, but ResidualReweight needs 3; keeping the previous global model"]
    assert arrays is None and metrics["num-dropped"] == 1


def test_foolsgold_memory_persists_across_rounds_and_survives_a_restore() -> None:
    """Two sybils look alike only over both rounds: the memory between calls is what catches them."""
    model = _model()
    nodes = [501, 502, 503, 7001, 7002]  # the last two are the sybils
    rng = np.random.default_rng(3)
    round1 = rng.normal(scale=0.05, size=(5, N)).astype(np.float32)
    round2 = rng.normal(scale=0.05, size=(5, N)).astype(np.float32)
    round2[4] = round1[3] + round2[3] - round1[4]  # the sybils' summed histories are identical

    strategy = RobustStrategy(FoolsGold())
    arrays1, _ = _aggregate(strategy, 1, model, [_reply(n, model, d, 10) for n, d in zip(nodes, round1)])
    restored = RobustStrategy(FoolsGold())
    restored.load_state_dict(strategy.state_dict())
    order = [4, 2, 0, 3, 1]  # round 2's replies arrive in another order: the client ids must not move
    replies2 = [_reply(nodes[i], arrays1, round2[i], 10) for i in order]
    _, metrics2 = _aggregate(strategy, 2, arrays1, replies2)
    _, metrics_restored = _aggregate(restored, 2, arrays1, replies2)

    assert strategy.client_index == {n: i for i, n in enumerate(nodes)} == restored.client_index
    assert metrics2["flagged-node-ids"] == [7001, 7002]
    assert metrics_restored["flagged-node-ids"] == [7001, 7002]
    assert metrics_restored["client-weights"] == metrics2["client-weights"]
    fresh = RobustStrategy(FoolsGold())  # no memory: round 2 alone does not flag both sybils
    _, metrics_fresh = _aggregate(fresh, 2, arrays1, replies2)
    assert metrics_fresh.get("flagged-node-ids") != [7001, 7002]


def test_start_runs_rounds_with_sampling_config_evaluation_and_diagnostics_in_the_result() -> None:
    nodes = [10, 20, 30, 40, 50, 60]
    byzantine = 60
    configs: list[tuple[int, int, str]] = []

    def client(node: int, message: Message) -> RecordDict | Error:
        arrays, config = message.content["arrays"], message.content["config"]
        configs.append((node, int(config["server-round"]), message.metadata.message_type))
        if message.metadata.message_type == MessageType.EVALUATE:
            return RecordDict({"metrics": MetricRecord({"num-examples": node, "acc": float(node)})})
        if node == 30:
            return Error(code=1, reason="out of memory")
        step = 100.0 if node == byzantine else float(config["lr"])
        return RecordDict({"arrays": _local(arrays, np.full(N, step, np.float32)),
                           "metrics": MetricRecord({"num-examples": 10})})

    grid = _FakeGrid(nodes, client)
    evaluated = []
    strategy = RobustStrategy(CoordinateMedian(), fraction_train=1.0, fraction_evaluate=0.5, min_evaluate_nodes=2)
    with pytest.warns(RuntimeWarning, match="node 30 is dropped: its reply is an error \\(out of memory\\)"):
        result = strategy.start(grid, _model(), num_rounds=2, train_config=ConfigRecord({"lr": 0.5}),
                                evaluate_fn=lambda r, arrays: evaluated.append(r) or MetricRecord({"r": r}))
    start = _model()
    for key in SHAPES:  # two rounds of the honest step, the 100.0 node and the failed node ignored
        np.testing.assert_allclose(result.arrays[key].numpy(), start[key].numpy() + 1.0, rtol=0, atol=1e-5)
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    for metrics in result.train_metrics_clientapp.values():
        assert metrics["node-ids"] == [10, 20, 40, 50, 60] and metrics["num-dropped"] == 1
    assert evaluated == [0, 1, 2] and result.evaluate_metrics_serverapp[2]["r"] == 2
    evaluate_calls = [(n, r) for n, r, kind in configs if kind == MessageType.EVALUATE]
    assert len(evaluate_calls) == 6 and {r for _, r in evaluate_calls} == {1, 2}  # half of 6 nodes, each round
    assert 10 <= result.evaluate_metrics_clientapp[1]["acc"] <= 60
    assert [m.metadata.dst_node_id for m in grid.sent[0]] == nodes  # fraction 1.0: every node trains


def test_sampling_follows_the_seed() -> None:
    grid = _FakeGrid(list(range(100, 120)))
    strategy = RobustStrategy(FedAvg(), fraction_train=0.25, seed=7)
    picks = [[m.metadata.dst_node_id for m in strategy.configure_train(r, _model(), ConfigRecord(), grid)]
             for r in (1, 2)]
    again = [[m.metadata.dst_node_id for m in RobustStrategy(FedAvg(), fraction_train=0.25, seed=7)
              .configure_train(r, _model(), ConfigRecord(), grid)] for r in (1, 2)]
    assert picks == again and len(picks[0]) == 5 and picks[0] != picks[1]
    off = RobustStrategy(FedAvg(), fraction_train=0.0)
    assert off.configure_train(1, _model(), ConfigRecord(), grid) == []
    assert off.aggregate_train(1, []) == (None, None)  # training switched off: no warning, no metrics


def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="at least 3 clients"):
        RobustStrategy(ResidualReweight(), min_train_nodes=2)
    with pytest.raises(TypeError, match="RobustStrategy: aggregator must be a Aggregator"):
        RobustStrategy("fedavg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RobustStrategy: fraction_train must be"):
        RobustStrategy(FedAvg(), fraction_train=1.5)
    assert RobustStrategy(ResidualReweight()).min_train_nodes == 3
    with pytest.raises(RuntimeError, match="needs the global model it sent"):
        RobustStrategy(FedAvg()).aggregate_train(1, [])


def test_legacy_strategy_is_re_exported_and_deprecated() -> None:
    assert LazyRobust is RobustStrategy and LazyLegacy is LegacyRobustStrategy
    with pytest.warns(DeprecationWarning, match="use fl_lightning.integrations.flower.RobustStrategy"):
        LegacyRobustStrategy(FedAvg())


def test_clear_error_without_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "flwr" or m.startswith("flwr.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "fl_lightning.integrations.flower")
    with pytest.raises(ImportError, match=r"pip install 'fl-lightning\[flower\]'"):
        importlib.import_module("fl_lightning.integrations.flower")
