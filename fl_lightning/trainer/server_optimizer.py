"""The server optimizer: a ``torch.optim.Optimizer`` that steps the global model with the aggregate.

The aggregate ``u`` (the rule's update, ``[N]``) is the negative pseudo-gradient: the optimizer's
parameters are views into the global vector, each gets ``grad = -u`` over its slice and one
``step()`` moves the global model. ``SGD(lr=1)`` is ``global += u``, the default without an optimizer;
``SGD(lr, momentum)`` is FedAvgM, :class:`~fl_lightning.optim.ServerAdam` FedAdam,
:class:`~fl_lightning.optim.Yogi` FedYogi and ``Adagrad(lr, eps=tau)`` FedAdagrad (Reddi et al. 2021).
"""
from __future__ import annotations

import copy
import functools
import importlib
from typing import Any, Callable, Iterable, Mapping, Union

import torch
from torch import Tensor

from fl_lightning.param_layout import ParamLayout

#: how a server optimizer is given: a callable ``params -> Optimizer`` (a class, a ``functools.partial``,
#: Lightning's ``OptimizerCallable``), a ``(class, kwargs)`` pair, or a ``{"class_path", "init_args"}`` dict
ServerOptimizerSpec = Union[Callable[[Iterable[Tensor]], torch.optim.Optimizer], tuple, Mapping[str, Any]]


def as_optimizer_factory(spec: ServerOptimizerSpec, owner: str = "FederatedTrainer") -> Callable[..., Any]:
    """A callable ``params -> Optimizer`` from any accepted form; ``TypeError`` naming the fix otherwise."""
    if isinstance(spec, Mapping):
        if "class_path" not in spec:
            raise TypeError(f"{owner}: server_optimizer as a dict needs 'class_path' (and optional 'init_args'), "
                            f"got keys {sorted(spec)}")
        cls = _import_class(str(spec["class_path"]), owner)
        return functools.partial(cls, **dict(spec.get("init_args") or {}))
    if isinstance(spec, tuple):
        if len(spec) != 2 or not callable(spec[0]) or not isinstance(spec[1], Mapping):
            raise TypeError(f"{owner}: server_optimizer as a tuple must be (optimizer class, kwargs dict), "
                            f"got {spec!r}")
        return functools.partial(spec[0], **dict(spec[1]))
    if isinstance(spec, torch.optim.Optimizer):
        raise TypeError(f"{owner}: server_optimizer must build the optimizer on the global model's parameters; pass "
                        f"its class and arguments, e.g. functools.partial(torch.optim.SGD, lr=1.0, momentum=0.9) "
                        f"or (torch.optim.SGD, {{'lr': 1.0}}), not an instance built on other parameters")
    if not callable(spec):
        raise TypeError(f"{owner}: server_optimizer must be a torch.optim.Optimizer class with its arguments "
                        f"(a partial, a (class, kwargs) tuple or class_path/init_args), got {type(spec).__name__}")
    return spec


def _import_class(path: str, owner: str) -> Any:
    if "." not in path:
        path = f"torch.optim.{path}" if hasattr(torch.optim, path) else f"fl_lightning.optim.{path}"
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise TypeError(f"{owner}: server_optimizer class_path {path!r} cannot be imported ({exc}); name a "
                        "torch.optim.Optimizer such as torch.optim.SGD or fl_lightning.optim.Yogi") from exc


class ServerOptimizer:
    """An optimizer over views of the global parameter vector; stateful for checkpoints."""

    def __init__(self, spec: ServerOptimizerSpec, params: Tensor, layout: ParamLayout) -> None:
        factory = as_optimizer_factory(spec)
        self.params = params
        self.slices = [spec_.slice for spec_ in layout.params]
        self.views = [params[s].view(spec_.shape) for s, spec_ in zip(self.slices, layout.params)]
        optimizer = factory(self.views)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"FederatedTrainer: server_optimizer built a {type(optimizer).__name__}, not a "
                            "torch.optim.Optimizer")
        self.optimizer = optimizer

    def step(self, update: Tensor) -> None:
        """``grad = -update`` on every view, one optimizer step (the global vector moves in place)."""
        for view, s in zip(self.views, self.slices):
            view.grad = update[s].neg().view_as(view)
        self.optimizer.step()
        for view in self.views:
            view.grad = None

    def snapshot(self) -> tuple[Tensor, dict[str, Any]]:
        """The parameters and the optimizer state, to undo a step whose result is not finite."""
        return self.params.clone(), copy.deepcopy(self.optimizer.state_dict())

    def restore(self, snapshot: tuple[Tensor, dict[str, Any]]) -> None:
        """Undo to :meth:`snapshot`'s values."""
        params, state = snapshot
        self.params.copy_(params)
        self.optimizer.load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's ``state_dict`` with its tensors on the CPU (a GPU run resumes anywhere)."""
        return _to_cpu(self.optimizer.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (torch moves the tensors to the parameters' device)."""
        self.optimizer.load_state_dict(state)

    def __repr__(self) -> str:
        defaults = {k: v for k, v in self.optimizer.defaults.items()
                    if k not in ("foreach", "differentiable", "fused", "capturable", "maximize")}
        return f"{type(self.optimizer).__name__}({', '.join(f'{k}={v}' for k, v in defaults.items())})"


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def fedavgm(lr: float = 1.0, momentum: float = 0.9) -> Callable[..., torch.optim.Optimizer]:
    """FedAvgM (Hsu et al. 2019; Flower's ``FedAvgM``): SGD with momentum, the first step's buffer the gradient."""
    return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum)


def fedadam(lr: float = 1e-1, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-9
            ) -> Callable[..., torch.optim.Optimizer]:
    """FedAdam as Flower's ``FedAdam`` (eta, beta_1, beta_2, tau)."""
    from fl_lightning.optim import ServerAdam

    return functools.partial(ServerAdam, lr=lr, betas=betas, eps=eps)


def fedyogi(lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-3
            ) -> Callable[..., torch.optim.Optimizer]:
    """FedYogi as Flower's ``FedYogi`` (eta, beta_1, beta_2, tau)."""
    from fl_lightning.optim import Yogi

    return functools.partial(Yogi, lr=lr, betas=betas, eps=eps)


def fedadagrad(lr: float = 1e-1, eps: float = 1e-9) -> Callable[..., torch.optim.Optimizer]:
    """FedAdagrad as Flower's ``FedAdagrad`` (eta, tau): ``torch.optim.Adagrad`` with no lr decay."""
    return functools.partial(torch.optim.Adagrad, lr=lr, eps=eps)
