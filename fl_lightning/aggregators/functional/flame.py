"""FLAME: cluster the updates by direction, clip them to the median norm, add Gaussian noise."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from fl_lightning.aggregators.functional._base import (
    _all_or_mask, _draw_device, _gram, _require_finite, _weighted_rows,
)
from fl_lightning.aggregators.functional._order import _median0
from fl_lightning.checks import check_number


class FlameResult(NamedTuple):
    """The aggregate ``[N]``, the ``[K]`` bool mask of admitted rows and the clipping bound ``S_t``."""

    aggregate: Tensor
    admitted: Tensor
    clip_bound: float


def cosine_distances(updates: Tensor, *, finite: Tensor | None = None) -> Tensor:
    """``[K_f, K_f]`` float64 ``1 - cos`` between the finite rows (a zero row is at distance 1 from all)."""
    values, mask = _require_finite(updates, 1, "cosine_distances", finite)
    gram = _gram(updates, _all_or_mask(mask))
    norms = gram.diagonal().sqrt()
    scale = torch.where(norms > 0, 1 / norms, torch.zeros_like(norms))
    cosine = (gram * scale.unsqueeze(0) * scale.unsqueeze(1)).clamp(-1, 1)
    distances = (1 - cosine).fill_diagonal_(0.0)
    distances = (distances + distances.T) / 2
    # rounding of the norms leaves ~1e-16 where two rows point the same way: call that 0, so that the
    # clustering does not depend on it (nor on a common scale factor of the updates)
    return distances.masked_fill_(distances < 1e-12, 0.0)


def flame_details(updates: Tensor, *, noise: float = 0.001, generator: torch.Generator | None = None,
                  finite: Tensor | None = None) -> FlameResult:
    """FLAME (Nguyen et al., USENIX Security 2022, Algorithm 1) on client updates ``W_i - G``.

    1. HDBSCAN (scikit-learn, ``min_cluster_size = floor(K/2) + 1``, ``min_samples = 1``, single cluster
       allowed) on the pairwise cosine distances; the largest cluster is admitted, the rest are
       outliers (all are admitted if no cluster forms).
    2. ``S_t`` = the median of all the updates' L2 norms; each admitted update is scaled by
       ``min(1, S_t / ||W_i - G||)`` (eq. 4) and the clipped updates are averaged.
    3. Gaussian noise ``N(0, (noise * S_t)^2)`` is added to every coordinate (the paper's lambda = 0.001
       for image classification); ``generator`` draws it.
    """
    name = "flame"
    check_number(noise, "noise (lambda, the noise scale relative to the median norm)", name, low=0.0)
    values, mask = _require_finite(updates, 1, name, finite)
    k = values.shape[0]
    admitted = torch.ones(k, dtype=torch.bool, device=values.device)
    if k >= 2:
        from sklearn.cluster import HDBSCAN

        options = dict(min_cluster_size=k // 2 + 1, min_samples=1, metric="precomputed", allow_single_cluster=True)
        if "copy" in HDBSCAN().get_params():
            options["copy"] = False                # the distance matrix is ours to overwrite
        # scikit-learn clusters on the host; the labels come back to the updates' device
        labels = HDBSCAN(**options).fit(cosine_distances(updates, finite=mask).cpu().numpy()).labels_
        labels = torch.as_tensor(labels, device=values.device)
        clustered = labels[labels >= 0]
        if clustered.numel():
            admitted = labels == torch.bincount(clustered).argmax()
    norms = values.double().norm(dim=1)
    bound = float(_median0(norms.unsqueeze(1)))
    scale = torch.where(norms > bound, bound / norms.clamp_min(1e-300), torch.ones_like(norms))
    weights = torch.where(admitted, scale, torch.zeros_like(scale)) / int(admitted.sum())
    aggregate = _weighted_rows(weights, updates, _all_or_mask(mask))
    if noise > 0 and bound > 0:
        draws = torch.randn(aggregate.shape, generator=generator, dtype=aggregate.dtype,
                            device=_draw_device(generator))
        aggregate = aggregate + noise * bound * draws.to(aggregate.device)
    full = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    full[mask] = admitted
    return FlameResult(aggregate, full, bound)


def flame(updates: Tensor, *, noise: float = 0.001, generator: torch.Generator | None = None,
          finite: Tensor | None = None) -> Tensor:
    """FLAME: see :func:`flame_details`."""
    return flame_details(updates, noise=noise, generator=generator, finite=finite).aggregate
