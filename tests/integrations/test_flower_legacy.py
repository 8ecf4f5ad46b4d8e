"""LegacyRobustStrategy (Flower's legacy API) inside Flower: the same aggregate as the aggregator called directly, memory across rounds."""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import ray
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy

from fl_lightning.aggregators import CoordinateMedian, FedAvg, FoolsGold, Krum, ResidualReweight
from fl_lightning.context import RoundContext
from fl_lightning.integrations.flower import LegacyRobustStrategy as RobustStrategy
from fl_lightning.param_layout import ParamLayout

pytestmark = pytest.mark.filterwarnings("ignore:LegacyRobustStrategy uses:DeprecationWarning")

SHAPES = [(6, 5), (6,), (3, 6), (3,)]  # a 5 -> 6 -> 3 MLP: FoolsGold reads the (3, 6) output weight
NAMES = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "bn.num_batches_tracked"]


class Proxy(ClientProxy):
    """The smallest ClientProxy: only ``cid`` is read by a strategy's aggregate_fit."""

    def get_properties(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def get_parameters(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def fit(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def reconnect(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def _model(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    return arrays + [np.array(7, dtype=np.int64)]  # an integer array, as BatchNorm's num_batches_tracked


def _deltas(k: int, seed: int) -> np.ndarray:
    """``[K, N]`` honest client steps, the last client an outlier."""
    rng = np.random.default_rng(seed)
    n = sum(int(np.prod(s)) for s in SHAPES)
    deltas = rng.normal(scale=0.01, size=(k, n)).astype(np.float32) + 0.02
    deltas[-1] = 5.0
    return deltas


def _results(global_model: list[np.ndarray], deltas: np.ndarray, cids: list[str],
             num_examples: list[int]) -> list[tuple[ClientProxy, FitRes]]:
    results = []
    for cid, delta, n in zip(cids, deltas, num_examples):
        arrays, offset = [], 0
        for array in global_model:
            if np.issubdtype(array.dtype, np.floating):
                arrays.append(array + delta[offset:offset + array.size].reshape(array.shape))
                offset += array.size
            else:
                arrays.append(array + 100)  # a client's integer state is ignored
        results.append((Proxy(cid), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, {})))
    return results


def _direct(aggregator, global_model: list[np.ndarray], deltas: np.ndarray, ids: list[int],
            num_examples: list[int], server_round: int):
    """The aggregator called by hand on the clients' ``local - global`` (as sent, so rounded) and the same context."""
    layout = ParamLayout.from_shapes(NAMES[:4], SHAPES)
    flat = torch.cat([torch.from_numpy(a.reshape(-1)) for a in global_model[:4]])
    local = torch.cat([torch.from_numpy(a.reshape(-1)) for a in global_model[:4]]) + torch.from_numpy(deltas)
    ctx = RoundContext(round=server_round, client_ids=ids, num_samples=torch.tensor(num_examples, dtype=torch.float32),
                       layout=layout, global_params=flat, num_clients=len(ids))
    result = aggregator.aggregate(local - flat, ctx)
    new = [(a.reshape(-1) + result.update[s.slice].numpy()).reshape(a.shape)
           for a, s in zip(global_model[:4], layout.params)]
    return new + [global_model[4]], result


@pytest.mark.parametrize("make", [FedAvg, ResidualReweight, CoordinateMedian, lambda: Krum(f=1)],
                         ids=["fedavg", "residual_reweight", "median", "krum"])
def test_same_aggregate_as_the_aggregator_called_directly(make) -> None:
    model, deltas = _model(), _deltas(6, seed=1)
    cids = ["node-9", "node-3", "node-41", "node-7", "node-12", "node-5"]
    num_examples = [30, 10, 20, 25, 15, 40]
    seen = []
    strategy = RobustStrategy(make(), initial_parameters=model, names=NAMES,
                              on_diagnostics=lambda r, res: seen.append((r, res)))
    parameters, metrics = strategy.aggregate_fit(1, _results(model, deltas, cids, num_examples), [])
    want, result = _direct(make(), model, deltas, list(range(6)), num_examples, 1)

    have = parameters_to_ndarrays(parameters)
    for h, w in zip(have, want):
        assert h.dtype == w.dtype and h.shape == w.shape
        np.testing.assert_array_equal(h, w)
    assert strategy.client_index == {cid: i for i, cid in enumerate(cids)}
    assert [r for r, _ in seen] == [1]
    assert metrics["num_clients"] == 6 and metrics["num_failures"] == 0
    flagged = result.diagnostics.get("flagged")
    if flagged is not None:
        assert metrics["num_flagged"] == int(flagged.sum())
        assert metrics["flagged_cids"] == ",".join(c for c, f in zip(cids, flagged.tolist()) if f)
    assert all(isinstance(v, (bool, bytes, float, int, str)) for v in metrics.values())  # Flower's Scalar


def test_foolsgold_memory_persists_across_rounds() -> None:
    """Two sybils look alike only over both rounds; the strategy must carry FoolsGold's memory between calls."""
    model = _model()
    cids = ["a", "b", "c", "sybil-1", "sybil-2"]
    rng = np.random.default_rng(3)
    n = sum(int(np.prod(s)) for s in SHAPES)
    round1 = rng.normal(scale=0.05, size=(5, n)).astype(np.float32)
    round2 = rng.normal(scale=0.05, size=(5, n)).astype(np.float32)
    round2[4] = round1[3] + round2[3] - round1[4]  # the sybils' summed histories are identical
    counts = [10, 10, 10, 10, 10]

    strategy = RobustStrategy(FoolsGold(), initial_parameters=model, names=NAMES)
    direct = FoolsGold()
    params1, _ = strategy.aggregate_fit(1, _results(model, round1, cids, counts), [])
    model1, _ = _direct(direct, model, round1, [0, 1, 2, 3, 4], counts, 1)
    # round 2 from the new global; the results arrive in another order, the client ids must not move
    global1 = parameters_to_ndarrays(params1)
    order = [4, 2, 0, 3, 1]
    results2 = _results(global1, round2[order], [cids[i] for i in order], counts)
    params2, metrics2 = strategy.aggregate_fit(2, results2, [])
    model2, result2 = _direct(direct, model1, round2, [0, 1, 2, 3, 4], counts, 2)

    for h, w in zip(parameters_to_ndarrays(params2), model2):
        np.testing.assert_allclose(h, w, rtol=0, atol=1e-6)
    assert strategy.client_index == {c: i for i, c in enumerate(cids)}
    assert metrics2["flagged_cids"] == "sybil-1,sybil-2"
    assert set(strategy.aggregator.state_dict()["client_ids"].tolist()) == {0, 1, 2, 3, 4}
    # without the memory, round 2 alone flags nobody: the persisted history is what caught them
    _, fresh = _direct(FoolsGold(), model1, round2, [0, 1, 2, 3, 4], counts, 2)
    assert not fresh.diagnostics["flagged"][3:].all()
    assert result2.diagnostics["flagged"][3:].all()


def test_state_dict_round_trip_keeps_memory_and_ids() -> None:
    model = _model()
    strategy = RobustStrategy(FoolsGold(), initial_parameters=model, names=NAMES)
    strategy.aggregate_fit(1, _results(model, _deltas(3, 0), ["x", "y", "z"], [1, 1, 1]), [])
    state = strategy.state_dict()
    restored = RobustStrategy(FoolsGold(), initial_parameters=model, names=NAMES)
    restored.load_state_dict(state)
    assert restored.client_index == {"x": 0, "y": 1, "z": 2}
    assert torch.equal(restored.aggregator.state_dict()["memory"], state["aggregator"]["memory"])


def test_global_model_is_taken_from_configure_fit() -> None:
    model = _model()

    class Manager:
        def num_available(self) -> int:
            return 3

        def sample(self, num_clients: int, min_num_clients: int | None = None) -> list[ClientProxy]:
            return [Proxy(str(i)) for i in range(num_clients)]

    strategy = RobustStrategy(FedAvg())  # no initial_parameters: the server got them from a client
    with pytest.raises(RuntimeError, match="needs the current global model"):
        strategy.aggregate_fit(1, _results(model, _deltas(3, 0), ["0", "1", "2"], [1, 1, 1]), [])
    assert len(strategy.configure_fit(1, ndarrays_to_parameters(model), Manager())) == 3
    parameters, _ = strategy.aggregate_fit(1, _results(model, _deltas(3, 0), ["0", "1", "2"], [1, 1, 1]), [])
    assert parameters is not None and strategy.global_ndarrays is not None


def test_bad_inputs_say_what_to_do() -> None:
    model = _model()
    strategy = RobustStrategy(FedAvg(), initial_parameters=model, accept_failures=False)
    assert strategy.aggregate_fit(1, _results(model, _deltas(2, 0), ["0", "1"], [1, 1]), [RuntimeError()]) == (None, {})
    assert strategy.aggregate_fit(1, [], []) == (None, {})
    bad = _results(model, _deltas(2, 0), ["0", "1"], [1, 1])
    bad[1] = (bad[1][0], FitRes(Status(Code.OK, ""), ndarrays_to_parameters(model[:2]), 1, {}))
    with pytest.raises(ValueError, match="client '1' sent arrays of shapes"):
        strategy.aggregate_fit(1, bad, [])
    with pytest.raises(ValueError, match="at least 3 clients"):
        RobustStrategy(ResidualReweight(), min_fit_clients=2)
    with pytest.raises(TypeError, match="needs an fl_lightning Aggregator"):
        RobustStrategy("fedavg")  # type: ignore[arg-type]
    assert RobustStrategy(ResidualReweight()).min_fit_clients == 3


def test_clear_error_without_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "flwr" or m.startswith("flwr.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "fl_lightning.integrations.flower_legacy")
    with pytest.raises(ImportError, match=r"pip install 'fl-lightning\[flower\]'"):
        importlib.import_module("fl_lightning.integrations.flower_legacy")


def test_flower_simulation_with_a_byzantine_client() -> None:
    """A real Flower run (simulation on Ray): 4 honest clients step +1, one sends 1e6; the median holds."""
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    rounds, seen = 2, []

    class Client(NumPyClient):
        def __init__(self, partition: int) -> None:
            self.partition = partition

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            step = 1e6 if self.partition == 4 else 1.0
            return [p + step for p in parameters], 10, {}

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        return Client(int(context.node_config["partition-id"])).to_client()

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = RobustStrategy(CoordinateMedian(), initial_parameters=[np.zeros((3, 2), np.float32)],
                                  min_fit_clients=5, min_available_clients=5, fraction_evaluate=0.0,
                                  on_diagnostics=lambda r, result: seen.append(result.update.clone()))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
                   num_supernodes=5, backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                                     "init_args": {"num_cpus": 2, "include_dashboard": False}})
    assert len(seen) == rounds
    assert not ray.is_initialized()  # Flower shut its Ray down: the next test module may start its own
    for update in seen:
        assert torch.equal(update, torch.ones(6))  # the median ignores the 1e6 client
