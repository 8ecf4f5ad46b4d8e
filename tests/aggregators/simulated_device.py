"""A second device on a CPU-only machine, to catch tensors that stay on the CPU when the inputs live elsewhere.

CI has no GPU, and the ``meta`` device cannot run data-dependent ops (medians, ``nonzero``,
``.item()``), so neither can show that an aggregator keeps its work on the device of its inputs.
This module simulates one. :func:`to_device` wraps a CPU tensor in :class:`OnDevice`, a tensor
subclass that reports ``device == DEVICE`` (``meta``) but holds real CPU data. Inside
:class:`SimulatedDevice` every op is intercepted and behaves as it would on an accelerator:

* an op on a simulated tensor runs on its CPU data and returns simulated tensors;
* mixing a simulated tensor with a CPU tensor of one or more dimensions raises ``RuntimeError``
  ("expected all tensors to be on the same device"), as CUDA does; a 0-dim CPU tensor is allowed
  (CUDA takes CPU scalars), and so is ``copy_`` across devices;
* a factory call with ``device=DEVICE`` (``torch.zeros(k, device=x.device)``, ``torch.tensor([...],
  device=...)``, ``t.to(x.device)``) makes a simulated tensor; without ``device=`` it makes a CPU tensor;
* ``.cpu()`` / ``.to("cpu")`` return plain CPU tensors, ``.tolist()`` / ``.item()`` / ``float()`` work,
  and ``.numpy()`` raises ``TypeError`` as it does for a CUDA tensor;
* a CPU ``torch.Generator`` driving a draw on the device raises ``RuntimeError``, as on CUDA.

Modes are thread-local: code that runs ops on worker threads (the column-chunked rules split
inputs of 16 MiB and more over threads) must be given smaller inputs here.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

#: the device simulated tensors report (``meta`` needs no driver and no initialisation)
DEVICE = torch.device("meta")

#: Python-level constructors that copy their data to ``device`` below the dispatcher, out of a mode's sight
_DATA_CONSTRUCTORS = {torch.tensor, torch.as_tensor, torch.asarray}
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}


class OnDevice(torch.Tensor):
    """A tensor on the simulated :data:`DEVICE` whose values live in a CPU tensor (``_sim_data``)."""

    _sim_data: torch.Tensor

    @staticmethod
    def __new__(cls, data: torch.Tensor) -> "OnDevice":
        return torch.Tensor._make_wrapper_subclass(
            cls, data.shape, strides=data.stride(), storage_offset=data.storage_offset(), dtype=data.dtype,
            device=DEVICE, requires_grad=False)

    def __init__(self, data: torch.Tensor) -> None:
        self._sim_data = data

    __torch_function__ = torch._C._disabled_torch_function_impl

    def tolist(self) -> Any:
        """The values as Python numbers (a device tensor copies them to the host)."""
        return self._sim_data.tolist()

    def numpy(self, *args: Any, **kwargs: Any) -> Any:
        """Refused, as for a CUDA tensor."""
        raise TypeError(f"can't convert {DEVICE} device type tensor to numpy. Use Tensor.cpu() to copy the "
                        "tensor to host memory first.")

    def __repr__(self) -> str:
        return f"OnDevice({self._sim_data!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # type: ignore[override]
        return _run(func, args, kwargs or {})


def to_device(tensor: torch.Tensor) -> OnDevice:
    """``tensor`` (a CPU tensor) on the simulated device."""
    if isinstance(tensor, OnDevice):
        return tensor
    return OnDevice(tensor.detach().clone())


def on_device(value: Any) -> bool:
    """Whether ``value`` is a tensor on the simulated device."""
    return isinstance(value, OnDevice)


def to_cpu(value: Any) -> Any:
    """``value`` with every simulated tensor (also inside lists, tuples and dicts) back on the CPU."""
    return tree_map(lambda t: t._sim_data.clone() if isinstance(t, OnDevice) else t, value)


def _is_device(device: Any) -> bool:
    return device is not None and torch.device(device).type == DEVICE.type


def _writes_first_argument(func: Any) -> bool:
    arguments = func._schema.arguments
    alias = arguments[0].alias_info if arguments else None
    return bool(alias is not None and alias.is_write)


def _run(func: Any, args: tuple, kwargs: dict) -> Any:
    """Run one aten op as it would run on the device (see the module docstring)."""
    flat, _ = tree_flatten((args, kwargs))
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    simulated = [t for t in tensors if isinstance(t, OnDevice)]
    host = [t for t in tensors if not isinstance(t, OnDevice) and t.dim() > 0]
    copy = func in (torch.ops.aten.copy_.default, torch.ops.aten.copy.default)
    if simulated and host and not copy:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"{DEVICE} and cpu! ({func}: cpu tensors of shape "
                           f"{[tuple(t.shape) for t in host]})")
    first = args[0] if args else None
    if simulated and isinstance(first, torch.Tensor) and not isinstance(first, OnDevice) and not copy \
            and _writes_first_argument(func):
        raise RuntimeError(f"Expected all tensors to be on the same device: {func} writes a cpu tensor from "
                           f"{DEVICE} tensors")
    device = kwargs.get("device")
    to_sim = _is_device(device)
    generator = kwargs.get("generator")
    if generator is not None and (to_sim or simulated) and generator.device.type != DEVICE.type:
        raise RuntimeError(f"Expected a '{DEVICE.type}' device type for generator but found "
                           f"'{generator.device.type}' ({func})")
    if to_sim:
        kwargs = dict(kwargs, device=torch.device("cpu"))
    unwrap = (lambda t: t._sim_data if isinstance(t, OnDevice) else t)
    out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
    if copy or _writes_first_argument(func):
        if isinstance(first, OnDevice) and (first.shape, first.stride()) != (first._sim_data.shape,
                                                                           first._sim_data.stride()):
            _restride(func, args, kwargs)
        return first if isinstance(first, torch.Tensor) and isinstance(out, torch.Tensor) else out
    if not (to_sim or (simulated and device is None)):
        return out
    originals = {id(t._sim_data): t for t in simulated}

    def wrap(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and not isinstance(value, OnDevice):
            return originals[id(value)] if id(value) in originals else OnDevice(value)
        return value

    return tree_map(wrap, out)


def _restride(func: Any, args: tuple, kwargs: dict) -> None:
    """An in-place op that changed the data's shape (``squeeze_``, ``t_``...) changes the wrapper's alike.

    The wrapper reports :data:`DEVICE` (``meta``), so the op's own kernel, run below this module,
    updates its sizes and strides without touching any data.
    """
    with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python)):
        func(*args, **kwargs)


def _list_index(index: Any) -> Any:
    """A Python list inside an index as a long/bool tensor on the simulated device (what indexing makes of it)."""
    if isinstance(index, list):
        return OnDevice(torch.tensor(index, dtype=None if index else torch.long))
    if isinstance(index, tuple):
        return tuple(_list_index(i) for i in index)
    return index


class _DataConstructors(TorchFunctionMode):
    """What C++ builds below the dispatcher, out of a dispatch mode's sight: ``torch.tensor(data,
    device=DEVICE)`` and the tensor a Python list index becomes; built on the CPU, then simulated."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DATA_CONSTRUCTORS and _is_device(kwargs.get("device")) \
                and not (args and isinstance(args[0], torch.Tensor)):
            return OnDevice(func(*args, **dict(kwargs, device=torch.device("cpu"))))
        if func in _INDEXING and isinstance(args[0], OnDevice):
            args = (args[0], _list_index(args[1]), *args[2:])
        return func(*args, **kwargs)


class _Dispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


class SimulatedDevice:
    """While active, tensors behave as on an accelerator (see the module docstring)."""

    def __enter__(self) -> "SimulatedDevice":
        self._modes = [_DataConstructors(), _Dispatch()]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


# -- comparing a run on the simulated device with the same run on the CPU --------------------------------
def _leaves(value: Any, kind: tuple[type, ...], path: str = "result") -> list[tuple[str, Any]]:
    """``(path, leaf)`` of every leaf of type ``kind`` in nested dicts, lists and tuples (named tuples too)."""
    if isinstance(value, kind) and not isinstance(value, bool):
        return [(path, value)]
    if isinstance(value, dict):
        return [leaf for key, v in value.items() for leaf in _leaves(v, kind, f"{path}[{key!r}]")]
    if isinstance(value, (tuple, list)):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, kind, f"{path}[{i}]")]
    return []


def assert_same_on_device(on_dev: Any, on_cpu: Any) -> None:
    """Every tensor of ``on_dev`` is on the simulated device and equals (bit for bit) its twin in ``on_cpu``.

    Python numbers (a clipping bound, an iteration count) must match too.
    """
    left, right = _leaves(on_dev, (torch.Tensor,)), dict(_leaves(on_cpu, (torch.Tensor,)))
    assert [path for path, _ in left] == list(right), "the device run returned other tensors than the CPU run"
    for path, tensor in left:
        assert on_device(tensor), f"{path} is on {tensor.device}, not on the inputs' device {DEVICE}"
        assert tensor.shape == right[path].shape, f"{path} has shape {tuple(tensor.shape)} on the device"
        torch.testing.assert_close(to_cpu(tensor), right[path], rtol=0, atol=0, equal_nan=True, msg=path)
    numbers = dict(_leaves(on_cpu, (int, float)))
    for path, number in _leaves(on_dev, (int, float)):
        assert path in numbers and (number == numbers[path] or number != number and numbers[path] != numbers[path]), \
            f"{path}: {number} on the device, {numbers.get(path)} on the CPU"
