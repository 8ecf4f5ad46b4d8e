"""Lightning's precision names for the lean loop: autocast around the step, float32 weights, a scaler for fp16."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

#: precisions that keep float32 weights, so the flat ``[N]`` layout of the module is unchanged
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def autocast(device: torch.device, precision: str) -> ContextManager:
    """The forward's autocast context for ``precision`` on ``device`` (a no-op for ``"32-true"``)."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> "torch.amp.GradScaler | None":
    """A fresh gradient scaler for ``"16-mixed"`` on CUDA (fp16 gradients underflow without one), else ``None``."""
    if precision == "16-mixed" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
