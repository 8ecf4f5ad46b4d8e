"""Any fl_lightning aggregator as a Flower Message-API ``Strategy`` (``flwr.serverapp.strategy``, Flower >= 1.21).

Flower clients reply with whole models (an ``ArrayRecord``) and a ``MetricRecord`` holding their
weight (``num-examples``). :class:`RobustStrategy` turns the models into the ``[K, N]`` updates
relative to the global model it sent this round (the layout every aggregator here expects),
aggregates them with the given :class:`~fl_lightning.aggregators.Aggregator` and adds the result
to the global model. The aggregator lives as long as the strategy, so rules with memory
(FoolsGold) see every round; Flower's node ids are mapped to stable integer client ids for them.

Replies are validated as data: a reply that carries an error, comes from a node that was not
sampled (or that already replied), or whose records are missing, misshapen, of another dtype than
the global model, non-finite, or whose sample count is not an integer in ``[1, max_num_examples]``,
is dropped with a ``RuntimeWarning`` naming the node and counted in the round's ``num-dropped``;
the round goes on with the others.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

try:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import Strategy
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("RobustStrategy needs Flower >= 1.21: pip install 'fl-lightning[flower]'") from exc

from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.checks import check_fraction, check_instance, check_int, check_optional_int, check_seed
from fl_lightning.context import RoundContext
from fl_lightning.integrations._arrays import flat
from fl_lightning.integrations.flower_legacy import LegacyRobustStrategy
from fl_lightning.param_layout import ParamLayout
from fl_lightning.seeding import numpy_rng

#: ``on_aggregate(server_round, node_ids, result)``: called after every aggregation, rows in ``node_ids`` order
AggregateHook = Callable[[int, list[int], AggregationResult], None]
#: ``(replies' RecordDicts, weighting key) -> MetricRecord``, as Flower's ``*_metrics_aggr_fn``
MetricsAggregation = Callable[[list[RecordDict], str], MetricRecord]

_OWNER = "RobustStrategy"


class RobustStrategy(Strategy):
    """Flower's Message-API strategy with the model aggregation done by an fl_lightning ``aggregator``.

    Args:
        aggregator: any fl_lightning aggregator; the same object serves every round.
        fraction_train, fraction_evaluate: the share of connected nodes sampled per round (at
            least ``min_train_nodes`` / ``min_evaluate_nodes``); 0 skips that phase.
        min_train_nodes: default: what the aggregator needs (at least 2); a smaller value is refused.
        min_evaluate_nodes, min_available_nodes: as in Flower's ``FedAvg``; sampling waits until
            ``min_available_nodes`` nodes are connected.
        weighted_by_key: the ``MetricRecord`` key holding a reply's sample count (``num-examples``).
        arrayrecord_key, configrecord_key: the keys of the records sent to the clients.
        train_metrics_aggr_fn, evaluate_metrics_aggr_fn: reduce the clients' own metrics (default:
            average weighted by ``weighted_by_key``, over the accepted replies).
        on_aggregate: ``(server_round, node_ids, AggregationResult) -> None`` after each aggregation.
        num_clients: the federation's size if known (``RoundContext.num_clients``; default: nodes seen).
        seed: the seed of node sampling and of ``RoundContext.generator`` (randomised aggregators).
        max_num_examples: the largest sample count a reply may claim (default 10**9): counts weigh the
            aggregate, so one node claiming 10**18 would otherwise take all of it. Counts must be
            integers (an ``int``, or a float with an integer value) in ``[1, max_num_examples]``.

    Impossible settings are refused here: ``min_available_nodes`` below the nodes a round must
    sample, more nodes than ``num_clients``, or a rule that needs a server root set (FLTrust).
    While fewer nodes are connected than a round needs, sampling waits and warns (once a round, and
    again every ``wait_warning_interval_s``). A round aggregated with fewer replies than the rule
    needs to single out an attacker (``aggregator.min_robust_clients``) warns, and its train
    ``MetricRecord`` counts it in ``rounds-below-robust-minimum`` (the run's total so far).

    Start it as any Message-API strategy: ``strategy.start(grid, initial_arrays, num_rounds,
    train_config=..., evaluate_fn=...)``. Each round's train ``MetricRecord`` (in the returned
    ``Result.train_metrics_clientapp``) holds the clients' averaged metrics and the aggregation's
    diagnostics: ``node-ids`` and ``client-weights`` (row by row), ``flagged-node-ids``,
    ``num-flagged``, ``num-clients``, ``num-dropped``, ``update-norm`` and every scalar diagnostic.
    Float arrays are aggregated; integer arrays (BatchNorm's ``num_batches_tracked``) keep the
    global model's value.
    """

    #: seconds between two looks at the connected nodes while fewer than needed are connected
    poll_interval_s: float = 1.0
    #: seconds between two warnings while a round waits for nodes to connect
    wait_warning_interval_s: float = 60.0

    def __init__(self, aggregator: Aggregator, *, fraction_train: float = 1.0, fraction_evaluate: float = 1.0,
                 min_train_nodes: int | None = None, min_evaluate_nodes: int = 2,
                 min_available_nodes: int | None = None, weighted_by_key: str = "num-examples",
                 arrayrecord_key: str = "arrays", configrecord_key: str = "config",
                 train_metrics_aggr_fn: MetricsAggregation | None = None,
                 evaluate_metrics_aggr_fn: MetricsAggregation | None = None,
                 on_aggregate: AggregateHook | None = None, num_clients: int | None = None,
                 seed: int = 0, max_num_examples: int = 10**9) -> None:
        check_instance(aggregator, Aggregator, "aggregator", _OWNER,
                       "pass an fl_lightning Aggregator, e.g. ResidualReweight()")
        if aggregator.root_samples > 0:
            raise ValueError(f"{_OWNER}: {type(aggregator).__name__} needs a server-side root data set "
                             f"(root_samples={aggregator.root_samples}) to train a reference update each round, "
                             "which a Flower strategy does not hold; use another rule, or FederatedTrainer")
        self.fraction_train = check_fraction(fraction_train, "fraction_train", _OWNER)
        self.fraction_evaluate = check_fraction(fraction_evaluate, "fraction_evaluate", _OWNER)
        needed = max(2, aggregator.min_clients)
        min_train = needed if min_train_nodes is None else check_int(min_train_nodes, "min_train_nodes", _OWNER, 1)
        aggregator.validate(min_train)
        self.min_train_nodes = min_train
        self.min_evaluate_nodes = check_int(min_evaluate_nodes, "min_evaluate_nodes", _OWNER, 0)
        self.min_available_nodes = check_optional_int(min_available_nodes, "min_available_nodes", _OWNER, 1) or max(
            self.min_train_nodes, self.min_evaluate_nodes)
        self.num_clients = check_optional_int(num_clients, "num_clients", _OWNER, 1)
        self._check_minimums(type(aggregator).__name__, needed)
        self.max_num_examples = check_int(max_num_examples, "max_num_examples", _OWNER, 1)
        for name, value in (("weighted_by_key", weighted_by_key), ("arrayrecord_key", arrayrecord_key),
                            ("configrecord_key", configrecord_key)):
            check_instance(value, str, name, _OWNER)
        self.weighted_by_key, self.arrayrecord_key, self.configrecord_key = (
            weighted_by_key, arrayrecord_key, configrecord_key)
        self.train_metrics_aggr_fn = train_metrics_aggr_fn or weighted_metrics
        self.evaluate_metrics_aggr_fn = evaluate_metrics_aggr_fn or weighted_metrics
        self.aggregator = aggregator
        self.on_aggregate = on_aggregate
        self.seed = check_seed(seed, _OWNER)
        #: Flower node id -> the integer client id aggregators see, in order of first accepted reply
        self.client_index: dict[int, int] = {}
        #: rounds aggregated with fewer replies than the rule needs to single out an attacker
        self.rounds_below_robust_minimum = 0
        self._global: ArrayRecord | None = None
        self._sent_train: list[Message] = []
        self._sent_evaluate: list[Message] = []

    def _check_minimums(self, rule: str, needed: int) -> None:
        """Refuse minimums no federation can meet: sampling would wait forever, or sample fewer than it may."""
        phases = [("train", self.fraction_train, self.min_train_nodes),
                  ("evaluate", self.fraction_evaluate, self.min_evaluate_nodes)]
        for phase, fraction, minimum in phases:
            if fraction == 0.0:
                continue
            if self.min_available_nodes < minimum:
                why = f" ({rule} needs {needed})" if phase == "train" else ""
                raise ValueError(f"{_OWNER}: min_available_nodes={self.min_available_nodes} is below "
                                 f"min_{phase}_nodes={minimum}{why}: each round would wait for {minimum} nodes; "
                                 f"set min_available_nodes >= {minimum}")
            if self.num_clients is not None and minimum > self.num_clients:
                raise ValueError(f"{_OWNER}: min_{phase}_nodes={minimum} exceeds num_clients={self.num_clients}: "
                                 f"no round could start; raise num_clients or lower min_{phase}_nodes")
        if self.num_clients is not None and self.min_available_nodes > self.num_clients:
            raise ValueError(f"{_OWNER}: min_available_nodes={self.min_available_nodes} exceeds "
                             f"num_clients={self.num_clients}: no round could start")

    def __repr__(self) -> str:
        return (f"RobustStrategy(aggregator={self.aggregator!r}, fraction_train={self.fraction_train}, "
                f"min_train_nodes={self.min_train_nodes})")

    def summary(self) -> None:
        """Log the sampling settings and the aggregator (Flower calls it when the strategy starts)."""
        from flwr.common.logger import log
        from logging import INFO

        log(INFO, "\t├──> Aggregator: %r", self.aggregator)
        log(INFO, "\t├──> Sampling: fraction train %.2f | evaluate %.2f; min nodes train %d | evaluate %d | "
            "available %d", self.fraction_train, self.fraction_evaluate, self.min_train_nodes,
            self.min_evaluate_nodes, self.min_available_nodes)
        log(INFO, "\t└──> Weighted by '%s'", self.weighted_by_key)

    # -- sending --------------------------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Sample this round's training nodes; ``arrays`` (the global model) is the reference of their updates."""
        self._global = arrays
        self._sent_train = []
        if self.fraction_train == 0.0:
            return []
        nodes = self._sample(grid, self.fraction_train, self.min_train_nodes, server_round, "train")
        # kept: the grid gives them their ids, which the replies (and the SuperLink's error replies) point to
        self._sent_train = self._messages(arrays, config, server_round, nodes, MessageType.TRAIN)
        return self._sent_train

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Sample this round's evaluation nodes and send them the global model."""
        self._sent_evaluate = []
        if self.fraction_evaluate == 0.0:
            return []
        nodes = self._sample(grid, self.fraction_evaluate, self.min_evaluate_nodes, server_round, "evaluate")
        self._sent_evaluate = self._messages(arrays, config, server_round, nodes, MessageType.EVALUATE)
        return self._sent_evaluate

    def _sample(self, grid: Grid, fraction: float, minimum: int, server_round: int, purpose: str) -> list[int]:
        """``max(minimum, fraction * connected)`` nodes, drawn from the seed (waits for enough nodes)."""
        wanted = max(minimum, self.min_available_nodes)
        warned_at: float | None = None
        while len(nodes := sorted(grid.get_node_ids())) < wanted:
            now = time.monotonic()
            if warned_at is None or now - warned_at >= self.wait_warning_interval_s:
                warnings.warn(f"round {server_round}: waiting for {wanted} connected nodes to sample for {purpose}, "
                              f"{len(nodes)} connected (min_available_nodes={self.min_available_nodes}, "
                              f"min_{purpose}_nodes={minimum}); start more SuperNodes or lower the minimums",
                              RuntimeWarning, stacklevel=3)
                warned_at = now
            time.sleep(self.poll_interval_s)
        size = min(len(nodes), max(minimum, int(len(nodes) * fraction)))
        rng = numpy_rng(self.seed, f"flower-sample-{purpose}", server_round)
        return sorted(nodes[i] for i in rng.choice(len(nodes), size=size, replace=False))

    def _messages(self, arrays: ArrayRecord, config: ConfigRecord, server_round: int, nodes: list[int],
                  message_type: str) -> list[Message]:
        config = ConfigRecord(dict(config))
        config["server-round"] = server_round
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [Message(content=content, dst_node_id=node, message_type=message_type) for node in nodes]

    # -- training replies ------------------------------------------------------------------------------------
    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Robustly aggregate the accepted replies' models into the next global model, plus diagnostics."""
        if self._global is None:
            raise RuntimeError("RobustStrategy.aggregate_train needs the global model it sent: it is taken "
                               "from configure_train(server_round, arrays, ...), which start() calls first")
        keys = list(self._global.keys())
        reference = [self._global[k].numpy() for k in keys]
        accepted: list[tuple[int, list[np.ndarray], float, RecordDict]] = []
        replies = list(replies)
        if not replies and self.fraction_train == 0.0:  # training switched off: nothing to report
            return None, None
        sent = _sent_ids(self._sent_train)
        sampled, answered = {int(m.metadata.dst_node_id) for m in self._sent_train}, set()
        for reply in replies:
            node = self._reply_node(reply, sent)
            if node not in sampled:
                problem, parsed = "it was not sampled this round", None
            elif node in answered:
                problem, parsed = "it already replied this round (one reply per node)", None
            else:
                problem, parsed = self._parse_train_reply(reply, keys, reference)
            answered.add(node)
            if problem is not None:
                warnings.warn(f"round {server_round}: node {node} is dropped: {problem}", RuntimeWarning,
                              stacklevel=2)
                continue
            arrays, weight = parsed
            accepted.append((node, arrays, weight, reply.content))
        dropped = len(replies) - len(accepted)
        if len(accepted) < self.aggregator.min_clients or not accepted:
            warnings.warn(f"round {server_round}: {len(accepted)} usable replies, but {type(self.aggregator).__name__} "
                          f"needs {self.aggregator.min_clients}; keeping the previous global model",
                          RuntimeWarning, stacklevel=2)
            return None, MetricRecord({"num-clients": len(accepted), "num-dropped": dropped})
        accepted.sort(key=lambda item: item[0])
        node_ids = [node for node, *_ in accepted]
        floats = [i for i, a in enumerate(reference) if np.issubdtype(a.dtype, np.floating)]
        layout = ParamLayout.from_shapes([keys[i] for i in floats], [reference[i].shape for i in floats])
        updates = torch.empty(len(accepted), layout.num_params, dtype=torch.float32)
        for row, (_, arrays, _, _) in enumerate(accepted):
            for i, spec in zip(floats, layout.params):
                with np.errstate(over="ignore", invalid="ignore"):  # an overflow is caught just below
                    delta = arrays[i] - reference[i]
                updates[row, spec.slice] = torch.from_numpy(np.ascontiguousarray(delta).reshape(-1)).float()
        finite = torch.isfinite(updates).all(dim=1)
        if not bool(finite.all()):  # finite models whose difference to the global one overflows
            for row in torch.nonzero(~finite).flatten().tolist():
                warnings.warn(f"round {server_round}: node {node_ids[row]} is dropped: its model minus the global "
                              "model overflows (values near the dtype's limit)", RuntimeWarning, stacklevel=2)
            dropped += int((~finite).sum())
            keep = torch.nonzero(finite).flatten().tolist()
            accepted, node_ids, updates = [accepted[r] for r in keep], [node_ids[r] for r in keep], updates[finite]
            if len(accepted) < self.aggregator.min_clients or not accepted:
                warnings.warn(f"round {server_round}: {len(accepted)} usable replies, but "
                              f"{type(self.aggregator).__name__} needs {self.aggregator.min_clients}; keeping the "
                              "previous global model", RuntimeWarning, stacklevel=2)
                return None, MetricRecord({"num-clients": len(accepted), "num-dropped": dropped})
        below = len(accepted) < self.aggregator.min_robust_clients
        if below:
            self.rounds_below_robust_minimum += 1
            warnings.warn(f"round {server_round}: aggregated {len(accepted)} clients, fewer than the "
                          f"{self.aggregator.min_robust_clients} {type(self.aggregator).__name__} needs to single out "
                          "an attacker: one attacker may take a full share unflagged this round (counted in "
                          "rounds-below-robust-minimum)", RuntimeWarning, stacklevel=2)
        ids = [self._client_id(node) for node in node_ids]
        ctx = RoundContext(round=server_round, client_ids=ids,
                           num_samples=torch.tensor([w for _, _, w, _ in accepted], dtype=torch.float32),
                           layout=layout, global_params=flat([reference[i] for i in floats], layout.num_params),
                           seed=self.seed, num_clients=self.num_clients or len(self.client_index))
        result = self.aggregator.aggregate(updates, ctx)
        update = result.update.detach().reshape(-1)
        if update.numel() != layout.num_params or not bool(torch.isfinite(update).all()):
            warnings.warn(f"round {server_round}: {type(self.aggregator).__name__} returned a non-finite or "
                          f"misshapen update; keeping the previous global model", RuntimeWarning, stacklevel=2)
            return None, MetricRecord({"num-clients": len(accepted), "num-dropped": dropped})
        new = {k: Array(a) for k, a in zip(keys, reference)}
        for i, spec in zip(floats, layout.params):
            step = update[spec.slice].numpy().astype(reference[i].dtype, copy=False).reshape(spec.shape)
            new[keys[i]] = Array(np.asarray(reference[i] + step, dtype=reference[i].dtype))
        metrics = self.train_metrics_aggr_fn([content for *_, content in accepted], self.weighted_by_key)
        for key, value in diagnostics_metrics(result, update, node_ids, dropped).items():
            metrics[key] = value
        metrics["rounds-below-robust-minimum"] = self.rounds_below_robust_minimum
        if self.on_aggregate is not None:
            self.on_aggregate(server_round, node_ids, result)
        return ArrayRecord(new), metrics

    def _parse_train_reply(self, reply: Message, keys: list[str], reference: list[np.ndarray]
                           ) -> tuple[str | None, Any]:
        """``(None, (arrays, weight))`` for a usable reply, else ``(why it is dropped, None)``."""
        if reply.has_error():
            return f"its reply is an error ({reply.error.reason})", None
        if not reply.has_content():
            return "its reply has no content", None
        content = reply.content
        if len(content.array_records) != 1:
            return f"its reply holds {len(content.array_records)} ArrayRecords, expected 1", None
        problem, weight = self._reply_weight(content)
        if problem is not None:
            return problem, None
        record = next(iter(content.array_records.values()))
        if list(record.keys()) != keys:
            return f"its ArrayRecord has keys {list(record.keys())}, the global model's are {keys}", None
        try:
            arrays = [record[k].numpy() for k in keys]
        except Exception as exc:  # undecodable bytes
            return f"its ArrayRecord could not be decoded ({type(exc).__name__}: {exc})", None
        for key, have, want in zip(keys, arrays, reference):
            if have.shape != want.shape:
                return f"its array {key!r} has shape {have.shape}, the global model's is {want.shape}", None
            if not np.issubdtype(want.dtype, np.floating):
                continue  # integer state (num_batches_tracked) keeps the global model's value
            if have.dtype != want.dtype:
                return (f"its array {key!r} is {have.dtype}, the global model's is {want.dtype} (send the model in "
                        "its own dtype)"), None
            if not np.isfinite(have).all():
                return f"its array {key!r} holds NaN or Inf", None
        return None, (arrays, weight)

    def _reply_weight(self, content: RecordDict) -> tuple[str | None, float]:
        records = list(content.metric_records.values())
        if len(records) != 1:
            return f"its reply holds {len(records)} MetricRecords, expected 1 with {self.weighted_by_key!r}", 0.0
        value = records[0].get(self.weighted_by_key)
        integral_float = isinstance(value, float) and value.is_integer()
        count = integral_float or (isinstance(value, int) and not isinstance(value, bool))
        if not count or not 1 <= value <= self.max_num_examples:
            return (f"its MetricRecord's {self.weighted_by_key!r} is {value!r}, expected an integer count in "
                    f"[1, {self.max_num_examples}] (max_num_examples)"), 0.0
        return None, float(value)

    @staticmethod
    def _reply_node(reply: Message, sent: dict[str, int]) -> int:
        """The node a reply answers for: the one its instruction went to (the SuperLink signs a dead node's error)."""
        return sent.get(reply.metadata.reply_to_message_id, int(reply.metadata.src_node_id))

    def _client_id(self, node_id: int) -> int:
        if node_id not in self.client_index:
            if self.num_clients is not None and len(self.client_index) >= self.num_clients:
                raise ValueError(f"RobustStrategy(num_clients={self.num_clients}) got a reply from node {node_id}, "
                                 f"beyond the {self.num_clients} nodes already seen; raise num_clients")
            self.client_index[node_id] = len(self.client_index)
        return self.client_index[node_id]

    # -- evaluation replies --------------------------------------------------------------------------------
    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Average the clients' evaluation metrics, weighted by ``weighted_by_key``; bad replies are dropped."""
        usable = []
        sent = _sent_ids(self._sent_evaluate)
        for reply in replies:
            node = self._reply_node(reply, sent)
            problem = (f"its reply is an error ({reply.error.reason})" if reply.has_error() else
                       "its reply has no content" if not reply.has_content() else
                       self._reply_weight(reply.content)[0])
            if problem is not None:
                warnings.warn(f"round {server_round}: evaluation of node {node} is dropped: "
                              f"{problem}", RuntimeWarning, stacklevel=2)
                continue
            usable.append(reply.content)
        return self.evaluate_metrics_aggr_fn(usable, self.weighted_by_key) if usable else None

    # -- checkpointing ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The aggregator's memory and the node-id mapping it is keyed by (to resume a Flower run)."""
        return {"aggregator": self.aggregator.state_dict(), "client_index": dict(self.client_index),
                "rounds_below_robust_minimum": self.rounds_below_robust_minimum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.client_index = {int(k): int(v) for k, v in state.get("client_index", {}).items()}
        self.rounds_below_robust_minimum = int(state.get("rounds_below_robust_minimum", 0))
        self.aggregator.load_state_dict(state.get("aggregator", {}))


def _sent_ids(messages: list[Message]) -> dict[str, int]:
    """Message id -> destination node of the instructions a grid has sent (ids are set when they are pushed)."""
    return {m.metadata.message_id: int(m.metadata.dst_node_id) for m in messages if m.metadata.message_id}


def node_weights(node_ids: list[int], result: AggregationResult) -> dict[int, float | None]:
    """``{node id: weight}`` from an ``on_aggregate`` call, for any rule: ``None`` weights where the rule has
    none (a coordinate median, Krum's selection)."""
    if result.client_weights is None:
        return {node: None for node in node_ids}
    return dict(zip(node_ids, (float(w) for w in result.client_weights.reshape(-1))))


def weighted_metrics(records: Sequence[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Average every numeric metric the replies share, weighted by ``weighted_by_key`` (which is left out)."""
    weights, rows = [], []
    for content in records:
        (record,) = content.metric_records.values()
        weights.append(float(record[weighted_by_key]))
        rows.append({k: v for k, v in record.items() if k != weighted_by_key})
    total = sum(weights)
    shared = set.intersection(*(set(r) for r in rows)) if rows else set()
    out = MetricRecord()
    for key in sorted(shared):
        values = [r[key] for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = sum(w * float(v) for w, v in zip(weights, values)) / total
    return out


def diagnostics_metrics(result: AggregationResult, update: Tensor, node_ids: list[int],
                        num_dropped: int) -> dict[str, Any]:
    """An aggregation result as ``MetricRecord`` values (numbers and lists of numbers only)."""
    metrics: dict[str, Any] = {"num-clients": len(node_ids), "num-dropped": num_dropped,
                               "update-norm": float(update.norm()), "node-ids": list(node_ids)}
    if result.client_weights is not None:
        metrics["client-weights"] = [float(w) for w in result.client_weights.detach().double().reshape(-1)]
    for key, value in result.diagnostics.items():
        if key == "flagged":
            flagged = torch.as_tensor(value, dtype=torch.bool).reshape(-1).tolist()
            metrics["flagged-node-ids"] = [n for n, f in zip(node_ids, flagged) if f]
            metrics["num-flagged"] = int(sum(flagged))
        elif isinstance(value, (bool, int)):
            metrics[key] = int(value)
        elif isinstance(value, float):
            metrics[key] = value
        elif isinstance(value, Tensor) and value.numel() == 1:
            metrics[key] = float(value)
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}


__all__ = ["RobustStrategy", "LegacyRobustStrategy", "node_weights", "weighted_metrics", "diagnostics_metrics"]
