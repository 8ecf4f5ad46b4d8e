"""Test-wide settings that must hold before any test imports an optional back-end."""
import os
from typing import Iterator

import pytest

# A local Ray (ray.init() without an address) binds the machine's interface address on Linux unless
# Ray believes multi-node clusters are off; tests must stay on 127.0.0.0/8, so they turn it off. The
# two-node cluster test runs in a private network namespace that holds only loopback and sets it on.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny models gain nothing from more, which stall badly on a shared machine."""
    from fl_lightning.engines.base import torch_threads

    with torch_threads(1):
        yield
