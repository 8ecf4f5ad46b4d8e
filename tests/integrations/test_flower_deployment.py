"""A real Flower deployment on loopback: a SuperLink, four SuperNodes (one Byzantine) and `flwr run`.

The app shipped in ``fl_lightning/integrations/flower_app/`` runs ``RobustStrategy(ResidualReweight())``; its ServerApp writes each
round's diagnostics to a JSON file, from which the test reads the attacker's weight. Four nodes,
not three: with three clients a line through the ranked values fits any single outlier at an end,
so residual reweighting has nothing to go on (it weighs three clients equally).

Marked slow: on a shared 2-core machine it took 82-140 s (every SuperNode starts a fresh
ClientApp process, which imports torch, for each message).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

import fl_lightning.integrations
from tests.integrations.local_processes import ProcessGroup, free_port, wait_for_port

APP = Path(fl_lightning.integrations.__file__).parent / "flower_app"  # shipped in the wheel
REPO = Path(__file__).resolve().parents[2]
NUM_NODES, BYZANTINE, ROUNDS = 4, 3, 2


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[ProcessGroup, dict[str, str], int]]:
    """A SuperLink and its SuperNodes on 127.0.0.1, stopped (process trees included) however the test ends."""
    home = tmp_path / "flwr-home"
    home.mkdir()
    env = dict(os.environ, FLWR_HOME=str(home), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    link_port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local-test"\n\n[superlink.local-test]\naddress = "127.0.0.1:{link_port}"\n'
        "insecure = true\n")
    group = ProcessGroup(tmp_path, env)
    try:
        link = group.start("superlink", ["flower-superlink", "--insecure", "--host", "127.0.0.1",
                                         "--port", str(link_port), "--disable-runtime-dependency-installation"])
        wait_for_port(link_port, timeout_s=90, process=link)
        for i in range(NUM_NODES):
            group.start(f"supernode-{i}", [
                "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link_port}",
                "--host", "127.0.0.1", "--port", str(free_port()), "--max-wait-time", "120",
                "--node-config", f'partition-id={i} byzantine="{str(i == BYZANTINE).lower()}"'])
        yield group, env, link_port
    finally:
        group.stop()


def _node_id(group: ProcessGroup, name: str) -> int:
    match = re.search(r"SuperNode ID: (\d+)", group.log(name))
    assert match, f"{name} never registered with the SuperLink:\n{group.log(name)[-2000:]}"
    return int(match.group(1))


@pytest.mark.slow
def test_flwr_run_on_a_local_superlink_down_weights_the_byzantine_supernode(deployment, tmp_path: Path) -> None:
    group, env, _ = deployment
    app = tmp_path / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    diagnostics = tmp_path / "diagnostics.json"
    run = group.start("flwr-run", ["flwr", "run", str(app), "local-test", "--stream", "--run-config",
                                   f'num-server-rounds={ROUNDS} diagnostics-file="{diagnostics}"'])
    try:
        run.wait(timeout=480)
    except subprocess.TimeoutExpired:
        pytest.fail(f"flwr run did not finish within 480 s:\n{group.log('flwr-run')[-3000:]}")
    assert run.returncode == 0, group.log("flwr-run")[-3000:]
    assert diagnostics.exists(), f"the ServerApp wrote no diagnostics:\n{group.log('flwr-run')[-3000:]}"

    attacker = _node_id(group, f"supernode-{BYZANTINE}")
    honest = {_node_id(group, f"supernode-{i}") for i in range(NUM_NODES) if i != BYZANTINE}
    train = json.loads(diagnostics.read_text())["train"]
    assert sorted(train) == [str(r) for r in range(1, ROUNDS + 1)]
    for metrics in train.values():
        assert set(metrics["node-ids"]) == honest | {attacker} and metrics["num-dropped"] == 0
        weights = dict(zip(metrics["node-ids"], metrics["client-weights"]))
        assert weights[attacker] < 0.1 * min(weights[n] for n in honest), weights
        assert attacker in metrics["flagged-node-ids"]
