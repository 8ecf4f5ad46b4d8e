"""What the run's trust checks cost beside the work they guard: the layout guard after each local step, and the
fingerprints that catch a plug-in writing in place (two per attack call and per aggregation).

Prints one JSON object: for each model, the guard's cost per check next to one local SGD step, and the
fingerprint of a ``[K, N]`` update matrix next to the round's own finite scan of it (``torch.isfinite``).
Medians of interleaved repetitions (the machine may be shared).

    python benchmarks/trust_checks.py
"""
from __future__ import annotations

import json
import statistics
import time
from typing import Callable


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(name: str, k: int, batch: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Guard, step, fingerprint and finite-scan timings for one model."""
    import torch
    import torch.nn.functional as F

    from fl_lightning.engines.module_weights import ModuleWeights
    from fl_lightning.models import PaperCNN, ResNet18
    from fl_lightning.param_layout import ParamLayout
    from fl_lightning.tamper import row_fingerprints

    torch.manual_seed(0)
    module = PaperCNN() if name == "PaperCNN" else ResNet18()
    weights = ModuleWeights(module, ParamLayout.from_module(module))
    x, y = torch.randn(*batch), torch.randint(0, 10, (batch[0],))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01)

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(module(x), y).backward()
        optimizer.step()

    n = weights.layout.num_params
    updates = torch.randn(k, n)
    guard = _median_seconds(weights.guard.difference, repeats * 20)
    step_s = _median_seconds(step, repeats)
    fingerprint = _median_seconds(lambda: row_fingerprints(updates), repeats)
    scan = _median_seconds(lambda: torch.isfinite(updates).all(dim=1), repeats)
    return {"num_params": n, "k": k, "batch": list(batch), "guard_us": guard * 1e6, "step_ms": step_s * 1e3,
            "guard_share_of_step": guard / step_s, "fingerprint_ms": fingerprint * 1e3,
            "finite_scan_ms": scan * 1e3, "fingerprint_over_scan": fingerprint / scan}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    out = {"torch": torch.__version__, "threads": 1,
           "PaperCNN": measure("PaperCNN", k=10, batch=(128, 1, 28, 28), repeats=15),
           "ResNet18": measure("ResNet18", k=4, batch=(16, 3, 32, 32), repeats=5)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
