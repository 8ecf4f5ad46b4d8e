"""The attack plug-in point: who attacks (declared once), and the hooks a round calls."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor
from torchmetrics import Metric

from fl_lightning.context import LocalConfig, RoundContext, SetupContext
from fl_lightning.seeding import derive_seed, numpy_rng

#: who attacks: a count, a fraction of all clients, explicit ids, or a predicate over a client's labels
ClientSpec = Union[int, float, Sequence[int], Callable[[Tensor], bool]]


class Attack:
    """Base class of every attack.

    The attacker set is declared once (``clients``) and resolved deterministically from the
    trainer's seed in :meth:`setup`; or, with ``of=<an earlier attack>`` (the attack object, or its
    :attr:`state_key` / class name when :func:`~fl_lightning.attacks.compose.setup_attacks` sets
    the attacks up), it is that attack's resolved set, so two attacks act on the same clients
    (a backdoor and its model replacement). Data-poisoning attacks override :meth:`poison_dataset` (once
    per client) or :meth:`poison_batch` (every local batch); model-poisoning attacks override
    :meth:`poison_updates`, which may read every row but writes only its own attackers' rows.
    """

    #: whether the attack's clients take part in every round where it is active, whatever the
    #: client sampling draws (the sampled honest clients make room); e.g. model replacement
    joins_active_rounds: bool = False

    def __init__(
        self,
        clients: ClientSpec | None = None,
        rounds: Sequence[int] | range | None = None,
        extra_epochs: int = 0,
        lr: float | None = None,
        batch_size: int | None = None,
        of: str | Attack | None = None,
    ) -> None:
        self.clients = clients
        self.of = of
        self.rounds = rounds
        self.extra_epochs = extra_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.attacker_ids: tuple[int, ...] = ()
        self._key: str | None = None
        self._ready = False

    # -- attacker set -------------------------------------------------------------------------
    @property
    def eligibility(self) -> str:
        """Who :meth:`eligible` admits, in words (empty: every client)."""
        return ""

    def eligible(self, client_targets: Tensor) -> bool:
        """Whether a client with these labels may be drawn as an attacker (all may, by default)."""
        return True

    def setup(self, ctx: SetupContext) -> None:
        """Resolve :attr:`attacker_ids` (``clients=None``: one client, or ``of``'s set); validate against the run."""
        self._validate_common(ctx)
        if getattr(self, "of", None) is not None:
            if self.clients is not None:
                raise ValueError(f"{type(self).__name__}: give clients= or of=, not both "
                                 f"(got clients={self.clients!r}, of={_loggable(self.of)!r})")
            self.attacker_ids = tuple(self._followed().attacker_ids)
        else:
            spec = 1 if self.clients is None else self.clients
            self.attacker_ids = resolve_clients(spec, ctx, self.eligible, self.state_key, self.eligibility)
        self._ready = True

    def _followed(self) -> "Attack":
        """The set-up attack named by ``of`` whose attacker set this attack shares."""
        name = type(self).__name__
        target = self.of if isinstance(self.of, Attack) else getattr(self, "_of", None)
        if target is None:
            raise ValueError(f"{name}: of={self.of!r} names an attack; set the attacks up with "
                             "fl_lightning.attacks.setup_attacks(attacks, ctx) so the name can be "
                             "found, or pass the attack object itself")
        if target is self:
            raise ValueError(f"{name}: of= cannot name the attack itself")
        if not target.is_setup:
            raise ValueError(f"{name}: the attack of={target.state_key} is not set up yet; list it "
                             f"before {name} in attacks=[...]")
        return target

    @property
    def is_setup(self) -> bool:
        """Whether :meth:`setup` has resolved the attacker set."""
        return getattr(self, "_ready", False)

    def _validate_common(self, ctx: SetupContext) -> None:
        name = type(self).__name__
        if self.extra_epochs < 0:
            raise ValueError(f"{name}: extra_epochs must be >= 0, got {self.extra_epochs}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"{name}: lr must be > 0, got {self.lr}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"{name}: batch_size must be > 0, got {self.batch_size}")
        if self.rounds is not None:
            if isinstance(self.rounds, (int, str)) or not all(
                    isinstance(r, int) and not isinstance(r, bool) for r in self.rounds):
                raise TypeError(f"{name}: rounds must be a list or range of round indices, "
                                f"got {self.rounds!r}")
            bad = [r for r in self.rounds if not 0 <= r < ctx.rounds]
            if bad:
                raise ValueError(f"{name}: rounds {bad} are outside the run's rounds "
                                 f"0..{ctx.rounds - 1}; pass rounds within the run or raise rounds=")

    def is_attacker(self, client_id: int) -> bool:
        """Whether ``client_id`` belongs to this attack."""
        return client_id in self.attacker_ids

    def is_active(self, round_idx: int) -> bool:
        """Whether the attack acts in round ``round_idx`` (every round unless ``rounds`` says otherwise)."""
        return self.rounds is None or round_idx in self.rounds

    # -- hooks ------------------------------------------------------------------------------------
    def poison_dataset(self, client_id: int, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Data poisoning once per attacking client at setup; returns new tensors (never in place)."""
        return inputs, targets

    def poison_batch(self, client_id: int, inputs: Tensor, targets: Tensor,
                     generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Data poisoning of every local batch of an attacking client (e.g. a backdoor)."""
        return inputs, targets

    @property
    def poisons_batches(self) -> bool:
        """Whether :meth:`poison_batch` is overridden (engines then call it on every batch)."""
        return type(self).poison_batch is not Attack.poison_batch

    def local_config(self, client_id: int, round_idx: int, cfg: LocalConfig) -> LocalConfig:
        """Training overrides for an attacking client: extra epochs, learning rate, batch size."""
        cfg.epochs += self.extra_epochs
        if self.lr is not None:
            cfg.lr = self.lr
        if self.batch_size is not None:
            cfg.batch_size = self.batch_size
        return cfg

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """Model poisoning: return the ``[K, N]`` updates with this attack's rows rewritten."""
        return updates

    def attacker_rows(self, ctx: RoundContext) -> list[int]:
        """Rows of the update matrix that belong to this attack's clients in this round."""
        return [row for row, cid in enumerate(ctx.client_ids) if cid in self.attacker_ids]

    def other_rows(self, ctx: RoundContext) -> list[int]:
        """Rows of every other client of the round: what an omniscient attack treats as honest.

        An attack knows only its own clients, so the clients of other attacks count as honest here.
        """
        return [row for row, cid in enumerate(ctx.client_ids) if cid not in self.attacker_ids]

    def round_generator(self, ctx: RoundContext, *salt: object) -> torch.Generator:
        """A generator for this attack's random choice named by ``salt`` in this round.

        Derived from (run seed, round, attack key, salt) only, so it is reproducible, survives resume
        exactly and does not depend on which other clients were sampled in the round.
        """
        return ctx.generator(derive_seed(0, self.state_key, *salt))

    # -- measurement --------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Metric]:
        """Metrics evaluated on the test set every round, keyed by their log name."""
        return {}

    def update_metrics(self, metrics: dict[str, Metric], predict: Callable[[Tensor], Tensor],
                       inputs: Tensor, targets: Tensor, preds: Tensor) -> None:
        """Feed one test batch to :meth:`metrics` (``predict`` maps inputs to class predictions)."""
        for metric in metrics.values():
            metric.update(preds, targets)

    # -- state -----------------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """Key of this attack's state inside a checkpoint (``"Name#i"`` for the i-th duplicate type).

        It also names the seeded draw of the attacker set, so two attacks of the same type in one
        run (numbered by :func:`fl_lightning.attacks.compose.setup_attacks`) draw different clients.
        """
        return getattr(self, "_key", None) or type(self).__name__

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters to record with the run: scalars as they are, anything else as text.

        The declared ``clients`` spec and ``rounds`` are included, and ``attacker_ids`` holds the
        resolved attacker set (comma-separated) once :meth:`setup` has run.
        """
        out = {k: _loggable(v) for k, v in vars(self).items()
               if not k.startswith("_") and k != "attacker_ids"}
        out["attacker_ids"] = ",".join(map(str, self.attacker_ids))
        return out

    def state_dict(self) -> dict[str, Any]:
        """State carried across rounds (the resolved attacker set, by default)."""
        return {"attacker_ids": list(self.attacker_ids)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.attacker_ids = tuple(int(i) for i in state.get("attacker_ids", self.attacker_ids))

    def __repr__(self) -> str:
        shown = {k: v if isinstance(v, (list, tuple, range)) else _loggable(v)
                 for k, v in vars(self).items() if not k.startswith("_") and k != "attacker_ids"}
        args = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{type(self).__name__}({args}, attacker_ids={self.attacker_ids})"


def is_number(value: object) -> bool:
    """Whether ``value`` is a finite real number (bools excluded), for the attacks' setup checks."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _loggable(value: Any) -> int | float | str | bool | None:
    """A scalar a logger accepts: simple values as they are, sequences, callables, tensors as text."""
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    if isinstance(value, Attack):
        return value.state_key
    if isinstance(value, Tensor):
        return f"tensor{list(value.shape)}"
    if isinstance(value, (list, tuple, range)):
        return str([_loggable(v) for v in value])
    if callable(value):
        return getattr(value, "__qualname__", None) or getattr(value, "__name__", None) or repr(value)
    return repr(value)


def resolve_clients(spec: ClientSpec, ctx: SetupContext, eligible: Callable[[Tensor], bool],
                    name: str, eligibility: str = "") -> tuple[int, ...]:
    """Turn a :data:`ClientSpec` into sorted client ids, drawing with the run's seed.

    ``eligibility`` says who ``eligible`` admits (e.g. "holders of class 1"), for error messages.
    """
    n = ctx.num_clients
    if callable(spec):
        return tuple(i for i in range(n) if spec(ctx.client_targets[i]))
    if isinstance(spec, bool):
        raise TypeError(f"{name}: clients must be a count, a fraction, a list of ids or a predicate")
    if isinstance(spec, (list, tuple, range)):
        ids = sorted({int(i) for i in spec})
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"{name}: client ids {bad} do not exist (clients are 0..{n - 1})")
        return tuple(ids)
    if isinstance(spec, float):
        if not 0.0 <= spec <= 1.0:
            raise ValueError(f"{name}: a fraction of clients must be in [0, 1], got {spec}")
        count = int(round(spec * n))
    elif isinstance(spec, int):
        count = spec
    else:
        raise TypeError(f"{name}: clients must be a count, a fraction, a list of ids or a predicate, "
                        f"got {type(spec).__name__}")
    if count < 0:
        raise ValueError(f"{name}: the number of attackers must be >= 0, got {count}")
    pool = [i for i in range(n) if eligible(ctx.client_targets[i])]
    if count > len(pool):
        who = f" ({eligibility})" if eligibility else ""
        raise ValueError(f"{name}: asked for {count} attackers but only {len(pool)} of the "
                         f"{n} clients are eligible{who}; ask for at most {len(pool)}")
    rng = numpy_rng(ctx.seed, "attackers", name)
    return tuple(sorted(int(i) for i in rng.choice(pool, size=count, replace=False))) if count else ()
