"""Server optimizers of adaptive federated optimization (Reddi et al. 2021) that ``torch.optim`` lacks.

Both step ``x -= lr * m / (sqrt(v) + eps)`` with ``m = b1 m + (1 - b1) g``, the form of Reddi et al.'s
Algorithm 2 (``eps`` is their tau, outside the root), which Flower's ``FedYogi`` and ``FedAdam`` follow.
``torch.optim.SGD(momentum=b)`` is FedAvgM and ``torch.optim.Adagrad(eps=tau)`` is FedAdagrad as they are.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor


class _AdaptiveServerOptimizer(torch.optim.Optimizer):
    """First moment, a second moment the subclass updates, and the step ``lr * m / (sqrt(v) + eps)``."""

    def __init__(self, params: Iterable[Tensor], lr: float, betas: tuple[float, float], eps: float,
                 initial_accumulator_value: float = 0.0) -> None:
        name = type(self).__name__
        if not lr > 0:
            raise ValueError(f"{name}: lr must be > 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"{name}: betas must be in [0, 1), got {tuple(betas)}")
        if not eps > 0:
            raise ValueError(f"{name}: eps (tau) must be > 0, got {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      initial_accumulator_value=initial_accumulator_value))

    def _second_moment(self, v: Tensor, g2: Tensor, beta2: float) -> None:
        raise NotImplementedError

    def _scale(self, group: dict, step: int) -> float:
        return group["lr"]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step on every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.full_like(p, group["initial_accumulator_value"])
                state["step"] += 1
                state["exp_avg"].mul_(beta1).add_(g, alpha=1 - beta1)
                self._second_moment(state["exp_avg_sq"], g * g, beta2)
                denom = state["exp_avg_sq"].sqrt().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-self._scale(group, int(state["step"])))
        return loss


class Yogi(_AdaptiveServerOptimizer):
    """Yogi (Zaheer et al. 2018) as FedYogi's server step: ``v -= (1 - b2) g^2 sign(v - g^2)``.

    Defaults are Flower's ``FedYogi`` (eta 1e-2, betas 0.9 / 0.99, tau 1e-3, v starting at 0).
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-3, initial_accumulator_value: float = 0.0) -> None:
        super().__init__(params, lr, betas, eps, initial_accumulator_value)

    def _second_moment(self, v: Tensor, g2: Tensor, beta2: float) -> None:
        v.sub_(g2 * torch.sign(v - g2), alpha=1 - beta2)


class ServerAdam(_AdaptiveServerOptimizer):
    """Adam as FedAdam's server step: ``eps`` (tau) outside the root, unlike ``torch.optim.Adam``.

    ``bias_correction`` scales lr by ``sqrt(1 - b2^(t+1)) / (1 - b1^(t+1))`` at step ``t`` (1, 2, ...): Flower's
    ``FedAdam`` uses ``server_round + 1`` with rounds counted from 1, and this reproduces it; ``False`` is
    Reddi et al.'s Algorithm 2 without any correction. Defaults are Flower's (eta 0.1, tau 1e-9).
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-1, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-9, bias_correction: bool = True) -> None:
        super().__init__(params, lr, betas, eps)
        for group in self.param_groups:
            group["bias_correction"] = bias_correction

    def _second_moment(self, v: Tensor, g2: Tensor, beta2: float) -> None:
        v.mul_(beta2).add_(g2, alpha=1 - beta2)

    def _scale(self, group: dict, step: int) -> float:
        if not group.get("bias_correction", True):
            return group["lr"]
        beta1, beta2 = group["betas"]
        return group["lr"] * (1 - beta2 ** (step + 1)) ** 0.5 / (1 - beta1 ** (step + 1))


__all__ = ["ServerAdam", "Yogi"]
