"""ALIE and IPM with their parameter tuned each round against a known aggregator (ByzFL's optimal attacks)."""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Sequence

from torch import Tensor

from fl_lightning.aggregators.base import Aggregator
from fl_lightning.attacks import functional as F
from fl_lightning.attacks.base import Attack, ClientSpec, ModelPoisoningAttack
from fl_lightning.checks import check_int, check_number
from fl_lightning.context import RoundContext, SetupContext


class _Optimised(ModelPoisoningAttack):
    """The aggregator the attackers optimise against and the line-search settings."""

    def __init__(self, aggregator: Aggregator, start: float | None, delta: float, evals: int, ratio: float,
                 clients: ClientSpec | None, rounds: Sequence[int] | None, of: str | Attack | None,
                 extra_epochs: int, lr: float | None, batch_size: int | None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        name = type(self).__name__
        # the type says Aggregator, so a recipe can only build one (class_path); Python may pass any
        # function [K, N] -> [N]
        if not (isinstance(aggregator, Aggregator) or callable(aggregator)):
            raise TypeError(f"{name}: aggregator must be an Aggregator or a function [K, N] -> [N], "
                            f"got {type(aggregator).__name__}")
        self.aggregator = aggregator
        self.start = None if start is None else check_number(start, "start", name)
        if check_number(delta, "delta", name) == 0:
            raise ValueError(f"{name}: delta must be a finite non-zero number, got {delta!r}")
        self.delta = float(delta)
        self.evals = check_int(evals, "evals", name, minimum=1)
        self.ratio = check_number(ratio, "ratio", name, low=0.5, high=1.0, low_inclusive=False, high_inclusive=False)
        # a private copy: probing must not touch the server's rule or its memory (FoolsGold)
        self._probe: Aggregator | Callable[[Tensor], Tensor] = copy.deepcopy(aggregator) \
            if isinstance(aggregator, Aggregator) else aggregator

    def setup(self, ctx: SetupContext) -> None:
        """Check the aggregator against the run's clients per round, then draw the attackers."""
        if isinstance(self._probe, Aggregator) and ctx.clients_per_round > 0:
            self._probe.validate(ctx.clients_per_round)
        super().setup(ctx)

    def aggregator_fn(self, ctx: RoundContext) -> Callable[[Tensor], Tensor]:
        """The aggregator as a function of the ``[honest; attackers]`` rows of ``ctx`` (as :meth:`craft` gets it)."""
        if not isinstance(self._probe, Aggregator):
            return self._probe
        probe = self._probe
        stateful = type(probe).state_dict is not Aggregator.state_dict
        probe_ctx = dataclasses.replace(ctx, finite=None)

        def aggregate(rows: Tensor) -> Tensor:
            rule = copy.deepcopy(probe) if stateful else probe       # each probe from the same memory
            return rule.aggregate(rows, probe_ctx).update

        return aggregate


class OptimalALIE(_Optimised):
    """ALIE whose ``z`` maximises how far ``aggregator`` lands from the honest mean, found each round by a line search.

    ``start=None`` starts at the paper's ``z``, so it is never weaker than :class:`ALIE` against that
    rule; ``delta``, ``evals``, ``ratio`` as ByzFL. In a recipe ``aggregator`` is an Aggregator
    (``class_path`` + ``init_args``). See :func:`~fl_lightning.attacks.functional.optimal_alie`.
    """

    def __init__(self, aggregator: Aggregator, start: float | None = None, delta: float = 10.0, evals: int = 20,
                 ratio: float = 0.8, clients: ClientSpec | None = None, rounds: Sequence[int] | None = None,
                 of: str | Attack | None = None, extra_epochs: int = 0, lr: float | None = None,
                 batch_size: int | None = None) -> None:
        super().__init__(aggregator, start, delta, evals, ratio, clients, rounds, of, extra_epochs, lr, batch_size)

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """:func:`~fl_lightning.attacks.functional.optimal_alie` against the aggregator."""
        return F.optimal_alie(honest, own.shape[0], self.aggregator_fn(ctx), start=self.start,
                              delta=self.delta, evals=self.evals, ratio=self.ratio)


class OptimalIPM(_Optimised):
    """IPM whose ``epsilon`` maximises how far ``aggregator`` lands from the honest mean, found each round.

    ``start`` defaults to IPM's 0.5, so it is never weaker than :class:`IPM` against that rule.
    See :func:`~fl_lightning.attacks.functional.optimal_ipm`.
    """

    def __init__(self, aggregator: Aggregator, start: float = 0.5, delta: float = 10.0, evals: int = 20,
                 ratio: float = 0.8, clients: ClientSpec | None = None, rounds: Sequence[int] | None = None,
                 of: str | Attack | None = None, extra_epochs: int = 0, lr: float | None = None,
                 batch_size: int | None = None) -> None:
        super().__init__(aggregator, start, delta, evals, ratio, clients, rounds, of, extra_epochs, lr, batch_size)

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """:func:`~fl_lightning.attacks.functional.optimal_ipm` against the aggregator."""
        return F.optimal_ipm(honest, own.shape[0], self.aggregator_fn(ctx), start=self.start,
                             delta=self.delta, evals=self.evals, ratio=self.ratio)
