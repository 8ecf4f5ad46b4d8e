"""The README's scheduler-over-the-run example runs as written, and the schedule spans the run."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scheduler_over_the_run.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("scheduler_over_the_run", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("one_thread")
def test_one_cycle_spans_the_federated_run(tmp_path):
    example = _load_example()
    results, lrs = example.main(rounds=8, root=str(tmp_path / "run"))
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert 0 < peak < len(lrs) - 1                     # warms up over rounds, then anneals
    assert lrs[peak] > 10 * lrs[0] and lrs[-1] < lrs[peak] / 10
    restarted, flat = example.main(rounds=8, scheduler_scope="round", root=str(tmp_path / "round"))
    assert len(set(flat)) == 1                         # every round starts the cycle afresh
    assert results["test/acc"] > 0.85
    assert results["test/acc"] > restarted["test/acc"]
