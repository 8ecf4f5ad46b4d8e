"""Flower replies are validated as data, and deployments fail loudly (issue 20, items 9 and 10): counts are
integers within a cap, arrays have the model's dtype, one reply per sampled node, impossible minimums and
FLTrust are refused at construction, waiting for nodes and rounds too small to single out an attacker warn."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from flwr.app import Array, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fl_lightning.aggregators import CoordinateMedian, FedAvg, FLTrust, Krum, ResidualReweight
from fl_lightning.integrations.flower import RobustStrategy, node_weights
from tests.integrations.test_flower import (SHAPES, _aggregate, _deltas, _FakeGrid, _instruction, _local, _model,
                                            _reply, serverapp_identity)

__all__ = ["serverapp_identity"]  # the autouse fixture the Message API needs


def _messages(caught) -> list[str]:
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("count", [1e39, 1e18, 2.5, 0, -3, float("nan"), float("inf"), [10]])
def test_sample_counts_must_be_integers_within_the_cap(count) -> None:
    model, deltas = _model(), _deltas(5, seed=2)
    replies = [_reply(n, model, deltas[n - 1], 10) for n in range(1, 5)] + [_reply(5, model, deltas[0], count)]
    with pytest.warns(RuntimeWarning, match=r"node 5 is dropped: .*'num-examples' is .*expected an integer count "
                                            r"in \[1, 1000000000\]"):
        arrays, metrics = _aggregate(RobustStrategy(CoordinateMedian()), 1, model, replies)
    assert arrays is not None and metrics["num-clients"] == 4 and metrics["num-dropped"] == 1


def test_the_cap_is_the_strategys_and_integral_floats_are_counts() -> None:
    model, deltas = _model(), _deltas(4, seed=2)
    replies = [_reply(1, model, deltas[0], 7.0), _reply(2, model, deltas[1], 10), _reply(3, model, deltas[2], 11)]
    with pytest.warns(RuntimeWarning, match=r"node 3 is dropped: .*\[1, 10\] \(max_num_examples\)"):
        _, metrics = _aggregate(RobustStrategy(FedAvg(), max_num_examples=10), 1, model, replies)
    assert metrics["node-ids"] == [1, 2] and metrics["client-weights"] == pytest.approx([7 / 17, 10 / 17])


@pytest.mark.parametrize("dtype,value", [(np.int64, 1), (np.float16, 0.5), (np.float64, 1e300)])
def test_arrays_of_another_dtype_are_dropped_and_counted(dtype, value) -> None:
    model, deltas = _model(), _deltas(4, seed=3)
    replies = [_reply(n, model, deltas[n - 1], 10) for n in range(1, 4)]
    odd = _local(model, deltas[3])
    odd["fc1.weight"] = Array(np.full(SHAPES["fc1.weight"], value, dtype=dtype))
    replies.append(Message(RecordDict({"arrays": odd, "metrics": MetricRecord({"num-examples": 10})}),
                           reply_to=_instruction(4, model)))
    with pytest.warns(RuntimeWarning, match=rf"node 4 is dropped: its array 'fc1.weight' is {np.dtype(dtype)}, "
                                            r"the global model's is float32"):
        _, metrics = _aggregate(RobustStrategy(CoordinateMedian()), 1, model, replies)
    assert metrics["num-dropped"] == 1 and metrics["node-ids"] == [1, 2, 3]


def test_one_reply_per_sampled_node() -> None:
    model, deltas = _model(), _deltas(5, seed=5)
    strategy = RobustStrategy(CoordinateMedian())
    strategy.configure_train(1, model, ConfigRecord(), _FakeGrid([1, 2, 3, 4]))
    replies = [_reply(n, model, deltas[n - 1], 10) for n in (1, 2, 3, 4)]
    replies += [_reply(2, model, deltas[4], 10), _reply(99, model, deltas[4], 10)]
    with pytest.warns(RuntimeWarning) as caught:
        _, metrics = strategy.aggregate_train(1, replies)
    assert _messages(caught) == ["round 1: node 2 is dropped: it already replied this round (one reply per node)",
                                 "round 1: node 99 is dropped: it was not sampled this round"]
    assert metrics["node-ids"] == [1, 2, 3, 4] and metrics["num-dropped"] == 2
    assert 99 not in strategy.client_index


def test_an_error_signed_by_the_superlink_names_the_node_that_died() -> None:
    model, deltas = _model(), _deltas(4, seed=6)
    strategy = RobustStrategy(CoordinateMedian())
    sent = list(strategy.configure_train(1, model, ConfigRecord(), _FakeGrid([11, 12, 13, 14])))
    for message in sent:  # what a grid does when it pushes them
        message.metadata.__dict__["_message_id"] = message.object_id
    replies = [Message(RecordDict({"arrays": _local(model, deltas[i]), "metrics": MetricRecord({"num-examples": 5})}),
                       reply_to=m) for i, m in enumerate(sent[:3])]
    lost = Message(Error(code=5, reason="node unavailable"), reply_to=sent[3])
    lost.metadata.__dict__["_src_node_id"] = 1  # the SuperLink answers for a dead SuperNode
    with pytest.warns(RuntimeWarning, match=r"^round 1: node 14 is dropped: its reply is an error"):
        _, metrics = strategy.aggregate_train(1, [*replies, lost])
    assert metrics["node-ids"] == [11, 12, 13] and metrics["num-dropped"] == 1


@pytest.mark.parametrize("make,kwargs,match", [
    (lambda: Krum(f=1), dict(min_available_nodes=3),
     r"min_available_nodes=3 is below min_train_nodes=5 \(Krum needs 5\): each round would wait for 5 nodes"),
    (lambda: Krum(f=1), dict(num_clients=4), r"min_train_nodes=5 exceeds num_clients=4"),
    (CoordinateMedian, dict(min_available_nodes=2, min_evaluate_nodes=3), r"min_evaluate_nodes=3"),
    (lambda: FLTrust(), {}, r"FLTrust needs a server-side root data set \(root_samples=100\)"),
])
def test_impossible_settings_are_refused_at_construction(make, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        RobustStrategy(make(), **kwargs)


def test_the_legacy_strategy_refuses_fltrust_too() -> None:
    from fl_lightning.integrations.flower import LegacyRobustStrategy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match=r"LegacyRobustStrategy: FLTrust needs a server-side root data set"):
            LegacyRobustStrategy(FLTrust())


def test_evaluation_minimums_do_not_matter_when_evaluation_is_off() -> None:
    RobustStrategy(CoordinateMedian(), min_available_nodes=3, min_evaluate_nodes=5, fraction_evaluate=0.0)


def test_waiting_for_nodes_warns() -> None:
    class Joining(_FakeGrid):
        calls = 0

        def get_node_ids(self):
            type(self).calls += 1
            return self.nodes[:2] if self.calls < 3 else self.nodes

    strategy = RobustStrategy(CoordinateMedian(), min_available_nodes=4)
    strategy.poll_interval_s = 0.0
    with pytest.warns(RuntimeWarning, match=r"round 1: waiting for 4 connected nodes to sample for train, 2 "
                                            r"connected \(min_available_nodes=4"):
        messages = strategy.configure_train(1, _model(), ConfigRecord(), Joining([1, 2, 3, 4]))
    assert len(list(messages)) == 4


def test_rounds_too_small_to_single_out_an_attacker_warn_and_count_in_the_result() -> None:
    model = _model()
    deltas = _deltas(4, seed=7)

    def client(node: int, message: Message):
        if node == 4 and message.content["config"]["server-round"] >= 2:
            return Error(code=5, reason="node unavailable")  # a SuperNode crashed after round 1
        return RecordDict({"arrays": _local(message.content["arrays"], deltas[node - 1]),
                           "metrics": MetricRecord({"num-examples": 10})})

    strategy = RobustStrategy(ResidualReweight(), fraction_evaluate=0.0, min_available_nodes=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = strategy.start(_FakeGrid([1, 2, 3, 4], client), model, num_rounds=3)
    per_round = {r: m["rounds-below-robust-minimum"] for r, m in result.train_metrics_clientapp.items()}
    assert per_round == {1: 0, 2: 1, 3: 2}
    below = [m for m in _messages(caught) if "fewer than the 4 ResidualReweight needs to single out" in m]
    assert [m.split(":")[0] for m in below] == ["round 2", "round 3"]
    assert strategy.state_dict()["rounds_below_robust_minimum"] == 2


def _every_rule() -> list:
    """Every aggregator the library exports that a Flower strategy takes (wrappers around the median)."""
    import inspect

    import fl_lightning.aggregators as rules

    out = []
    for name in rules.__all__:
        cls = getattr(rules, name)
        if not inspect.isclass(cls) or not issubclass(cls, rules.Aggregator) or cls in (rules.Aggregator, FLTrust):
            continue
        needs_inner = "inner" in inspect.signature(cls).parameters
        if needs_inner and inspect.signature(cls).parameters["inner"].default is inspect.Parameter.empty:
            if cls.__name__ == "PreAggregator":
                continue  # the abstract base of the wrappers
            out.append(pytest.param(lambda cls=cls: cls(CoordinateMedian()), id=name))
        else:
            out.append(pytest.param(cls, id=name))
    return out


@pytest.mark.parametrize("make", _every_rule())
def test_the_docs_on_aggregate_example_works_for_every_rule(make) -> None:
    seen = []
    model, deltas = _model(), _deltas(8, seed=8)
    strategy = RobustStrategy(make(), on_aggregate=lambda rnd, node_ids, result: seen.append(
        (rnd, node_weights(node_ids, result))))
    replies = [_reply(n, model, deltas[n - 1], 10) for n in range(1, 9)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _aggregate(strategy, 1, model, replies)
    ((rnd, weights),) = seen
    assert rnd == 1 and list(weights) == list(range(1, 9))
    values = list(weights.values())
    assert all(v is None for v in values) or sum(values) == pytest.approx(1.0)
