"""Pre-aggregators: transform the round's updates, then hand them to any other rule (``inner``)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from fl_lightning.aggregators._common import check_updates
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import arc_scales, bucket_indices, nnm_weights
from fl_lightning.checks import check_bool, check_instance, check_int
from fl_lightning.context import RoundContext, SetupContext
from fl_lightning.seeding import derive_seed


def _all_rows(k: int, device: torch.device) -> Tensor:
    """The finite mask of rows built from finite rows only (the transformed rows ``inner`` sees)."""
    return torch.ones(k, dtype=torch.bool, device=device)


class PreAggregator(Aggregator):
    """Base of the pre-aggregators: drops non-finite rows, transforms the rest, aggregates them with
    ``inner`` and maps ``inner``'s client weights and flags back to the round's clients."""

    def __init__(self, inner: Aggregator) -> None:
        self.inner = check_instance(inner, Aggregator, "inner", type(self).__name__,
                                    hint="wrap another rule, e.g. NNM(TrimmedMean(0.1), f=2)")

    @property
    def root_samples(self) -> int:  # type: ignore[override]
        """The inner rule's root set (FLTrust wrapped in a pre-aggregator still needs one)."""
        return self.inner.root_samples

    def inner_clients(self, clients_per_round: int) -> int:
        """How many rows ``inner`` sees when the round has ``clients_per_round`` clients."""
        return clients_per_round

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        """The fewest clients for which ``inner`` gets enough rows."""
        k = 1
        while self.inner_clients(k) < self.inner.min_clients:
            k += 1
        return k

    def validate(self, clients_per_round: int) -> None:
        """Check this pre-aggregator's own condition and ``inner``'s on the rows it will see."""
        self.inner.validate(self.inner_clients(clients_per_round))

    def setup(self, ctx: SetupContext) -> None:
        """Validate, then set ``inner`` up on the rows it will see."""
        self.validate(ctx.clients_per_round)
        self.inner.setup(dataclasses.replace(ctx, clients_per_round=self.inner_clients(ctx.clients_per_round)))

    def transform(self, updates: Tensor, ctx: RoundContext) -> tuple[Tensor, RoundContext, Tensor]:
        """``(rows for inner, their context, [K_rows, K] float64 map from row weights to client weights)``."""
        raise NotImplementedError

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """``inner``'s aggregate of the transformed finite rows; weights and flags per client."""
        finite = check_updates(updates, type(self).__name__, ctx)
        keep = torch.nonzero(finite).flatten()
        rows_in = updates if bool(finite.all()) else updates.index_select(0, keep)
        sub_ctx = dataclasses.replace(ctx.select(keep.tolist()), finite=_all_rows(keep.numel(), updates.device))
        rows, inner_ctx, to_clients = self.transform(rows_in, sub_ctx)
        result = self.inner.aggregate(rows, inner_ctx)
        k = updates.shape[0]
        weights = None
        if result.client_weights is not None:
            weights = torch.zeros(k, device=updates.device)
            weights[keep] = (result.client_weights.double() @ to_clients).float()
        flagged = torch.ones(k, dtype=torch.bool, device=updates.device)
        inner_flagged = result.diagnostics.get("flagged")
        if inner_flagged is not None:
            flagged[keep] = (inner_flagged.double() @ (to_clients > 0).double()) > 0
        else:
            flagged[keep] = False
        diagnostics = {**{key: v for key, v in result.diagnostics.items() if key != "flagged"}, "flagged": flagged}
        return AggregationResult(result.update, weights, diagnostics)

    def hparams(self) -> dict[str, Any]:
        """Own hyper-parameters plus ``inner`` as its repr."""
        return {**super().hparams(), "inner": repr(self.inner)}

    def __repr__(self) -> str:
        own = ", ".join(f"{k}={v!r}" for k, v in super().hparams().items())
        return f"{type(self).__name__}({self.inner!r}, {own})"

    def state_dict(self) -> dict[str, Any]:
        """``inner``'s state."""
        return {"inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``inner``'s state."""
        self.inner.load_state_dict(state.get("inner", {}))


class Bucketing(PreAggregator):
    """Bucketing (Karimireddy et al., ICLR 2022, Algorithm 1): shuffle the clients, average them ``s`` at a
    time and aggregate the ``ceil(K / s)`` bucket means with ``inner``. A client's weight is its bucket's
    weight divided by the bucket's size; every client of a flagged bucket is flagged.

    The shuffle is drawn from ``derive_seed(ctx.seed, "bucketing", ctx.round)``. ``inner`` sees the
    buckets as clients ``0..B-1`` with the summed sample counts, so a rule that remembers clients by id
    (FoolsGold) remembers buckets instead.
    """

    def __init__(self, inner: Aggregator, s: int = 2) -> None:
        super().__init__(inner)
        self.s = check_int(s, "s (the bucket size)", "Bucketing", minimum=1)

    def inner_clients(self, clients_per_round: int) -> int:
        """``ceil(K / s)`` buckets."""
        return math.ceil(clients_per_round / self.s)

    def transform(self, updates: Tensor, ctx: RoundContext) -> tuple[Tensor, RoundContext, Tensor]:
        """The bucket means."""
        k = updates.shape[0]
        generator = torch.Generator().manual_seed(derive_seed(ctx.seed, "bucketing", ctx.round))
        buckets = bucket_indices(k, self.s, generator, updates.device)
        to_clients = torch.zeros(len(buckets), k, dtype=torch.float64, device=updates.device)
        for b, index in enumerate(buckets):
            to_clients[b, index] = 1.0 / index.numel()
        means = to_clients.to(updates.dtype) @ updates
        counts = torch.as_tensor(ctx.num_samples, dtype=torch.float64, device=updates.device)
        inner_ctx = dataclasses.replace(ctx, client_ids=list(range(len(buckets))),
                                        finite=_all_rows(len(buckets), updates.device),
                                        num_samples=torch.stack([counts[i].sum() for i in buckets]).float())
        return means, inner_ctx, to_clients


class NNM(PreAggregator):
    """Nearest-neighbour mixing (Allouah et al., AISTATS 2023, Algorithm 1): every update is replaced by the
    mean of its ``K - f`` nearest updates (itself included) before ``inner`` aggregates. A client's
    weight is the sum of the inner weights of the mixed rows it takes part in, ``M^T w``.

    Neighbours come from exact (float64) distances; ``exact=False`` takes them from one float32 Gram
    matrix (faster; near-equal distances may then pick other neighbours).
    """

    def __init__(self, inner: Aggregator, f: int = 1, exact: bool = True) -> None:
        super().__init__(inner)
        self.f = check_int(f, "f (the number of Byzantine clients tolerated)", "NNM", minimum=0)
        self.exact = check_bool(exact, "exact", "NNM")

    def validate(self, clients_per_round: int) -> None:
        """``ValueError`` unless ``K > f``, then ``inner``'s check."""
        if clients_per_round <= self.f:
            raise ValueError(f"NNM needs K > f clients per round: f={self.f}, got K={clients_per_round}")
        super().validate(clients_per_round)

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        """``max(f + 1, inner.min_clients)``."""
        return max(self.f + 1, self.inner.min_clients)

    def transform(self, updates: Tensor, ctx: RoundContext) -> tuple[Tensor, RoundContext, Tensor]:
        """The mixed rows."""
        mixing = nnm_weights(updates, self.f, finite=_all_rows(updates.shape[0], updates.device), exact=self.exact)
        mixed_ctx = dataclasses.replace(ctx, finite=_all_rows(len(mixing), updates.device))
        return mixing.to(updates.dtype) @ updates, mixed_ctx, mixing


class ARC(PreAggregator):
    """Adaptive robust clipping (Allouah et al. 2024, Algorithm ARC): the ``floor(2 (f / K) (K - f))``
    largest updates are clipped to the norm of the next largest before ``inner`` aggregates."""

    def __init__(self, inner: Aggregator, f: int = 1) -> None:
        super().__init__(inner)
        self.f = check_int(f, "f (the number of Byzantine clients tolerated)", "ARC", minimum=0)

    def transform(self, updates: Tensor, ctx: RoundContext) -> tuple[Tensor, RoundContext, Tensor]:
        """The clipped rows."""
        k, device = updates.shape[0], updates.device
        scales = arc_scales(updates, self.f, finite=_all_rows(k, device))
        clipped = updates * scales.to(updates.dtype).unsqueeze(1)
        return clipped, dataclasses.replace(ctx, finite=_all_rows(k, device)), torch.eye(k, dtype=torch.float64,
                                                                                         device=device)
