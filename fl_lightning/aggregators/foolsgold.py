"""FoolsGold: down-weight clients whose update histories look alike (sybils)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fl_lightning.aggregators._common import check_updates
from fl_lightning.aggregators.base import AggregationResult, Aggregator, flag_by_weight
from fl_lightning.aggregators.functional import fedavg, foolsgold_weights
from fl_lightning.checks import check_bool, check_choice, check_positive
from fl_lightning.context import RoundContext, SetupContext


class FoolsGold(Aggregator):
    """FoolsGold (Fung et al. 2018) with a memory of each client's summed updates across rounds.

    Similarity is measured on ``param`` (default: the output layer's weight,
    ``ctx.layout.output_layer_weight()``), over each client's accumulated history when
    ``use_memory``. The weights scale the client updates; like the reference, the weighted sum is
    divided by K (the number of finite updates); ``normalize=True`` divides by the sum of the weights.
    ``client_weights`` reports the weights scaled to sum 1; ``diagnostics["foolsgold_wv"]`` the raw ones.
    """

    def __init__(self, param: str | None = None, use_memory: bool = True, normalize: bool = False,
                 confidence: float = 1.0) -> None:
        if param is not None and not isinstance(param, str):
            raise TypeError(f"FoolsGold: param must be a parameter name (str) or None, got {param!r}")
        for flag, value in (("use_memory", use_memory), ("normalize", normalize)):
            check_bool(value, flag, "FoolsGold")
        check_positive(confidence, "confidence (the logit's scale)", "FoolsGold")
        self.param = param
        self.use_memory = use_memory
        self.normalize = normalize
        self.confidence = confidence
        self._memory: dict[int, Tensor] = {}

    def setup(self, ctx: SetupContext) -> None:
        """Check the clients per round and, at ``fit()`` start, that ``param`` names a model parameter."""
        super().setup(ctx)
        if self.param is not None and ctx.layout is not None:
            names = [spec.name for spec in ctx.layout.params]
            check_choice(self.param, names, "param (the parameter FoolsGold compares)", "FoolsGold")

    def features(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """The ``[K, D]`` columns FoolsGold compares: the chosen parameter of each client's update."""
        layout = getattr(ctx, "layout", None)
        if layout is None or layout.num_params != updates.shape[1]:
            if self.param is not None:
                raise ValueError(f"FoolsGold: cannot find parameter {self.param!r} without a layout "
                                 f"describing the {updates.shape[1]} columns")
            return updates
        spec = layout.param(self.param) if self.param is not None else layout.output_layer_weight()
        return updates[:, spec.slice]

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """Weight the clients by how unlike the others their (accumulated) updates are."""
        finite = check_updates(updates, "FoolsGold", ctx)
        feats = self.features(updates, ctx).double()
        ids = [int(c) for c in ctx.client_ids]
        if len(ids) != updates.shape[0]:
            raise ValueError(f"FoolsGold: ctx.client_ids has {len(ids)} ids for {updates.shape[0]} updates")
        history = feats.clone()
        if self.use_memory:
            for row, cid in enumerate(ids):
                if bool(finite[row]):
                    history[row] = self._remember(cid, feats[row])
        wv = foolsgold_weights(history, confidence=self.confidence, finite=finite).double()
        total = float(wv.sum())
        k = int(finite.sum())
        if total > 0:
            scale = 1.0 if self.normalize else total / k
            update = fedavg(updates, wv, finite=finite) * scale
            weights = (wv / total).float()
        else:
            update = torch.zeros(updates.shape[1], dtype=updates.dtype, device=updates.device)
            weights = torch.zeros(updates.shape[0], device=updates.device)
        flagged = flag_by_weight(weights, self.flag_fraction) | ~finite
        return AggregationResult(update.to(updates.dtype), weights if total > 0 else None,
                                 {"flagged": flagged, "foolsgold_wv": wv.float()})

    def _remember(self, client_id: int, feature: Tensor) -> Tensor:
        past = self._memory.get(client_id)
        if past is not None and past.shape != feature.shape:
            raise ValueError(f"FoolsGold: client {client_id}'s stored history has {past.numel()} values but "
                             f"this round's features have {feature.numel()}; the model changed, reset "
                             f"the aggregator (load_state_dict({{}}))")
        # a memory restored from a checkpoint sits on the CPU (map_location="cpu"); it joins the feature's device
        self._memory[client_id] = feature.clone() if past is None else past.to(feature.device) + feature
        return self._memory[client_id]

    def state_dict(self) -> dict[str, Any]:
        """The per-client memory: ``client_ids`` and the stacked ``memory`` rows (float64)."""
        ids = sorted(self._memory)
        memory = torch.stack([self._memory[i] for i in ids]) if ids else torch.zeros(0, 0, dtype=torch.float64)
        return {"client_ids": torch.tensor(ids, dtype=torch.long), "memory": memory}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the memory saved by :meth:`state_dict` (an empty dict clears it)."""
        if not state:
            self._memory = {}
            return
        ids, memory = state.get("client_ids"), state.get("memory")
        if ids is None or memory is None or len(ids) != (memory.shape[0] if memory.dim() else 0):
            raise ValueError("FoolsGold.load_state_dict expects 'client_ids' [M] and 'memory' [M, D] "
                             "as returned by state_dict()")
        self._memory = {int(i): row.clone().double() for i, row in zip(ids, memory)}
