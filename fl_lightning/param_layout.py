"""Where each tensor of a model lives inside the flat ``[N]`` vectors that aggregators see."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ParamSpec:
    """One named tensor of the model and its slice ``[offset, offset + numel)`` in the flat vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int

    @property
    def slice(self) -> slice:
        """The columns of the ``[K, N]`` matrix that hold this tensor."""
        return slice(self.offset, self.offset + self.numel)


@dataclass(frozen=True)
class ParamLayout:
    """Flat layout of a module's state, split into the three kinds of state a round treats differently.

    * ``params``: trainable floating-point parameters; their updates are aggregated robustly.
    * ``buffers``: floating-point buffers (BatchNorm running stats); averaged with FedAvg weights.
    * ``int_buffers``: integer buffers (``num_batches_tracked``); always taken from the global model.
    """

    params: tuple[ParamSpec, ...]
    buffers: tuple[ParamSpec, ...]
    int_buffers: tuple[str, ...]

    @staticmethod
    def from_module(module: nn.Module) -> "ParamLayout":
        """Read the layout of ``module`` in ``named_parameters`` / ``named_buffers`` order."""
        params = _specs((n, p) for n, p in module.named_parameters() if p.is_floating_point())
        float_buffers = [(n, b) for n, b in module.named_buffers() if b.is_floating_point()]
        int_buffers = tuple(n for n, b in module.named_buffers() if not b.is_floating_point())
        return ParamLayout(params, _specs(float_buffers), int_buffers)

    @staticmethod
    def from_shapes(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> "ParamLayout":
        """A layout of trainable parameters only, from names and shapes (e.g. a Flower model's arrays)."""
        if len(names) != len(shapes):
            raise ValueError(f"from_shapes needs one name per shape, got {len(names)} names and {len(shapes)} shapes")
        if len(set(names)) != len(names):
            raise ValueError(f"from_shapes needs distinct names, got {list(names)}")
        specs, offset = [], 0
        for name, shape in zip(names, shapes):
            shape = tuple(int(d) for d in shape)
            numel = math.prod(shape)
            specs.append(ParamSpec(name, shape, offset, numel))
            offset += numel
        return ParamLayout(tuple(specs), (), ())

    @property
    def num_params(self) -> int:
        """N: the number of trainable scalars, the width of the update matrix."""
        return sum(s.numel for s in self.params)

    @property
    def num_buffers(self) -> int:
        """The number of floating-point buffer scalars."""
        return sum(s.numel for s in self.buffers)

    def param(self, name: str) -> ParamSpec:
        """The spec of parameter ``name``; raises ``KeyError`` listing the valid names."""
        for spec in self.params:
            if spec.name == name:
                return spec
        raise KeyError(f"no parameter {name!r}; the model has {[s.name for s in self.params]}")

    def output_layer_weight(self) -> ParamSpec:
        """The last weight matrix (the output layer's weight), as FoolsGold uses it."""
        weights = [s for s in self.params if len(s.shape) >= 2]
        return weights[-1] if weights else self.params[-1]

    def signature(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and shapes, to compare two layouts (e.g. a checkpoint's and a model's)."""
        return [(s.name, s.shape) for s in self.params + self.buffers]


def _specs(named: Iterator[tuple[str, Tensor]] | list[tuple[str, Tensor]]) -> tuple[ParamSpec, ...]:
    specs, offset = [], 0
    for name, tensor in named:
        specs.append(ParamSpec(name, tuple(tensor.shape), offset, tensor.numel()))
        offset += tensor.numel()
    return tuple(specs)


def module_tensors(module: nn.Module, specs: tuple[ParamSpec, ...], kind: str) -> list[Tensor]:
    """The live tensors of ``module`` named by ``specs`` (``kind`` is "params" or "buffers")."""
    source = dict(module.named_parameters()) if kind == "params" else dict(module.named_buffers())
    return [source[s.name] for s in specs]


@torch.no_grad()
def flatten_into(tensors: list[Tensor], out: Tensor) -> Tensor:
    """Copy ``tensors`` into the preallocated flat vector ``out`` (no intermediate concatenation)."""
    offset = 0
    for t in tensors:
        n = t.numel()
        out[offset:offset + n].copy_(t.reshape(-1))
        offset += n
    return out


def flatten(tensors: list[Tensor]) -> Tensor:
    """A new flat float32 vector holding ``tensors`` one after another."""
    total = sum(t.numel() for t in tensors)
    return flatten_into(tensors, torch.empty(total, dtype=torch.float32))


@torch.no_grad()
def load_flat_(tensors: list[Tensor], flat: Tensor) -> None:
    """Write ``flat`` back into ``tensors`` in place (the inverse of :func:`flatten_into`)."""
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n
