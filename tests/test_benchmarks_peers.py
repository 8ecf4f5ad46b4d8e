"""``benchmarks/peers.py --quick`` runs the harness end to end in seconds: a smoke test, not a speed test.

The scripts run in this process (not in a child): a child's peak memory would count in the
``RUSAGE_CHILDREN`` figures other tests read.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_quick_run_times_every_rule_and_checks_each_peer_against_ours(capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("byzfl", reason="the bench extra (pip install 'fl-lightning[bench]') brings ByzFL")
    pytest.importorskip("byzpy", reason="ByzPy comes with the bench extra's note: pip install --no-deps byzpy==0.1.4")
    report = _script("peers").main(["--quick"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))
    assert report["missing"] == []
    rules = {row["rule"] for row in report["results"]}
    assert rules == {"median", "trimmed_mean", "krum", "multi_krum", "krum_float32", "multi_krum_float32",
                     "geometric_median", "geometric_median_3", "centered_clipping", "mda", "monna", "nnm", "nnm_float32", "arc"}
    for row in report["results"]:
        assert row["ours_s"] > 0
        for peer in ("byzfl", "byzpy"):
            cell = row[peer]
            assert isinstance(cell, dict), (row["rule"], peer, cell)
            assert cell["seconds"] > 0 and cell["peer_over_ours"] > 0
            assert cell.get("agrees", True), (row["rule"], peer, cell)


def test_a_missing_peer_is_reported_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    peers = _script("peers")
    monkeypatch.setitem(sys.modules, "byzpy", None)          # import byzpy now raises ImportError
    found = peers.available_peers()
    assert found["byzpy"] is None
    row = peers.run_cell("median", 5, 64, 1, 1, found)
    assert row["byzpy"] == "missing"


def test_gpu_script_dry_run_includes_the_peers_part(capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("byzfl", reason="the bench extra (pip install 'fl-lightning[bench]') brings ByzFL")
    import torch

    threads = torch.get_num_threads()
    try:
        status = _script("gpu").main(["--dry-run-on-cpu", "--parts", "peers", "--peer-ks", "7", "--peer-n", "300",
                                      "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    part = json.loads(capsys.readouterr().out)["peers"]
    assert part["all_agree"] is True
    assert {row["rule"] for row in part["results"]} >= {"median", "krum", "geometric_median"}


def test_a_peer_failing_on_the_timed_input_is_reported_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    peers = _script("peers")

    def too_big(u):                       # warm-up runs on 256 columns; the timed call gets all of them
        if u.shape[1] > 256:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 32000000000 bytes")
        return u.median(dim=0).values

    monkeypatch.setattr(peers, "byzfl_rule", lambda rule, k: peers.Contender(too_big))
    row = peers.run_cell("median", 5, 1000, 1, 2, {"byzfl": "0", "byzpy": None})
    assert "can't allocate memory" in row["byzfl"]["error"]
    assert row["ours_s"] > 0 and row["byzpy"] == "missing"


def test_a_peer_that_writes_into_its_input_gets_a_fresh_copy_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    peers = _script("peers")
    seen: list[float] = []

    def doubles_in_place(u):
        seen.append(float(u.abs().sum()))
        return u.mul_(2)[0]

    monkeypatch.setattr(peers, "byzfl_rule", lambda rule, k: peers.Contender(doubles_in_place, mutates=True))
    peers.run_cell("median", 5, 1000, 1, 3, {"byzfl": "0", "byzpy": None})
    assert len(seen) == 4 and len(set(seen[1:])) == 1         # warm-up, then three calls on the same values


def test_float64_neighbour_check_reports_ours_and_each_peer_or_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script("neighbours_float64")
    monkeypatch.setitem(sys.modules, "byzpy", None)           # one peer missing: reported, not fatal
    for rule in ("nnm", "monna"):
        report = script.check(rule, 10, 3000)
        assert report["ours_max_abs_error"] < 1e-5, report
        assert report["byzpy_max_abs_error"] == "missing"
        assert report["smallest_relative_gap_at_the_boundary"] > 0
        assert isinstance(report["byzfl_max_abs_error"], float) or report["byzfl_max_abs_error"] == "missing"
