"""FoolsGold's per-client weights from the similarity of the clients' histories."""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.aggregators.functional._base import _all_or_mask, _finite_mask, _gram
from fl_lightning.checks import check_positive


#: cosine similarities closer than this are equal (float64 rounding of a normalised dot product
#: is ~1e-16 per term; features summed over many rounds stay far above this)
_SIMILARITY_NOISE = 1e-9


def foolsgold_weights(features: Tensor, *, confidence: float = 1.0, finite: Tensor | None = None) -> Tensor:
    """FoolsGold's per-client weights in [0, 1] (Fung et al. 2018, Algorithm 1), one round, ``[K]``.

    Cosine similarity of the clients' feature vectors (their summed updates of the output layer);
    each client's largest similarity, "pardoning" of honest clients similar to a sybil
    (``cs_ij *= max_i / max_j`` where ``max_i < max_j``), ``1 - max``, clipped to [0, 1] and divided by
    the largest; then the logit ``confidence * (ln(w / (1 - w)) + 0.5)`` clipped to [0, 1] (a weight
    of exactly 1 becomes 0.99 first). Non-finite rows get 0 and take no part.
    """
    name = "foolsgold_weights"
    check_positive(confidence, "confidence", name)
    mask = _finite_mask(features, name, finite)
    k = features.shape[0]
    # cosine similarities from a float64 Gram matrix accumulated over column chunks: normalising a
    # float64 copy of the features first would cost twice their memory
    gram = _gram(features, _all_or_mask(mask))
    norms = gram.diagonal().sqrt().clamp_min(torch.finfo(torch.float64).tiny)
    sim = (gram / norms.unsqueeze(1) / norms.unsqueeze(0)).fill_diagonal_(0.0)
    top = sim.max(dim=1).values
    # a gap below float noise is no gap: clients that are exact twins of each other must be treated
    # alike, whichever of them rounding happened to favour
    pardon = top.unsqueeze(1) < top.unsqueeze(0) - _SIMILARITY_NOISE
    sim = torch.where(pardon, sim * top.unsqueeze(1) / top.unsqueeze(0).clamp_min(1e-300), sim)
    wv = (1 - sim.max(dim=1).values).clamp(0, 1)
    wv = torch.where(wv < _SIMILARITY_NOISE, torch.zeros_like(wv), wv)
    out = torch.zeros(k, dtype=torch.float64, device=features.device)
    if not wv.max() > 0:
        return out.to(features.dtype)
    wv = wv / wv.max()
    wv = torch.where(wv == 1, torch.full_like(wv, 0.99), wv)
    wv = (confidence * (torch.log(wv / (1 - wv)) + 0.5)).clamp(0, 1)
    out[mask] = wv
    return out.to(features.dtype)

