"""Deprecated: any fl_lightning aggregator as a legacy Flower ``Strategy`` (``server_fn``, ``FitRes``).

Flower apps written for Flower >= 1.21 use the Message API; :class:`fl_lightning.integrations.flower.RobustStrategy`
is the strategy for them. This class is kept for older apps and warns on construction.

Flower clients send whole models; :class:`RobustStrategy` turns them into the ``[K, N]`` updates
relative to the current global model (the layout every aggregator here expects), aggregates them
with the given :class:`~fl_lightning.aggregators.Aggregator` and adds the result to the global
model. The aggregator object lives as long as the strategy, so rules with memory (FoolsGold) see
every round; Flower's string client ids are mapped to stable integers for them.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

try:
    from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.client_manager import ClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import FedAvg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("LegacyRobustStrategy needs Flower: pip install 'fl-lightning[flower]'") from exc

from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.context import RoundContext
from fl_lightning.integrations._arrays import flat
from fl_lightning.param_layout import ParamLayout

#: ``on_diagnostics(server_round, result)``: called after every aggregation with the full result
DiagnosticsHook = Callable[[int, AggregationResult], None]


class LegacyRobustStrategy(FedAvg):
    """Deprecated legacy-API strategy: Flower's old ``FedAvg`` sampling, with ``aggregate_fit`` done by ``aggregator``.

    Use :class:`fl_lightning.integrations.flower.RobustStrategy` (Flower's Message API) in new apps.

    Args:
        aggregator: any fl_lightning aggregator; the same object serves every round.
        fraction_fit, fraction_evaluate, min_fit_clients, min_evaluate_clients, min_available_clients,
        evaluate_fn, on_fit_config_fn, on_evaluate_config_fn, accept_failures,
        fit_metrics_aggregation_fn, evaluate_metrics_aggregation_fn: as in ``flwr``'s ``FedAvg``.
        initial_parameters: the initial global model (``Parameters`` or a list of arrays); without
            it Flower asks one client for its model, which this strategy also picks up.
        on_diagnostics: ``(server_round, AggregationResult) -> None``, e.g. to log the client weights.
        names: a name per model array (the layout aggregators see; default ``array_0``, ``array_1``...).
        num_clients: the federation's size if known (``RoundContext.num_clients``; default: clients seen).
        seed: the seed of ``RoundContext.generator`` (randomised aggregators).

    Float arrays are aggregated; integer arrays (e.g. BatchNorm's ``num_batches_tracked``) keep the
    global model's value. ``min_fit_clients`` defaults to what the aggregator needs (at least 2).
    """

    def __init__(self, aggregator: Aggregator, *, fraction_fit: float = 1.0, fraction_evaluate: float = 1.0,
                 min_fit_clients: int | None = None, min_evaluate_clients: int = 2,
                 min_available_clients: int | None = None,
                 initial_parameters: Parameters | Sequence[np.ndarray] | None = None,
                 on_diagnostics: DiagnosticsHook | None = None, names: Sequence[str] | None = None,
                 num_clients: int | None = None, seed: int = 0, evaluate_fn: Callable | None = None,
                 on_fit_config_fn: Callable[[int], dict[str, Scalar]] | None = None,
                 on_evaluate_config_fn: Callable[[int], dict[str, Scalar]] | None = None,
                 accept_failures: bool = True, fit_metrics_aggregation_fn: Callable | None = None,
                 evaluate_metrics_aggregation_fn: Callable | None = None) -> None:
        warnings.warn("LegacyRobustStrategy uses Flower's legacy strategy API (server_fn, FitRes), which Flower "
                      "is retiring; use fl_lightning.integrations.flower.RobustStrategy with a Message-API "
                      "ServerApp (strategy.start(grid, ...)) instead", DeprecationWarning, stacklevel=2)
        if not isinstance(aggregator, Aggregator):
            raise TypeError(f"RobustStrategy needs an fl_lightning Aggregator (e.g. ResidualReweight()), "
                            f"got {type(aggregator).__name__}")
        if aggregator.root_samples > 0:
            raise ValueError(f"LegacyRobustStrategy: {type(aggregator).__name__} needs a server-side root data set "
                             f"(root_samples={aggregator.root_samples}), which a Flower strategy does not hold; use "
                             "another rule, or FederatedTrainer")
        min_fit = max(2, aggregator.min_clients) if min_fit_clients is None else min_fit_clients
        aggregator.validate(min_fit)
        min_available = max(min_fit, min_evaluate_clients) if min_available_clients is None else min_available_clients
        if initial_parameters is not None and not isinstance(initial_parameters, Parameters):
            initial_parameters = ndarrays_to_parameters([np.asarray(a) for a in initial_parameters])
        super().__init__(fraction_fit=fraction_fit, fraction_evaluate=fraction_evaluate,
                         min_fit_clients=min_fit, min_evaluate_clients=min_evaluate_clients,
                         min_available_clients=min_available, evaluate_fn=evaluate_fn,
                         on_fit_config_fn=on_fit_config_fn, on_evaluate_config_fn=on_evaluate_config_fn,
                         accept_failures=accept_failures, initial_parameters=initial_parameters,
                         fit_metrics_aggregation_fn=fit_metrics_aggregation_fn,
                         evaluate_metrics_aggregation_fn=evaluate_metrics_aggregation_fn)
        self.aggregator = aggregator
        self.on_diagnostics = on_diagnostics
        self.names = list(names) if names is not None else None
        self.num_clients = num_clients
        self.seed = seed
        #: Flower client id (``ClientProxy.cid``) -> the integer id aggregators see, in order of first result
        self.client_index: dict[str, int] = {}
        self._global: list[np.ndarray] | None = (
            parameters_to_ndarrays(initial_parameters) if initial_parameters is not None else None)

    def __repr__(self) -> str:
        return f"LegacyRobustStrategy(aggregator={self.aggregator!r}, accept_failures={self.accept_failures})"

    # -- the global model, as Flower hands it over -----------------------------------------------------
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The initial global model (remembered as the reference of round 1's updates)."""
        parameters = super().initialize_parameters(client_manager)
        if parameters is not None:
            self._global = parameters_to_ndarrays(parameters)
        return parameters

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, Any]]:
        """FedAvg's sampling; the ``parameters`` sent to clients are this round's global model."""
        self._global = parameters_to_ndarrays(parameters)
        return super().configure_fit(server_round, parameters, client_manager)

    @property
    def global_ndarrays(self) -> list[np.ndarray] | None:
        """The current global model as Flower arrays (``None`` before the first round)."""
        return self._global

    # -- aggregation -------------------------------------------------------------------------------------
    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[tuple[ClientProxy, FitRes] | BaseException]
                      ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Robustly aggregate the clients' models into the next global model, plus scalar diagnostics."""
        if not results:
            return None, {}
        if not self.accept_failures and failures:
            return None, {}
        if self._global is None:
            raise RuntimeError("RobustStrategy.aggregate_fit needs the current global model: pass "
                               "initial_parameters=..., or let the Flower server call configure_fit first")
        results = sorted(results, key=lambda r: self._client_id(r[0].cid))
        cids = [proxy.cid for proxy, _ in results]
        floats = [i for i, a in enumerate(self._global) if np.issubdtype(a.dtype, np.floating)]
        layout = self._layout(floats)
        updates = torch.empty(len(results), layout.num_params, dtype=torch.float32)
        for row, (proxy, fit_res) in enumerate(results):
            arrays = self._check_arrays(proxy.cid, parameters_to_ndarrays(fit_res.parameters))
            for i, spec in zip(floats, layout.params):
                delta = np.asarray(arrays[i], dtype=self._global[i].dtype) - self._global[i]
                updates[row, spec.slice] = torch.from_numpy(np.ascontiguousarray(delta).reshape(-1)).float()
        global_flat = flat([self._global[i] for i in floats], layout.num_params)
        ctx = RoundContext(round=server_round, client_ids=[self.client_index[c] for c in cids],
                           num_samples=torch.tensor([float(r.num_examples) for _, r in results]),
                           layout=layout, global_params=global_flat, seed=self.seed,
                           num_clients=self.num_clients or len(self.client_index))
        result = self.aggregator.aggregate(updates, ctx)
        update = result.update.detach().reshape(-1)
        if update.numel() != layout.num_params or not bool(torch.isfinite(update).all()):
            warnings.warn(f"round {server_round}: {type(self.aggregator).__name__} returned a non-finite or "
                          f"misshapen update; keeping the previous global model", RuntimeWarning, stacklevel=2)
            return None, {"num_clients": len(results), "kept_previous_model": True}
        new = [a.copy() for a in self._global]
        for i, spec in zip(floats, layout.params):
            step = update[spec.slice].numpy().astype(self._global[i].dtype, copy=False).reshape(spec.shape)
            new[i] = self._global[i] + step
        self._global = new
        metrics = _metrics(result, update, cids, len(failures))
        if self.fit_metrics_aggregation_fn is not None:
            metrics.update(self.fit_metrics_aggregation_fn([(r.num_examples, r.metrics) for _, r in results]))
        if self.on_diagnostics is not None:
            self.on_diagnostics(server_round, result)
        return ndarrays_to_parameters(new), metrics

    def _client_id(self, cid: str) -> int:
        if cid not in self.client_index:
            if self.num_clients is not None and len(self.client_index) >= self.num_clients:
                raise ValueError(f"RobustStrategy(num_clients={self.num_clients}) got a result from client "
                                 f"{cid!r}, beyond the {self.num_clients} clients already seen; raise num_clients")
            self.client_index[cid] = len(self.client_index)
        return self.client_index[cid]

    def _layout(self, floats: list[int]) -> ParamLayout:
        assert self._global is not None
        names = self.names or [f"array_{i}" for i in range(len(self._global))]
        if len(names) != len(self._global):
            raise ValueError(f"RobustStrategy(names=...) has {len(names)} names but the model has "
                             f"{len(self._global)} arrays")
        return ParamLayout.from_shapes([names[i] for i in floats], [self._global[i].shape for i in floats])

    def _check_arrays(self, cid: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
        assert self._global is not None
        want = [a.shape for a in self._global]
        have = [a.shape for a in arrays]
        if have != want:
            raise ValueError(f"client {cid!r} sent arrays of shapes {have}, but the global model's are {want}; "
                             "every client must send the whole model in the same order")
        return arrays

    # -- checkpointing ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The aggregator's memory and the client-id mapping it is keyed by (to resume a Flower run)."""
        return {"aggregator": self.aggregator.state_dict(), "client_index": dict(self.client_index)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.client_index = dict(state.get("client_index", {}))
        self.aggregator.load_state_dict(state.get("aggregator", {}))


def _metrics(result: AggregationResult, update: Tensor, cids: list[str], num_failures: int) -> dict[str, Scalar]:
    """Flower metrics (scalars and strings only) from an aggregation result."""
    metrics: dict[str, Scalar] = {"num_clients": len(cids), "num_failures": num_failures,
                                  "update_norm": float(update.norm())}
    for key, value in result.diagnostics.items():
        if key == "flagged":
            flagged = torch.as_tensor(value, dtype=torch.bool).reshape(-1)
            metrics["num_flagged"] = int(flagged.sum())
            metrics["flagged_cids"] = ",".join(c for c, f in zip(cids, flagged.tolist()) if f)
        elif isinstance(value, (bool, int, float, str)):
            metrics[key] = value
        elif isinstance(value, Tensor) and value.numel() == 1:
            metrics[key] = float(value)
    if result.client_weights is not None:
        weights = result.client_weights.detach().float().reshape(-1)
        metrics["min_client_weight"] = float(weights.min())
        metrics["max_client_weight"] = float(weights.max())
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
