"""Many clients at once: ``torch.func`` gradients vmapped over the clients' stacked parameters.

The engine reproduces :func:`~fl_lightning.engines.local_training.train_client` exactly (same
batch order from each client's seeded generator, same optimizer maths), but trains a *group* of
clients in one vectorised forward/backward per step instead of one client at a time.

What it needs from the module (otherwise it falls back to the sequential engine with one warning
naming the reason):

* a ``training_step`` whose loss is ``loss(module(x), y)``, with ``loss`` the module's own
  (:func:`~fl_lightning.module_contract.loss_fn`: ``module.loss`` or cross-entropy), checked on
  the first client's data; ``loss`` must be a mean of per-sample losses
  (true of cross-entropy and BCE), because a client's batch padded to the group's widest batch is
  scored as a masked mean;
* no layers that mix the samples of a batch or keep training state (BatchNorm, floating-point
  buffers) and no random layers (Dropout): their results could not equal the sequential run's;
* ``configure_optimizers`` returning ``torch.optim.SGD``, ``Adam`` or ``AdamW`` (any param groups)
  and no learning-rate scheduler;
* none of the ``on_train_*`` hooks the lean loop runs around each client, and no ``self.log`` in
  ``training_step`` other than of the loss itself (whose mean over steps the engine reports);
* ``precision="32-true"`` (mixed-precision tasks are trained by the sequential engine).

Everything lives on the module's device; on CUDA a group is sized from the device's free memory.

Client data without in-memory ``inputs`` (lazy per-sample datasets), tasks with a ``batch_poisoner`` (their poisoning draws from the batch generator) and empty clients
are trained by the sequential engine inside the same round; a group that fails under vmap is
retrained there too, so a client raising is dropped exactly as the sequential engine drops it.
"""
from __future__ import annotations

import ast
import inspect
import math
import re
import textwrap
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import lightning as L
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from fl_lightning.checks import check_optional_int, check_positive
from fl_lightning.engines.base import ClientOutcome, ClientTask, Engine
from fl_lightning.engines.local_training import (TRAIN_HOOKS, LocalTrainingError, build_optimizer,
                                                 build_optimizer_setup, detached_logging, step_loss)
from fl_lightning.engines.sequential import SequentialEngine
from fl_lightning.engines.batches import client_batches, local_passes
from fl_lightning.engines.module_weights import ModuleWeights
from fl_lightning.module_contract import loss_fn, overrides
from fl_lightning.param_layout import ParamLayout

_RANDOM_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_CPU_WORKING_SET_MB = 64
_CPU_BUDGET_MB = 512
_CUDA_FREE_SHARE = 0.5
_MIN_CPU_GROUP = 8
_NO_BATCH_RULE = re.compile(r"batching rule for (aten::\w+)")
_SAMPLE_MIXING_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


class _Fallback(Exception):
    """The module or optimizer cannot be trained under vmap; the message says why."""


@dataclass(frozen=True)
class _SGD:
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float
    maximize: bool

    @property
    def num_states(self) -> int:
        return 1 if self.momentum != 0 else 0


@dataclass(frozen=True)
class _Adam:
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    amsgrad: bool
    maximize: bool
    decoupled: bool  # AdamW

    @property
    def num_states(self) -> int:
        return 3 if self.amsgrad else 2


@dataclass
class _Group:
    """A param group of the user's optimizer: its update rule, default lr and parameter names."""

    rule: _SGD | _Adam
    lr: float
    names: list[str]


@dataclass
class _Schedule:
    """One client's batches in the order the sequential engine draws them."""

    row: int
    task: ClientTask
    batches: list[Tensor]


class VmapEngine(Engine):
    """Trains groups of clients simultaneously with ``torch.func`` (``functional_call`` + ``grad`` + ``vmap``).

    ``max_group_size`` caps the clients trained together; ``memory_budget_mb`` bounds the estimated
    working memory of a group (parameters, optimizer state, data and activations); ``None`` means
    512 MB on the CPU and half the device's free memory on CUDA (``torch.cuda.mem_get_info``). Client results
    equal the :class:`SequentialEngine`'s to float tolerance; see the module docstring for what
    falls back to it.
    """

    def __init__(self, max_group_size: int | None = None, memory_budget_mb: float | None = None) -> None:
        check_optional_int(max_group_size, "max_group_size", "VmapEngine", minimum=1)
        if memory_budget_mb is not None:
            check_positive(memory_budget_mb, "memory_budget_mb", "VmapEngine")
        self.max_group_size = max_group_size
        self.memory_budget_mb = memory_budget_mb

    def setup(self, module: L.LightningModule, layout: ParamLayout) -> None:
        """Check once whether the module can run under vmap; the probe with real data waits for the first round."""
        super().setup(module, layout)
        if not module.automatic_optimization:
            raise LocalTrainingError(f"VmapEngine: {type(module).__name__} uses manual optimization "
                                     "(automatic_optimization = False), which a vectorised step cannot run; use "
                                     "engine=\"sequential\" or engine=\"lightning\"")
        self._sequential = SequentialEngine()
        self._sequential.configure(self.options)
        self._sequential.setup(module, layout)
        self._live = ModuleWeights(module, layout)
        self._loss = loss_fn(module)
        self._warned: set[str] = set()
        self._probed = False
        self._act_bytes = (0.0, 0.0)  # saved-for-backward bytes: (per batch, per sample)
        self._grad_fns: dict[bool, Callable[..., Any]] = {}
        self._trainable: list[str] = []
        self._groups: list[_Group] = []
        self._loss_names: list[str] = []  # what training_step logs that is its loss
        self.fallback_reason: str | None = None
        try:
            self._check_module()
            self._check_contract()
            self._groups = self._read_optimizer()
        except _Fallback as reason:
            self._fall_back(str(reason))

    def __repr__(self) -> str:
        return f"VmapEngine(max_group_size={self.max_group_size}, memory_budget_mb={self.memory_budget_mb})"

    # -- the round -------------------------------------------------------------------------------------------
    def train_round(self, global_params: Tensor, global_buffers: Tensor, tasks: Sequence[ClientTask],
                    out_params: Tensor, out_buffers: Tensor) -> list[ClientOutcome]:
        """Train the tasks in vmapped groups; poisoned or empty clients go through the sequential engine."""
        if self.fallback_reason is not None:
            return self._sequential.train_round(global_params, global_buffers, tasks, out_params, out_buffers)
        self._live.load(global_params, global_buffers)
        self.module.train()
        outcomes: list[ClientOutcome | None] = [None] * len(tasks)
        schedules, sequential_rows = [], []
        for row, task in enumerate(tasks):
            if task.precision != "32-true":
                self._warn_once("precision", f"VmapEngine: precision={task.precision!r} is trained by the "
                                "sequential engine (vmap runs in float32)")
                sequential_rows.append(row)
            elif task.batch_poisoner is not None:
                self._warn_once("poisoner", "VmapEngine: clients with a batch poisoner are trained by the "
                                "sequential engine (their poisoning draws from the batch generator)")
                sequential_rows.append(row)
            elif not isinstance(getattr(task.data, "inputs", None), Tensor):
                self._warn_once("lazy", "VmapEngine: client data without in-memory inputs (a lazy dataset) is "
                                "trained by the sequential engine")
                sequential_rows.append(row)
            elif task.keep_optimizer_state or task.optimizer_state is not None:
                self._warn_once("optimizer_state", "VmapEngine: clients that keep their optimizer state across "
                                "rounds (keep_optimizer_state) are trained by the sequential engine")
                sequential_rows.append(row)
            elif len(task.data) == 0 or local_passes(task.config, len(task.data)) <= 0:
                sequential_rows.append(row)  # no step at all: nothing to vectorise
            else:
                batches = client_batches(len(task.data), task.config, task.seed)
                if batches:
                    schedules.append(_Schedule(row, task, batches))
                else:
                    sequential_rows.append(row)
        try:
            for schedule in schedules if not self._probed else []:
                self._probed = self._probe(schedule.task)
                if self._probed:
                    break
        except _Fallback as reason:
            self._fall_back(str(reason))
            return self._sequential.train_round(global_params, global_buffers, tasks, out_params, out_buffers)
        if not self._probed:  # every client's data failed the plain forward: let the sequential engine drop them
            sequential_rows.extend(s.row for s in schedules)
            schedules = []
        for group in self._plan(schedules):
            try:
                group_outcomes = self._train_group(group, global_params, out_params)
            except Exception as exc:  # e.g. bad data in one client: retrain the group client by client
                self._warn_once(f"group:{type(exc).__name__}",
                                f"VmapEngine: a group of {len(group)} clients failed under vmap "
                                f"({type(exc).__name__}: {_first_line(exc)}); training it on the sequential engine")
                sequential_rows.extend(s.row for s in group)
            else:
                for schedule, outcome in zip(group, group_outcomes):
                    outcomes[schedule.row] = outcome
        if sequential_rows:
            self._run_sequential(sorted(sequential_rows), tasks, global_params, global_buffers,
                                 out_params, out_buffers, outcomes)
        self._live.load(global_params, global_buffers)
        return [o for o in outcomes if o is not None]

    def _run_sequential(self, rows: list[int], tasks: Sequence[ClientTask], global_params: Tensor,
                        global_buffers: Tensor, out_params: Tensor, out_buffers: Tensor,
                        outcomes: list[ClientOutcome | None]) -> None:
        sub_params = out_params.new_empty(len(rows), out_params.shape[1])
        sub_buffers = out_buffers.new_empty(len(rows), out_buffers.shape[1])
        results = self._sequential.train_round(global_params, global_buffers, [tasks[r] for r in rows],
                                               sub_params, sub_buffers)
        for i, (row, outcome) in enumerate(zip(rows, results)):
            outcomes[row] = outcome
            if outcome.ok:
                out_params[row].copy_(sub_params[i])
                out_buffers[row].copy_(sub_buffers[i])

    def _train_group(self, group: list[_Schedule], global_params: Tensor, out_params: Tensor) -> list[ClientOutcome]:
        """Train one group; clients are sorted by step count, so the active ones are always a prefix."""
        started = time.perf_counter()
        size = len(group)
        datas = [s.task.data for s in group]
        steps = [len(s.batches) for s in group]
        specs = {spec.name: spec for spec in self.layout.params}
        live = dict(self.module.named_parameters())

        def global_value(name: str) -> Tensor:
            return global_params[specs[name].slice].view(specs[name].shape).to(live[name].dtype)

        params = {name: global_value(name).expand(size, *specs[name].shape).clone() for name in self._trainable}
        frozen = {spec.name: global_value(spec.name) for spec in self.layout.params if spec.name not in params}
        rules = {name: group_.rule for group_ in self._groups for name in group_.names}
        lrs = {name: self._client_lrs(group_, group) for group_ in self._groups for name in group_.names}
        states = {name: [torch.zeros_like(p) for _ in range(rules[name].num_states)] for name, p in params.items()}
        device = global_params.device
        loss_sums = torch.zeros(size, dtype=torch.float64, device=device)
        dtype = next(iter(params.values())).dtype
        mus = [s.task.proximal_mu for s in group]
        for t in range(steps[0]):
            active = sum(1 for s in steps if s > t)
            index = [group[k].batches[t] for k in range(active)]
            lengths = torch.tensor([len(i) for i in index])
            padded = torch.nn.utils.rnn.pad_sequence(index, batch_first=True)  # pads with sample 0
            x = _gather([d.inputs for d in datas[:active]], padded).to(device, non_blocking=True)
            y = _gather([d.targets for d in datas[:active]], padded).to(device, non_blocking=True)
            views = {name: p[:active] for name, p in params.items()}
            if bool((lengths == lengths[0]).all()):
                grads, losses = self._grad_fn(False)(views, frozen, x, y)
            else:
                mask = (torch.arange(padded.shape[1]) < lengths[:, None]).to(dtype)
                grads, losses = self._grad_fn(True)(views, frozen, x, y, (mask / lengths[:, None]).to(device))
            if any(mus[:active]):  # FedProx: the term's gradient mu (w - w_global) and its value, per client
                grads, losses = _add_proximal(grads, losses, views, global_value, mus[:active])
            loss_sums[:active] += losses.detach().to(torch.float64)
            with torch.no_grad():
                for name, view in views.items():
                    state = [s[:active] for s in states[name]]
                    _apply_update(rules[name], view, grads[name], state, _lr(lrs[name][:active], view), t)
        with torch.no_grad():
            result = global_params.expand(size, -1).clone()
            for name, p in params.items():
                result[:, specs[name].slice] = p.reshape(size, -1)
            out_params.index_copy_(0, torch.tensor([s.row for s in group], device=out_params.device), result)
        seconds = (time.perf_counter() - started) / size
        means = (loss_sums.cpu() / torch.tensor(steps, dtype=torch.float64)).tolist()
        return [ClientOutcome(s.task.client_id, len(s.task.data), train_loss=means[k], seconds=seconds,
                              logged={name: means[k] for name in self._loss_names})
                for k, s in enumerate(group)]

    def _client_lrs(self, group_: _Group, group: list[_Schedule]) -> Tensor:
        return torch.tensor([group_.lr if s.task.config.lr is None else float(s.task.config.lr) for s in group],
                            dtype=torch.float64, device=self.module.device)

    # -- grouping --------------------------------------------------------------------------------------------
    def _plan(self, schedules: list[_Schedule]) -> list[list[_Schedule]]:
        """Groups of clients with stackable data, longest schedules first, sized by the memory budget."""
        by_kind: dict[tuple, list[_Schedule]] = {}
        for s in schedules:
            data = s.task.data
            key = (tuple(data.inputs.shape[1:]), data.inputs.dtype, tuple(data.targets.shape[1:]), data.targets.dtype)
            by_kind.setdefault(key, []).append(s)
        groups = []
        for kind in by_kind.values():
            kind.sort(key=lambda s: (-len(s.batches), -max(len(b) for b in s.batches)))
            size = self._group_size(kind)
            groups.extend(kind[i:i + size] for i in range(0, len(kind), size))
        return groups

    def _group_size(self, schedules: list[_Schedule]) -> int:
        """How many clients fit the memory budget: parameters, optimizer state, data and activations per client."""
        data = schedules[0].task.data
        sample_bytes = data.inputs[:1].element_size() * data.inputs[:1].numel() + data.targets.element_size()
        max_batch = max(len(b) for s in schedules for b in s.batches)
        state_count = max((g.rule.num_states for g in self._groups), default=1)
        param_bytes = 4 * sum(self.layout.param(n).numel for n in self._trainable) * (3 + state_count)
        base, per_sample = self._act_bytes
        # vmap(grad) keeps the forward's saved tensors plus gradients of similar size: about 3x
        per_client = param_bytes + sample_bytes * max_batch + 3 * (base + per_sample * max_batch)
        device = self.module.device
        size = max(1, int(self._budget_bytes(device) // max(per_client, 1)))
        if device.type != "cuda":
            # on CPU a group whose activations stay near the caches trains faster than one big group
            # (PaperCNN, 100 clients: groups of 10-34 beat 100 by ~1.4x); the memory budget still caps it
            activations = 3 * (base + per_sample * max_batch)
            size = min(size, max(_MIN_CPU_GROUP, int(_CPU_WORKING_SET_MB * 2**20 // max(activations, 1))))
        if self.max_group_size is not None:
            size = min(size, self.max_group_size)
        return min(size, len(schedules))

    def _budget_bytes(self, device: torch.device) -> float:
        """The group's memory budget: the user's, else half the free CUDA memory, else 512 MB."""
        if self.memory_budget_mb is not None:
            return self.memory_budget_mb * 2**20
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return free * _CUDA_FREE_SHARE
        return _CPU_BUDGET_MB * 2**20

    # -- checks ----------------------------------------------------------------------------------------------
    def _check_contract(self) -> None:
        """Train hooks and schedulers the vmapped loop cannot run: fall back so that they act as they should."""
        module, name = self.module, type(self.module).__name__
        hooks = [hook for hook in TRAIN_HOOKS if overrides(module, hook)]
        if hooks:
            raise _Fallback(f"{name} defines {', '.join(hooks)}, which run around each client's training")
        try:
            setup = build_optimizer_setup(module, None, self.options)
        except LocalTrainingError as exc:
            raise _Fallback(str(exc)) from None
        if self.options.gradient_clip_val is not None:
            raise _Fallback("gradient_clip_val is set (clipping runs in the sequential loop)")
        if self.options.accumulate_grad_batches != 1:
            raise _Fallback("accumulate_grad_batches is set (accumulation runs in the sequential loop)")
        if overrides(module, "configure_gradient_clipping"):
            raise _Fallback(f"{name} defines configure_gradient_clipping")
        if setup.schedulers:
            kinds = ", ".join(type(c.scheduler).__name__ for c in setup.schedulers)
            raise _Fallback(f"{name}.configure_optimizers() returns learning-rate schedulers ({kinds})")
        if self._live.guard.difference() is not None:
            raise _Fallback(f"{name}.configure_optimizers() changes the module's tensors "
                            f"({self._live.guard.difference()})")
        if _may_return_none(type(module).training_step):
            raise _Fallback(f"{name}.training_step may return None (skip a batch), which vmap cannot see per client")

    def _check_module(self) -> None:
        module, name = self.module, type(self.module).__name__
        if not module.automatic_optimization:
            raise _Fallback(f"{name} uses manual optimization")
        if self.layout.buffers:
            raise _Fallback(f"{name} has floating-point buffers updated in training "
                            f"({', '.join(s.name for s in self.layout.buffers[:3])}), e.g. BatchNorm statistics")
        for sub_name, sub in module.named_modules():
            if isinstance(sub, _SAMPLE_MIXING_LAYERS):
                raise _Fallback(f"{name}.{sub_name} ({type(sub).__name__}) mixes the samples of a batch")
            if isinstance(sub, _RANDOM_LAYERS) and sub.p > 0:
                raise _Fallback(f"{name}.{sub_name} ({type(sub).__name__}) draws random numbers, which "
                                "vmap cannot draw in the sequential engine's order")

    def _read_optimizer(self) -> list[_Group]:
        """The update rule and default lr of every param group of ``configure_optimizers()``."""
        try:
            optimizer = build_optimizer(self.module, None, self.options)
        except LocalTrainingError as exc:
            raise _Fallback(str(exc)) from None
        kind = type(optimizer)
        if kind not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
            raise _Fallback(f"optimizer {kind.__name__} is not supported (SGD, Adam and AdamW are)")
        names = {id(p): n for n, p in self.module.named_parameters()}
        groups = []
        for group in optimizer.param_groups:
            if group.get("differentiable"):
                raise _Fallback("differentiable=True optimizers are not supported")
            if kind is torch.optim.SGD:
                rule: _SGD | _Adam = _SGD(float(group["momentum"]), float(group["dampening"]),
                                          bool(group["nesterov"]), float(group["weight_decay"]),
                                          bool(group.get("maximize", False)))
            else:
                beta1, beta2 = (float(b) for b in group["betas"])
                decoupled = kind is torch.optim.AdamW or bool(group.get("decoupled_weight_decay", False))
                rule = _Adam(beta1, beta2, float(group["eps"]), float(group["weight_decay"]),
                             bool(group["amsgrad"]), bool(group.get("maximize", False)), decoupled)
            member = [names[id(p)] for p in group["params"] if p.requires_grad and id(p) in names]
            groups.append(_Group(rule, float(group["lr"]), member))
        layout_names = {s.name for s in self.layout.params}
        self._trainable = [s.name for s in self.layout.params
                           if any(s.name in g.names for g in groups) and s.name in layout_names]
        return groups

    def _probe(self, task: ClientTask) -> bool:
        """Run the vmapped step once on ``task``'s data and compare it with plain autograd on the module.

        Returns False when the plain forward itself fails on this client's data (a client problem, not
        the module's); raises :class:`_Fallback` when the module cannot run under vmap.
        """
        module = self.module
        data = task.data
        width = min(len(data), 8)
        x, y = data.inputs[:width].to(module.device), data.targets[:width].to(module.device)
        logged: dict[str, float] = {}
        params = dict(module.named_parameters())
        trainable = [params[n] for n in self._trainable]
        try:
            with torch.enable_grad():
                reference = self._loss(module(x), y)
                with detached_logging(module, logged):
                    stepped = step_loss(module.training_step((x, y), 0), module)
                changed = self._live.guard.difference()
                if changed is not None:  # let the sequential engine drop the clients, naming the hook
                    self._live.guard.restore()
                    raise LocalTrainingError(f"{type(module).__name__}.training_step changes the module's tensors "
                                             f"({changed})")
                if stepped is None:
                    raise LocalTrainingError(f"{type(module).__name__}.training_step returned None (skips a batch), "
                                             "which vmap cannot see per client")
                grads = torch.autograd.grad(reference, trainable, allow_unused=True)
                shorter = self._loss(module(x[:-1]), y[:-1]) if width > 1 else reference
                self._act_bytes = _activation_bytes(module, x, y)
        except LocalTrainingError as exc:
            raise _Fallback(str(exc)) from None
        except Exception:
            return False
        if not torch.allclose(stepped.detach(), reference.detach(), rtol=1e-5, atol=1e-7):
            raise _Fallback(f"{type(module).__name__}.training_step's loss is not loss(forward(x), y); the vmap "
                            "engine can only run that step")
        others = sorted(n for n, v in logged.items() if not math.isclose(v, float(stepped.detach()), rel_tol=1e-5, abs_tol=1e-7))
        if others:
            raise _Fallback(f"{type(module).__name__}.training_step self.logs {', '.join(others)}, which vmap "
                            "cannot compute per client (only the loss itself)")
        self._loss_names = sorted(logged)
        # a parameter without a gradient is skipped by torch.optim (no decay, no momentum): keep it frozen
        self._trainable = [n for n, g in zip(self._trainable, grads) if g is not None]
        if not self._trainable:
            raise _Fallback(f"{type(module).__name__} has no parameter that the optimizer trains")
        for group in self._groups:
            group.names = [n for n in group.names if n in self._trainable]
        expected = [g for g in grads if g is not None]
        stacked = {n: params[n].detach().expand(2, *params[n].shape).clone() for n in self._trainable}
        frozen = {n: p.detach() for n, p in params.items() if n not in stacked}
        xs, ys = torch.stack([x, x]), torch.stack([y, y])
        weights = torch.ones(2, width, device=x.device)
        weights[1, -1] = 0 if width > 1 else 1
        weights /= weights.sum(dim=1, keepdim=True)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                plain_grads, plain_loss = self._grad_fn(False)(stacked, frozen, xs, ys)
                masked_grads, masked_loss = self._grad_fn(True)(stacked, frozen, xs, ys, weights)
        except Exception as exc:
            raise _Fallback(f"torch.func cannot run {type(module).__name__} under vmap "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None
        # an op without a batching rule runs in a per-client loop inside vmap: slower than the sequential engine
        unbatched = sorted({m.group(1) for w in caught if (m := _NO_BATCH_RULE.search(str(w.message)))})
        if unbatched:
            raise _Fallback(f"torch.func has no batching rule for {', '.join(unbatched)} (used by "
                            f"{type(module).__name__}), so vmap would loop over the clients one by one")
        checks = [(plain_loss[0], reference), (masked_loss[0], reference), (masked_loss[1], shorter)]
        checks += [(plain_grads[n][0], g) for n, g in zip(self._trainable, expected)]
        checks += [(masked_grads[n][0], g) for n, g in zip(self._trainable, expected)]
        if not all(torch.allclose(a, b.detach(), rtol=1e-4, atol=1e-6) for a, b in checks):
            raise _Fallback(f"{type(module).__name__}'s loss under vmap differs from training_step's: the loss "
                            "must be a mean of independent per-sample losses")
        return True

    # -- helpers ---------------------------------------------------------------------------------------------
    def _grad_fn(self, masked: bool) -> Callable[..., Any]:
        """``vmap(grad_and_value(loss))`` over the clients; ``masked`` scores padded batches as weighted sums."""
        if masked not in self._grad_fns:
            module = self.module

            def one_sample(logits: Tensor, target: Tensor) -> Tensor:
                return self._loss(logits.unsqueeze(0), target.unsqueeze(0))

            def client_loss(params: dict, frozen: dict, x: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
                logits = functional_call(module, {**frozen, **params}, (x,))
                if weights is None:
                    return self._loss(logits, y)
                return (vmap(one_sample)(logits, y) * weights).sum()

            dims = (0, None, 0, 0, 0) if masked else (0, None, 0, 0)
            self._grad_fns[masked] = vmap(grad_and_value(client_loss), in_dims=dims)
        return self._grad_fns[masked]

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self._warn_once("fallback", f"VmapEngine falls back to the sequential engine: {reason}")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)


def _add_proximal(grads: dict[str, Tensor], losses: Tensor, views: dict[str, Tensor],
                  global_value: Callable[[str], Tensor], mus: list[float]) -> tuple[dict[str, Tensor], Tensor]:
    """FedProx on stacked clients: ``grad += mu (w - w_global)``, ``loss += mu/2 ||w - w_global||^2``."""
    first = next(iter(views.values()))
    mu = torch.tensor(mus, dtype=first.dtype, device=first.device)
    out = {}
    for name, view in views.items():
        diff = view.detach() - global_value(name)
        column = mu.view(-1, *([1] * (view.dim() - 1)))
        out[name] = grads[name] + column * diff
        losses = losses + 0.5 * mu.to(losses.dtype) * diff.pow(2).flatten(1).sum(1).to(losses.dtype)
    return out, losses


def _gather(sources: list[Tensor], index: Tensor) -> Tensor:
    """``[m, width, ...]``: row ``k`` holds ``sources[k][index[k]]`` (one copy, no stacked copy of all data)."""
    first = sources[0]
    out = first.new_empty((len(sources), index.shape[1], *first.shape[1:]))
    for k, source in enumerate(sources):
        torch.index_select(source, 0, index[k], out=out[k])
    return out


def _lr(lrs: Tensor, like: Tensor) -> float | Tensor:
    """A float when the active clients share one lr (torch.optim's exact arithmetic), else a broadcastable column."""
    if bool((lrs == lrs[0]).all()):
        return float(lrs[0])
    return lrs.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _apply_update(rule: _SGD | _Adam, param: Tensor, grad: Tensor, state: list[Tensor], lr: float | Tensor,
                  step: int) -> None:
    """One optimizer step on ``[m, ...]`` stacked clients, in place; mirrors torch.optim's single-tensor path."""
    if rule.maximize:
        grad = -grad
    if isinstance(rule, _SGD):
        # torch.optim.SGD: d = g + wd * p; buf = d on the first step, else momentum * buf + (1 - dampening) * d;
        # nesterov: d = d + momentum * buf, else d = buf; p -= lr * d
        if rule.weight_decay != 0:
            grad = grad.add(param, alpha=rule.weight_decay)
        if rule.momentum != 0:
            buf = state[0]
            if step == 0:
                buf.copy_(grad)
            else:
                buf.mul_(rule.momentum).add_(grad, alpha=1 - rule.dampening)
            grad = grad.add(buf, alpha=rule.momentum) if rule.nesterov else buf
        _add_scaled(param, grad, lr)
        return
    # torch.optim.Adam(W): L2 (Adam) or decoupled (AdamW) decay; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
    # p -= lr / (1 - b1^t) * m / (sqrt(v_or_max_v) / sqrt(1 - b2^t) + eps)
    exp_avg, exp_avg_sq = state[:2]
    count = step + 1
    if rule.weight_decay != 0:
        if rule.decoupled:
            param.mul_(1 - lr * rule.weight_decay)
        else:
            grad = grad.add(param, alpha=rule.weight_decay)
    exp_avg.lerp_(grad, 1 - rule.beta1)
    exp_avg_sq.mul_(rule.beta2).addcmul_(grad, grad, value=1 - rule.beta2)
    bias_correction1 = 1 - rule.beta1 ** count
    bias_correction2_sqrt = (1 - rule.beta2 ** count) ** 0.5
    if rule.amsgrad:
        torch.maximum(state[2], exp_avg_sq, out=state[2])
        denom = (state[2].sqrt() / bias_correction2_sqrt).add_(rule.eps)
    else:
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(rule.eps)
    if isinstance(lr, Tensor):
        param.sub_(exp_avg / denom * (lr / bias_correction1))
    else:
        param.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))


def _add_scaled(param: Tensor, direction: Tensor, lr: float | Tensor) -> None:
    """``param -= lr * direction`` with a scalar or per-client lr."""
    if isinstance(lr, Tensor):
        param.sub_(direction * lr)
    else:
        param.add_(direction, alpha=-lr)


def _activation_bytes(module: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Bytes autograd saves for backward: ``(per batch, per sample)``, from a forward on 1 and ``len(x)`` samples."""

    def saved(count: int) -> int:
        total = 0

        def pack(t: Tensor) -> Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss_fn(module)(module(x[:count]), y[:count])
        return total

    large, small = saved(len(x)), saved(1)
    per_sample = (large - small) / max(len(x) - 1, 1)
    return max(small - per_sample, 0.0), max(per_sample, 0.0)


def _may_return_none(step: Callable[..., Any]) -> bool:
    """Whether ``training_step``'s source can return ``None`` (bare ``return``, ``return None``, falling off its end).

    Lightning skips such a batch; vmap computes every client's loss without calling ``training_step``,
    so it must not run a step that may skip. Unreadable source counts as "may".
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(step)))
    except (OSError, TypeError, SyntaxError):
        return True
    function = tree.body[0]
    if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return True
    returns = [node for node in _own_nodes(function) if isinstance(node, ast.Return)]
    if any(r.value is None or (isinstance(r.value, ast.Constant) and r.value.value is None) for r in returns):
        return True
    return not _always_returns(function.body)


def _always_returns(body: list[ast.stmt]) -> bool:
    """Whether a block of statements ends in ``return``/``raise`` on every path (so never falls off its end)."""
    if not body:
        return False
    last = body[-1]
    if isinstance(last, (ast.Return, ast.Raise)):
        return True
    if isinstance(last, ast.If):
        return _always_returns(last.body) and _always_returns(last.orelse)
    if isinstance(last, (ast.With, ast.AsyncWith)):
        return _always_returns(last.body)
    return False


def _own_nodes(function: ast.AST) -> list[ast.AST]:
    """The nodes of ``function``'s body, not those of functions, lambdas or classes defined inside it."""
    nodes, stack = [], list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        nodes.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
    return nodes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


__all__ = ["VmapEngine"]
