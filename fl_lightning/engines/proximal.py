"""FedProx's proximal term (Li et al. 2020): ``mu/2 ||w - w_global||^2`` added to a client's training loss.

The module is not changed: the engine snapshots the weights the client starts from (the global model)
and adds the term to whatever ``training_step`` returns (the lean loop), or its gradient
``mu (w - w_global)`` to the gradients before each optimizer step (a ``lightning.Trainer``, whose loss
the engine does not see; the step is the same).
"""
from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


class ProximalTerm:
    """``mu/2 * sum ||p - p_global||^2`` over the module's trainable parameters, anchored at construction."""

    def __init__(self, module: L.LightningModule, mu: float) -> None:
        self.mu = float(mu)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.anchors = [p.detach().clone() for p in self.params]

    def __call__(self) -> Tensor:
        """The term, differentiable in the live parameters (float32 whatever the autocast dtype)."""
        total = sum(((p.float() - a.float()) ** 2).sum() for p, a in zip(self.params, self.anchors))
        return 0.5 * self.mu * total  # type: ignore[return-value]

    @torch.no_grad()
    def add_to_grads(self) -> None:
        """``grad += mu (p - p_global)``: the term's gradient, for loops that own the backward pass."""
        for p, a in zip(self.params, self.anchors):
            if p.grad is not None:
                p.grad.add_(p - a, alpha=self.mu)


def proximal_term(module: L.LightningModule, mu: float) -> ProximalTerm | None:
    """The term for ``mu > 0`` (anchored at the module's current weights), else ``None``."""
    return ProximalTerm(module, mu) if mu > 0 else None
