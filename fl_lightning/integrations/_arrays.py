"""NumPy arrays as Flower carries them, to and from the flat float32 vectors the aggregators read."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def flat(arrays: list[np.ndarray], n: int) -> Tensor:
    """The ``arrays`` (``n`` values in all) concatenated into one float32 vector."""
    out = torch.empty(n, dtype=torch.float32)
    offset = 0
    for a in arrays:
        out[offset:offset + a.size] = torch.from_numpy(np.ascontiguousarray(a).reshape(-1)).float()
        offset += a.size
    return out
