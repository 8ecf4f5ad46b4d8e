"""RayEngine on a two-node Ray cluster (two raylets on 127.0.0.1): spread, bit-identical, survives a lost node.

The cluster, the driver that runs RayEngine on it and the node kill all run in
``ray_cluster_scenario.py``, inside a private network namespace that has only ``lo`` (and its own
process ids), started here with ``unshare``. Loopback by construction: there is no other interface
in there, so Ray's "this machine's address" (which it puts in place of ``127.0.0.1`` for a cluster)
is 127.0.0.1 itself, and no traffic can reach an address outside 127.0.0.0/8; the scenario also
refuses to run if another interface exists, and the test checks every node's address. When the
scenario ends, however it ends, the kernel kills every process in the namespace.

Both nodes are started with ``ray start --block``, one CPU and a small object store each, every port
chosen free. The scenario writes what it saw (node per client, local models, dropped clients,
warnings) to a temp dir; the tests compare the local models with SequentialEngine, computed here.

Needs root and util-linux ``unshare`` (and iproute2 ``ip``); without them the module is skipped.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fl_lightning.engines import SequentialEngine
from fl_lightning.engines.base import torch_threads
from fl_lightning.param_layout import ParamLayout
from tests.engines.ray_cluster_scenario import NUM_CLIENTS, ROUNDS, make_clients, make_module, train_round
from tests.integrations.local_processes import in_private_network, private_network_available

SCENARIO_TIMEOUT_S = 600
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the whole cluster scenario once, in its own network namespace, and load what it wrote."""
    if not private_network_available():
        pytest.skip("needs a private network namespace (root + util-linux unshare) so that Ray stays on loopback")
    out = tmp_path_factory.mktemp("ray-cluster")
    temp_dir = Path(f"/tmp/ray-fl-{os.getpid()}")  # short: Ray's socket paths must stay under 108 bytes
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]),
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")  # a second node (a "0" set for local Ray would refuse it)
    command = in_private_network([sys.executable, "-m", "tests.engines.ray_cluster_scenario", str(out), str(temp_dir)])
    with open(out / "scenario.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                   start_new_session=True)
    try:
        process.wait(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:  # unshare's child is the namespace's first process: the rest die with it
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
    log_tail = (out / "scenario.log").read_text(errors="replace")[-4000:]
    assert (out / "results.pt").exists(), f"the scenario wrote no results (exit {process.returncode}):\n{log_tail}"
    results = torch.load(out / "results.pt", weights_only=True)
    assert "error" not in results, f"{results['error']}\nhead node:\n{_tail(out / 'head.log')}"
    assert process.returncode == 0, log_tail
    return results


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def test_the_cluster_only_ever_had_loopback(scenario: dict) -> None:
    assert scenario["interfaces"] == ["lo"]
    assert scenario["node_addresses"] and all(a.startswith("127.") for a in scenario["node_addresses"])
    assert scenario["head_id"] != scenario["second_id"]


def test_clients_spread_over_both_nodes_and_match_the_sequential_engine(scenario: dict) -> None:
    clients = make_clients()
    for client, (inputs, targets) in zip(clients, scenario["client_data"], strict=True):
        assert torch.equal(client.inputs, inputs) and torch.equal(client.targets, targets)  # same data here
    spread = scenario["spread"]
    assert spread["workers"] == 2  # one actor per 1-CPU node
    sequential, module = SequentialEngine(num_threads=1), make_module()
    sequential.setup(module, ParamLayout.from_module(module))
    assert len(spread["rounds"]) == ROUNDS
    used: set[str] = set()
    for r, got in enumerate(spread["rounds"]):
        assert all(got["ok"]), got["errors"]
        with torch_threads(1):
            want_p, want_b, _ = train_round(sequential, module, clients, got["params_in"], got["buffers_in"], r)
        assert torch.equal(got["params"], want_p) and torch.equal(got["buffers"], want_b)  # bit-identical, node by node
        used |= set(got["node_ids"])
    assert used == {scenario["head_id"], scenario["second_id"]}
    # round 1 started from round 0's mean, as a trainer would
    assert torch.equal(spread["rounds"][1]["params_in"], spread["rounds"][0]["params"].mean(0))
    assert spread["driver_still_connected"]  # the cluster was not the engine's to stop


def test_a_node_killed_mid_round_drops_its_clients_and_the_next_round_runs_on_the_survivor(scenario: dict) -> None:
    lost = scenario["lost_node"]
    assert lost["workers"] == 2
    assert lost["killed"] and lost["marker_seen"]
    assert any(w.startswith("RuntimeWarning") and "worker died" in w for w in lost["warnings"]), lost["warnings"]
    during = lost["round_with_kill"]
    dropped = [error for ok, error in zip(during["ok"], during["errors"]) if not ok]
    assert len(dropped) == 1 and "worker died" in dropped[0]  # the client on the lost node
    assert {node for ok, node in zip(during["ok"], during["node_ids"]) if ok} == {scenario["head_id"]}
    assert len(during["ok"]) - len(dropped) == NUM_CLIENTS - 1  # the survivor trained everyone else

    after = lost["round_after"]
    assert all(after["ok"]), after["errors"]
    assert set(after["node_ids"]) == {scenario["head_id"]}
