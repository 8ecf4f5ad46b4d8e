"""Label flipping (paper Sections 5.1-5.2): attackers relabel their own training data."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from fl_lightning.attacks.base import Attack, ClientSpec
from fl_lightning.checks import check_optional_int
from fl_lightning.context import SetupContext
from fl_lightning.metrics.attack_success import AttackSuccessRate


class LabelFlip(Attack):
    """Attackers relabel ``source`` as ``target``; ``source=None`` flips every label to another class.

    Flip-all maps class ``c`` to ``C-1-c`` (binary: ``1-c``; the middle class of an odd ``C`` goes
    to ``c+1``). ``target=None`` with a source spreads the source samples over the other classes in
    turn. By default the attackers are drawn among the clients holding ``source``, as in the paper,
    and train ``extra_epochs`` more epochs at the absolute learning rate ``lr`` (``lr=None`` keeps
    the module's own). Without ``rounds`` the client's data is relabelled once at setup; with
    ``rounds`` each batch is relabelled only in those rounds, so the schedule is exact.
    """

    def __init__(self, source: int | None = None, target: int | None = None, clients: ClientSpec = 4,
                 extra_epochs: int = 5, lr: float | None = 0.25,
                 rounds: Sequence[int] | None = None, batch_size: int | None = None,
                 extra_steps: int = 0) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, extra_steps=extra_steps)
        self.source = check_optional_int(source, "source", "LabelFlip", minimum=0)
        self.target = check_optional_int(target, "target", "LabelFlip", minimum=0)
        self._num_classes = 0

    @property
    def eligibility(self) -> str:
        """Only holders of the source class may be drawn."""
        return f"holders of source class {self.source}" if self.source is not None else ""

    def eligible(self, client_targets: Tensor) -> bool:
        """Holders of the source class (anyone when every label is flipped)."""
        return self.source is None or bool((client_targets == self.source).any())

    def setup(self, ctx: SetupContext) -> None:
        """Check the classes exist, then draw the attackers."""
        if ctx.num_classes < 2:
            raise ValueError(f"LabelFlip needs a dataset with at least 2 classes, got {ctx.num_classes}")
        for role, cls in (("source", self.source), ("target", self.target)):
            if cls is not None and cls >= ctx.num_classes:
                raise ValueError(f"LabelFlip: {role} class {cls} does not exist; the dataset has "
                                 f"classes 0..{ctx.num_classes - 1}")
        if self.source is not None and self.target is not None and self.source == self.target:
            raise ValueError(f"LabelFlip: source and target are the same class ({self.source}); "
                             "pick a different target")
        if self.source is None and self.target is not None:
            raise ValueError("LabelFlip: give a source class when a target is given "
                             "(source=None flips every label)")
        self._num_classes = ctx.num_classes
        super().setup(ctx)

    def flip(self, targets: Tensor) -> Tensor:
        """The poisoned labels (a new tensor)."""
        if self.source is None:
            if self._num_classes == 2 or targets.is_floating_point():
                return 1 - targets
            flipped = (self._num_classes - 1) - targets
            fixed = flipped == targets                       # the middle class of an odd C
            return torch.where(fixed, (targets + 1) % self._num_classes, flipped)
        flipped = targets.clone()
        mask = targets == self.source
        if self.target is not None:
            flipped[mask] = self.target
        else:
            others = torch.tensor([c for c in range(self._num_classes) if c != self.source],
                                  dtype=targets.dtype, device=targets.device)
            flipped[mask] = others[torch.arange(int(mask.sum()), device=targets.device) % len(others)]
        return flipped

    @property
    def poisons_batches(self) -> bool:
        """Scheduled flips act batch by batch, so that they happen only in ``rounds``."""
        return self.rounds is not None

    def poison_dataset(self, client_id: int, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Relabel this attacker's training data once (unscheduled attacks only)."""
        return (inputs, targets) if self.rounds is not None else (inputs, self.flip(targets))

    def poison_batch(self, client_id: int, inputs: Tensor, targets: Tensor,
                     generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Relabel one batch (called only in ``rounds`` when a schedule is given)."""
        return inputs, self.flip(targets)

    def metrics(self) -> dict[str, Metric]:
        """``attack/asr``: share of test samples of ``source`` predicted as ``target``."""
        return {"attack/asr": AttackSuccessRate(self.source, self.target)}
