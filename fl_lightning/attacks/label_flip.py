"""Label flipping (paper Sections 5.1-5.2): attackers relabel their own training data."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor
from torchmetrics import Metric

from fl_lightning.attacks.base import Attack, ClientSpec
from fl_lightning.context import SetupContext
from fl_lightning.metrics.attack_success import AttackSuccessRate


class LabelFlip(Attack):
    """Attackers relabel ``source`` as ``target`` (``target=None``: every label is flipped to another class).

    By default the attackers are drawn among the clients holding ``source``, as in the paper, and
    train ``extra_epochs`` more epochs at the absolute learning rate ``lr`` (the paper's protocol
    boosts the attackers; ``lr=None`` keeps the module's own).
    """

    def __init__(self, source: int | None = None, target: int | None = None, clients: ClientSpec = 4,
                 extra_epochs: int = 5, lr: float | None = 0.25,
                 rounds: Sequence[int] | range | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size)
        self.source = source
        self.target = target
        self._num_classes = 0

    def eligible(self, client_targets: Tensor) -> bool:
        """Holders of the source class (anyone when every label is flipped)."""
        return self.source is None or bool((client_targets == self.source).any())

    def setup(self, ctx: SetupContext) -> None:
        """Check the classes exist, then draw the attackers."""
        for role, cls in (("source", self.source), ("target", self.target)):
            if cls is not None and not 0 <= cls < ctx.num_classes:
                raise ValueError(f"LabelFlip: {role} class {cls} does not exist; the dataset has "
                                 f"classes 0..{ctx.num_classes - 1}")
        if self.source is not None and self.target is not None and self.source == self.target:
            raise ValueError(f"LabelFlip: source and target are the same class ({self.source})")
        if self.source is None and self.target is not None:
            raise ValueError("LabelFlip: give a source class when a target is given")
        self._num_classes = ctx.num_classes
        super().setup(ctx)

    def flip(self, targets: Tensor) -> Tensor:
        """The poisoned labels (a new tensor)."""
        flipped = targets.clone()
        if self.source is None:
            # flip-all: binary tasks swap 0 and 1; multi-class tasks map c -> C-1-c (Amazon: all labels)
            flipped = (self._num_classes - 1) - targets
            if self._num_classes == 2 or flipped.is_floating_point():
                flipped = 1 - targets
        else:
            flipped[targets == self.source] = self.target if self.target is not None else self.source
        return flipped

    def poison_dataset(self, client_id: int, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Relabel this attacker's training data."""
        return inputs, self.flip(targets)

    def metrics(self) -> dict[str, Metric]:
        """``attack/asr``: share of test samples of ``source`` predicted as ``target``."""
        return {"attack/asr": AttackSuccessRate(self.source, self.target)}
