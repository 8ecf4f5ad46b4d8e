"""Bind a module's tensors to the flat layout: load the global weights in, flatten a trained client out,
and the loop that trains clients one after another on one module around those calls."""
from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor, nn

from fl_lightning.param_layout import ParamLayout, flatten_into, load_flat_, module_tensors

if TYPE_CHECKING:
    from fl_lightning.engines.base import ClientOutcome, ClientTask


class ModuleLayoutError(RuntimeError):
    """A module hook added, removed, replaced, resized or retyped a parameter or buffer during local training."""

    def __init__(self, hook: str, difference: str) -> None:
        super().__init__(f"{hook} changed the module's tensors: {difference}")
        self.hook = hook
        self.difference = difference


class LayoutGuard:
    """The module's tensors as the layout binds them, to check after each hook and to put back after a change.

    Aggregation reads every client through the tensors bound at ``fit()`` start; a hook that swaps one
    for a new tensor, adds one or resizes one makes the client's row meaningless (and leaks into the
    next client). :meth:`check` compares names, shapes, dtypes and identities; :meth:`restore` puts
    the bound tensors, submodules and shapes back so the next client starts from the layout again.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.expected = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        self.shapes = {name: (tuple(t.shape), t.dtype) for name, t in self.expected.items()}
        # every submodule's registries, to undo a replaced layer or an added / removed tensor
        self._registries = [(m, dict(m._parameters), dict(m._buffers), dict(m._modules))
                            for m in module.modules()]
        self._tensors = [(t, t.shape, t.dtype) for t in self.expected.values()]

    def unchanged(self) -> bool:
        """Whether every registry holds the bound objects and every tensor its shape and dtype (the fast check)."""
        for module, params, buffers, children in self._registries:
            for registry, saved in ((module._parameters, params), (module._buffers, buffers),
                                    (module._modules, children)):
                if len(registry) != len(saved) or any(registry.get(k) is not v for k, v in saved.items()):
                    return False
        return all(t.shape == shape and t.dtype == dtype for t, shape, dtype in self._tensors)

    def difference(self) -> str | None:
        """What differs from the bound layout (first few differences), or ``None``."""
        if self.unchanged():
            return None
        live = {**dict(self.module.named_parameters()), **dict(self.module.named_buffers())}
        problems = [f"added {name!r} {tuple(t.shape)}" for name, t in live.items() if name not in self.expected]
        problems += [f"removed {name!r}" for name in self.expected if name not in live]
        for name, tensor in live.items():
            if name not in self.expected:
                continue
            shape, dtype = self.shapes[name]
            if tuple(tensor.shape) != shape:
                problems.append(f"resized {name!r} from {shape} to {tuple(tensor.shape)}")
            elif tensor.dtype != dtype:
                problems.append(f"changed {name!r} from {dtype} to {tensor.dtype}")
            elif tensor is not self.expected[name]:
                problems.append(f"replaced {name!r} by a new tensor")
        if not problems:
            return None
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return "; ".join(problems[:3]) + more

    def check(self, hook: str) -> None:
        """Raise :class:`ModuleLayoutError` naming ``hook`` if the module's tensors no longer match the layout."""
        difference = self.difference()
        if difference is not None:
            raise ModuleLayoutError(hook, difference)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the bound tensors, submodules, shapes and dtypes (values are reloaded by the caller)."""
        for module, params, buffers, children in self._registries:
            for registry, saved in ((module._parameters, params), (module._buffers, buffers),
                                    (module._modules, children)):
                registry.clear()
                registry.update(saved)
        for name, tensor in self.expected.items():
            shape, dtype = self.shapes[name]
            if tuple(tensor.shape) != shape or tensor.dtype != dtype:
                tensor.data = torch.zeros(shape, dtype=dtype, device=tensor.device)


class ModuleWeights:
    """The live tensors of ``module`` in ``layout`` order: parameters, float buffers and integer buffers.

    Every engine trains a client the same way around these three calls: :meth:`load` the global
    weights, train, :meth:`write` the client's row of the output matrices.
    """

    def __init__(self, module: nn.Module, layout: ParamLayout) -> None:
        self.layout = layout
        self.params = module_tensors(module, layout.params, "params")
        self.buffers = module_tensors(module, layout.buffers, "buffers")
        named = dict(module.named_buffers())
        self.int_buffers = [named[name] for name in layout.int_buffers]
        self.guard = LayoutGuard(module)

    def int_snapshot(self) -> list[Tensor]:
        """Copies of the integer buffers (``num_batches_tracked``), which the flat vectors do not hold."""
        return [b.clone() for b in self.int_buffers]

    @torch.no_grad()
    def load(self, params: Tensor, buffers: Tensor, int_buffers: list[Tensor] | None = None) -> None:
        """Write the flat global ``params`` / ``buffers`` (and integer buffers, if given) into the module."""
        load_flat_(self.params, params)
        load_flat_(self.buffers, buffers)
        for live, saved in zip(self.int_buffers, int_buffers or []):
            live.copy_(saved)

    def write(self, out_params: Tensor, out_buffers: Tensor) -> None:
        """Flatten the module's current parameters and float buffers into one row of each output."""
        flatten_into(self.params, out_params)
        flatten_into(self.buffers, out_buffers)


def train_one_by_one(weights: ModuleWeights, global_params: Tensor, global_buffers: Tensor,
                     tasks: Sequence["ClientTask"], out_params: Tensor, out_buffers: Tensor,
                     train: Callable[["ClientTask"], float], fatal: tuple[type[BaseException], ...]
                     ) -> list["ClientOutcome"]:
    """Train ``tasks`` in turn on one module: load the global weights, ``train``, write the client's rows.

    A client whose training raises is dropped for the round with a warning, unless the exception is
    one of ``fatal`` (the module or the settings cannot work for any client). So is a client after
    which the module's tensors differ from the layout (:class:`LayoutGuard`); the module is repaired
    and ``outcome.extras["layout_change"]`` holds ``(hook, difference)``. ``train`` returns the
    client's mean loss; a ``LocalResult`` also carries what the module logged. The module holds the
    global weights again afterwards.
    """
    from fl_lightning.engines.base import ClientOutcome

    int_snapshot = weights.int_snapshot()
    outcomes = []
    for row, task in enumerate(tasks):
        weights.load(global_params, global_buffers, int_snapshot)
        started = time.perf_counter()
        outcome = ClientOutcome(task.client_id, len(task.data))
        try:
            result = train(task)
            weights.guard.check("a training hook")
            outcome.train_loss = float(result)
            outcome.logged = dict(getattr(result, "logged", {}))
            if getattr(result, "optimizer_state", None) is not None:
                outcome.extras["optimizer_state"] = result.optimizer_state
            outcome.prog_bar = frozenset(getattr(result, "prog_bar", ()))
        except ModuleLayoutError as exc:  # the client's tensors are not the layout's: drop it, repair the module
            weights.guard.restore()
            outcome.error = f"{type(exc).__name__}: {exc}"
            outcome.extras["layout_change"] = (exc.hook, exc.difference)
            warnings.warn(f"client {task.client_id} is dropped this round: {exc}; the module's tensors are put "
                          "back for the next client", RuntimeWarning, stacklevel=3)
        except fatal:
            raise
        except Exception as exc:  # a failing client is dropped for this round, not fatal
            outcome.error = f"{type(exc).__name__}: {exc}"
            changed = weights.guard.difference()
            if changed is not None:  # the failure may come from the change: repair the module all the same
                weights.guard.restore()
                outcome.extras["layout_change"] = ("a training hook", changed)
                outcome.error += f" (and a training hook changed the module's tensors: {changed})"
            warnings.warn(f"client {task.client_id} failed and is dropped this round: {outcome.error}",
                          RuntimeWarning, stacklevel=3)
        else:
            weights.write(out_params[row], out_buffers[row])
        outcome.seconds = time.perf_counter() - started
        outcomes.append(outcome)
    weights.load(global_params, global_buffers, int_snapshot)
    return outcomes
