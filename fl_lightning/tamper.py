"""Catch a plug-in writing in place into tensors it was lent: bit fingerprints taken before its call, compared after.

Torch has no read-only tensors, and copying the ``[K, N]`` update matrix for every attack would double the
round's peak memory. A fingerprint is one ``int64`` per row: the sum over columns of each value's bit
pattern times an odd per-column weight, in the bits' own integer width (wrapping arithmetic), taken
in chunks of columns. Any single changed value changes it (odd weights are invertible modulo 2^b),
NaN payloads included.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor

from fl_lightning.context import RoundContext

_INT_OF = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_MULTIPLIER = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64 (the golden-ratio hash constant)
#: values per chunk: the int64 temporaries stay a few tens of MB whatever K and N
_CHUNK_VALUES = 1 << 22


def row_fingerprints(values: Tensor) -> Tensor:
    """``[K]`` int64 digests of the rows of a ``[K, N]`` tensor (a ``[N]`` vector gives one digest)."""
    matrix = values.detach().reshape(1, -1) if values.dim() < 2 else values.detach().reshape(values.shape[0], -1)
    floating_or_bool = matrix.is_floating_point() or matrix.dtype == torch.bool
    bits = matrix.view(_INT_OF[matrix.element_size()]) if floating_or_bool else matrix
    digest = torch.zeros(matrix.shape[0], dtype=torch.int64, device=matrix.device)
    width = max(1024, _CHUNK_VALUES // max(1, matrix.shape[0]))
    for chunk, start in enumerate(range(0, matrix.shape[1], width)):
        part = bits[:, start:start + width]
        weights = _odd_weights(part.shape[1], part.dtype, matrix.device)
        # products wrap in the bits' own width; the chunk's odd multiplier keeps chunks apart
        digest += (part * weights).sum(dim=1, dtype=torch.int64) * (2 * chunk + 1)
    return digest


@functools.lru_cache(maxsize=4)
def _odd_weights(width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Odd per-column weights (a golden-ratio hash of the column), in the integer dtype of the bits."""
    weights = torch.arange(1, width + 1, dtype=torch.int64) * _MULTIPLIER | 1
    return weights.to(dtype).to(device)


class LentTensors:
    """Fingerprints of named tensors lent to a plug-in; :meth:`changed` names those written in place since."""

    def __init__(self, tensors: dict[str, Tensor | None]) -> None:
        self.tensors = {name: t for name, t in tensors.items() if isinstance(t, Tensor)}
        self.digests = {name: row_fingerprints(t) for name, t in self.tensors.items()}

    def changed(self, skip_rows: dict[str, Sequence[int]] | None = None) -> list[str]:
        """``"name"`` (or ``"name rows [..]"`` for a matrix) of every tensor that changed, ``skip_rows`` aside."""
        out = []
        for name, tensor in self.tensors.items():
            now, before = row_fingerprints(tensor), self.digests[name]
            differs = now != before
            for row in (skip_rows or {}).get(name, ()):
                differs[row] = False
            if bool(differs.any()):
                rows = torch.nonzero(differs).flatten().tolist()
                out.append(name if tensor.dim() < 2 else f"{name} rows {rows}")
        return out


def lent_context(ctx: RoundContext) -> dict[str, Tensor | None]:
    """The round's tensors a plug-in may read but never write: the global model, sample counts, reference."""
    return {"ctx.global_params": ctx.global_params, "ctx.num_samples": ctx.num_samples,
            "ctx.reference_update": ctx.reference_update, "ctx.finite": ctx.finite}
