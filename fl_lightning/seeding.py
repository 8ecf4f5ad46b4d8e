"""Every random choice of a run is derived from the one ``seed`` by name, so that resume is exact."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *path: object) -> int:
    """A 63-bit seed for the random choice named by ``path`` (e.g. ``("client", round, id)``).

    Examples:
        >>> derive_seed(0, "sample", 3) == derive_seed(0, "sample", 3)  # the same name, the same seed
        True
        >>> derive_seed(0, "sample", 3) == derive_seed(0, "sample", 4)
        False
        >>> 0 <= derive_seed(0, "sample", 3) < 2**63
        True
    """
    text = ":".join(str(p) for p in (seed, *path)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def numpy_rng(seed: int, *path: object) -> np.random.Generator:
    """A numpy generator for the random choice named by ``path``."""
    return np.random.default_rng(derive_seed(seed, *path))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators, as ``lightning.seed_everything`` does.

    The round loop never draws from them (every choice comes from :func:`derive_seed`); this is for
    code outside our control, above all a model's initial weights. ``FederatedTrainer(seed_everything=True)``
    (opt-in, as in Lightning) calls it with the run's seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
