"""Backdoor attacks (paper Section 4.3, Table 3): a trigger on some samples of every attacker batch.

The attacker poisons ``poison_per_batch`` samples of each local batch: the trigger is written into
their inputs and their label becomes ``target``; the rest of the batch stays clean so the model
keeps its main-task accuracy. ``attack/backdoor_asr`` measures the share of triggered test samples,
true label not ``target``, that the global model classifies as ``target``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from fl_lightning.attacks.base import Attack, ClientSpec
from fl_lightning.checks import check_choice, check_int
from fl_lightning.context import SetupContext
from fl_lightning.metrics.backdoor import BackdoorSuccessRate

#: trigger shapes of :class:`PixelBackdoor` by name
PATTERNS = ("square", "plus", "cross")
#: corners a :class:`PixelBackdoor` trigger can sit in
LOCATIONS = ("top-left", "top-right", "bottom-left", "bottom-right")


class _Backdoor(Attack):
    """Shared batch poisoning and measurement of the backdoor attacks."""

    def __init__(self, target: int, poison_per_batch: int, clients: ClientSpec, extra_epochs: int,
                 lr: float | None, rounds: Sequence[int] | None,
                 batch_size: int | None, extra_steps: int = 0) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, extra_steps=extra_steps)
        self.target = check_int(target, "target", type(self).__name__, minimum=0)
        self.poison_per_batch = check_int(poison_per_batch, "poison_per_batch", type(self).__name__, minimum=1)

    def _validate_backdoor(self, ctx: SetupContext) -> None:
        name = type(self).__name__
        if self.target >= ctx.num_classes:
            raise ValueError(f"{name}: target class {self.target!r} does not exist; the dataset has "
                             f"classes 0..{ctx.num_classes - 1}")

    def apply_trigger(self, inputs: Tensor) -> Tensor:
        """A batch (``[B, C, H, W]``, ``[B, H, W]`` or ``[B, F]``) with the trigger in every sample; a new tensor."""
        return self._triggered(inputs, reference=inputs)

    def _triggered(self, inputs: Tensor, reference: Tensor) -> Tensor:
        """``inputs`` with the trigger; data-derived trigger values are read from ``reference``."""
        raise NotImplementedError

    def poison_batch(self, client_id: int, inputs: Tensor, targets: Tensor,
                     generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Trigger and relabel exactly ``min(poison_per_batch, len(batch))`` samples drawn with ``generator``."""
        count = min(self.poison_per_batch, len(targets))
        chosen = torch.randperm(len(targets), generator=generator)[:count].to(targets.device)
        poisoned_inputs = self._trigger_rows(inputs, chosen)
        poisoned_targets = targets.clone()
        poisoned_targets[chosen] = self.target
        return poisoned_inputs, poisoned_targets

    def _trigger_rows(self, inputs: Tensor, rows: Tensor) -> Tensor:
        out = inputs.clone()
        out[rows] = self._triggered(inputs[rows], reference=inputs)
        return out

    def metrics(self) -> dict[str, Metric]:
        """``attack/backdoor_asr``: triggered test samples (label not ``target``) predicted as ``target``."""
        return {"attack/backdoor_asr": BackdoorSuccessRate(self.target)}

    def update_metrics(self, metrics: dict[str, Metric], predict: Callable[[Tensor], Tensor],
                       inputs: Tensor, targets: Tensor, preds: Tensor) -> None:
        """The backdoor metric sees predictions on the triggered batch; any other metric the clean ones."""
        for key, metric in metrics.items():
            if isinstance(metric, BackdoorSuccessRate):
                metric.update(predict(self.apply_trigger(inputs)), targets)
            else:
                metric.update(preds, targets)


class PixelBackdoor(_Backdoor):
    """Pixel-pattern backdoor on images ``[C, H, W]`` (or ``[H, W]``) (Gu et al. 2019; paper Table 3).

    The trigger is a ``size x size`` ``pattern`` ("square": filled, "plus": middle row and column,
    "cross": both diagonals, or a 2-D bool tensor) in a corner of every channel, set to ``value``:
    a float, one float per channel, or ``None`` for the per-channel maximum of the batch being
    triggered, i.e. white after normalisation (for MNIST5k pass ``(1 - MNIST_MEAN) / MNIST_STD`` to
    fix it). Paper defaults: white square top-left, 20 of 64 samples per batch, attacker lr 0.1 and
    10 epochs against the honest 5 (``extra_epochs=5``).
    """

    def __init__(self, target: int, pattern: str | Tensor = "square", size: int = 3,
                 value: float | Sequence[float] | None = None, location: str = "top-left",
                 poison_per_batch: int = 20, clients: ClientSpec = 1, extra_epochs: int = 5,
                 lr: float | None = 0.1, rounds: Sequence[int] | None = None,
                 batch_size: int | None = None, extra_steps: int = 0) -> None:
        super().__init__(target=target, poison_per_batch=poison_per_batch, clients=clients,
                         extra_epochs=extra_epochs, lr=lr, rounds=rounds, batch_size=batch_size,
                         extra_steps=extra_steps)
        self.pattern = pattern
        self.size = size
        self.value = value
        self.location = check_choice(location, LOCATIONS, "location", "PixelBackdoor")
        self._mask: Tensor | None = None

    def setup(self, ctx: SetupContext) -> None:
        """Check the target, the pattern and that it fits the images, then draw the attackers."""
        self._validate_backdoor(ctx)
        if len(ctx.input_shape) not in (2, 3):
            raise ValueError(f"PixelBackdoor needs image inputs [C, H, W] or [H, W], got input shape "
                             f"{tuple(ctx.input_shape)}; use FeatureBackdoor for tabular data")
        height, width = ctx.input_shape[-2:]
        stamp = self.stamp()
        if stamp.shape[0] > height or stamp.shape[1] > width:
            raise ValueError(f"PixelBackdoor: the {stamp.shape[0]}x{stamp.shape[1]} pattern is larger "
                             f"than the {height}x{width} images; pass a smaller size")
        channels = ctx.input_shape[0] if len(ctx.input_shape) == 3 else 1
        if isinstance(self.value, (list, tuple)) and len(self.value) not in (1, channels):
            raise ValueError(f"PixelBackdoor: {len(self.value)} values for {channels} channels; pass "
                             "one value or one per channel")
        self._mask = self.mask(height, width)
        super().setup(ctx)

    def stamp(self) -> Tensor:
        """The pattern itself as a bool ``[h, w]`` tensor."""
        if isinstance(self.pattern, Tensor):
            if self.pattern.dim() != 2 or self.pattern.numel() == 0:
                raise ValueError("PixelBackdoor: a custom pattern must be a non-empty 2-D bool tensor, "
                                 f"got shape {tuple(self.pattern.shape)}")
            return self.pattern.bool()
        check_int(self.size, "size", "PixelBackdoor", minimum=1)
        n = self.size
        if self.pattern == "square":
            return torch.ones(n, n, dtype=torch.bool)
        if self.pattern == "plus":
            stamp = torch.zeros(n, n, dtype=torch.bool)
            stamp[n // 2, :] = True
            stamp[:, n // 2] = True
            return stamp
        if self.pattern == "cross":
            eye = torch.eye(n, dtype=torch.bool)
            return eye | eye.flip(1)
        raise ValueError(f"PixelBackdoor: unknown pattern {self.pattern!r}; choose one of {PATTERNS} "
                         "or pass a 2-D bool tensor")

    def mask(self, height: int, width: int) -> Tensor:
        """Bool ``[height, width]`` mask of the trigger pixels at :attr:`location`."""
        stamp = self.stamp()
        h, w = stamp.shape
        top = 0 if self.location.startswith("top") else height - h
        left = 0 if self.location.endswith("left") else width - w
        out = torch.zeros(height, width, dtype=torch.bool)
        out[top:top + h, left:left + w] = stamp
        return out

    def _triggered(self, inputs: Tensor, reference: Tensor) -> Tensor:
        mask = self._mask
        if mask is None or mask.shape != inputs.shape[-2:]:
            mask = self.mask(*inputs.shape[-2:])
        return torch.where(mask.to(inputs.device), self._fill(reference), inputs)

    def _fill(self, reference: Tensor) -> Tensor:
        """The trigger value, shaped to broadcast over a batch like ``reference``."""
        inputs = reference
        if self.value is None:
            if inputs.dim() == 4:
                return inputs.amax(dim=(0, 2, 3)).view(1, -1, 1, 1)
            return inputs.amax()
        value = torch.as_tensor(self.value, dtype=inputs.dtype, device=inputs.device)
        return value.view(1, -1, 1, 1) if inputs.dim() == 4 and value.dim() == 1 else value


class FeatureBackdoor(_Backdoor):
    """Feature backdoor on tabular inputs ``[F]`` (paper LOAN: six features set just above their maximum).

    ``values`` are written into ``feature_indices`` of ``poison_per_batch`` samples per batch (one
    value for all, or one per index); :meth:`above_max` computes values just above the training maxima.
    """

    def __init__(self, feature_indices: Sequence[int], values: float | Sequence[float], target: int,
                 poison_per_batch: int = 20, clients: ClientSpec = 1, extra_epochs: int = 5,
                 lr: float | None = None, rounds: Sequence[int] | None = None,
                 batch_size: int | None = None, extra_steps: int = 0) -> None:
        super().__init__(target=target, poison_per_batch=poison_per_batch, clients=clients,
                         extra_epochs=extra_epochs, lr=lr, rounds=rounds, batch_size=batch_size,
                         extra_steps=extra_steps)
        self.feature_indices = [int(i) for i in feature_indices]
        self.values = values

    @staticmethod
    def above_max(inputs: Tensor, feature_indices: Sequence[int], margin: float = 0.1) -> list[float]:
        """Trigger values ``max + margin * max(|max|, 1)`` of each feature over ``inputs`` ``[B, F]``."""
        peak = inputs[:, list(feature_indices)].amax(dim=0)
        return (peak + margin * peak.abs().clamp_min(1.0)).tolist()

    def setup(self, ctx: SetupContext) -> None:
        """Check the target, the feature indices and values against the input width, then draw the attackers."""
        self._validate_backdoor(ctx)
        if len(ctx.input_shape) != 1:
            raise ValueError(f"FeatureBackdoor needs tabular inputs [F], got input shape "
                             f"{tuple(ctx.input_shape)}; use PixelBackdoor for images")
        width = ctx.input_shape[0]
        if not self.feature_indices:
            raise ValueError("FeatureBackdoor: feature_indices is empty; name at least one feature")
        bad = [i for i in self.feature_indices if not 0 <= i < width]
        if bad:
            raise ValueError(f"FeatureBackdoor: feature indices {bad} are outside the input width "
                             f"{width} (valid 0..{width - 1})")
        if len(set(self.feature_indices)) != len(self.feature_indices):
            raise ValueError(f"FeatureBackdoor: feature_indices {self.feature_indices} repeat an index")
        if isinstance(self.values, (list, tuple)) and len(self.values) != len(self.feature_indices):
            raise ValueError(f"FeatureBackdoor: {len(self.values)} values for "
                             f"{len(self.feature_indices)} feature indices; pass one value or one per index")
        super().setup(ctx)

    def _triggered(self, inputs: Tensor, reference: Tensor) -> Tensor:
        out = inputs.clone()
        out[:, self.feature_indices] = torch.as_tensor(self.values, dtype=inputs.dtype, device=inputs.device)
        return out
