"""The attack plug-in point: who attacks (declared once), the hooks a round calls, and the attack's state."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from fl_lightning.attacks.selectors import ClientSpec, check_client_spec, resolve_clients
from fl_lightning.checks import check_int, check_optional_int, check_positive
from fl_lightning.context import LocalConfig, RoundContext, SetupContext
from fl_lightning.seeding import derive_seed

__all__ = ["Attack", "AttackState", "ClientSpec", "ModelPoisoningAttack", "resolve_clients"]


@dataclass
class AttackState:
    """What an attack learns once the run is known, declared in one place (not written onto it from outside).

    ``key`` names the attack in checkpoints and seeded draws (``"LabelFlip#1"`` for a second
    LabelFlip), ``followed`` is the attack its ``of=`` names, both given by
    :func:`~fl_lightning.attacks.compose.setup_attacks`; ``attacker_ids`` is resolved by
    :meth:`Attack.setup`; ``ready`` says setup has run.
    """

    attacker_ids: tuple[int, ...] = ()
    key: str | None = None
    followed: "Attack | None" = None
    ready: bool = False


class Attack:
    """Base class of every attack.

    The attacker set is declared once (``clients``) and resolved deterministically from the
    trainer's seed in :meth:`setup`; or, with ``of=<an earlier attack>`` (the attack object, or its
    :attr:`state_key` / class name when :func:`~fl_lightning.attacks.compose.setup_attacks` sets
    the attacks up), it is that attack's resolved set, so two attacks act on the same clients
    (a backdoor and its model replacement). Data-poisoning attacks override :meth:`poison_dataset` (once
    per client) or :meth:`poison_batch` (every local batch); model-poisoning attacks override
    :meth:`poison_updates`, which may read every row but writes only its own attackers' rows.
    Hyper-parameters are checked when the attack is built; what depends on the data at ``fit()``
    start. Run-time state lives in :attr:`state` (an :class:`AttackState`).
    """

    #: whether the attack's clients take part in every round where it is active, whatever the
    #: client sampling draws (the sampled honest clients make room); e.g. model replacement
    joins_active_rounds: bool = False

    def __init__(
        self,
        clients: ClientSpec | None = None,
        rounds: Sequence[int] | None = None,
        extra_epochs: int = 0,
        lr: float | None = None,
        batch_size: int | None = None,
        of: str | Attack | None = None,
        extra_steps: int = 0,
    ) -> None:
        name = type(self).__name__
        check_client_spec(clients, name)
        _check_rounds(rounds, name)
        check_int(extra_epochs, "extra_epochs", name, minimum=0)
        check_int(extra_steps, "extra_steps", name, minimum=0)
        if lr is not None:
            check_positive(lr, "lr", name)
        check_optional_int(batch_size, "batch_size", name, minimum=1)
        if of is not None and not isinstance(of, (str, Attack)):
            raise TypeError(f"{name}: of must be an earlier attack or its name, got {type(of).__name__}")
        self.clients = clients
        self.of = of
        self.rounds = rounds
        self.extra_epochs = extra_epochs
        self.extra_steps = extra_steps
        self.lr = lr
        self.batch_size = batch_size
        self.state = AttackState()

    @property
    def attacker_ids(self) -> tuple[int, ...]:
        """The resolved attacker set (sorted client ids; empty before :meth:`setup`)."""
        return self.state.attacker_ids

    # -- attacker set -------------------------------------------------------------------------
    @property
    def eligibility(self) -> str:
        """Who :meth:`eligible` admits, in words (empty: every client)."""
        return ""

    def eligible(self, client_targets: Tensor) -> bool:
        """Whether a client with these labels may be drawn as an attacker (all may, by default)."""
        return True

    def bind(self, key: str, followed: "Attack | None" = None) -> None:
        """Name the attack within its run and give it the attack its ``of=`` names (called by ``setup_attacks``)."""
        self.state = AttackState(key=key, followed=followed)

    def setup(self, ctx: SetupContext) -> None:
        """Resolve :attr:`attacker_ids` (``clients=None``: one client, or ``of``'s set); validate against the run."""
        self._check_rounds_fit(ctx)
        check_local_work(type(self).__name__, self.extra_epochs, self.extra_steps, ctx.local_steps)
        if self.of is not None:
            if self.clients is not None:
                raise ValueError(f"{type(self).__name__}: give clients= or of=, not both "
                                 f"(got clients={self.clients!r}, of={_loggable(self.of)!r})")
            self.state.attacker_ids = tuple(self._followed().attacker_ids)
        else:
            spec = 1 if self.clients is None else self.clients
            self.state.attacker_ids = resolve_clients(spec, ctx, self.eligible, self.state_key, self.eligibility)
        self.state.ready = True

    def _followed(self) -> "Attack":
        """The set-up attack named by ``of`` whose attacker set this attack shares."""
        name = type(self).__name__
        target = self.of if isinstance(self.of, Attack) else self.state.followed
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
        return self.state.ready

    def _check_rounds_fit(self, ctx: SetupContext) -> None:
        if self.rounds is not None:
            bad = [r for r in self.rounds if not 0 <= r < ctx.num_rounds]
            if bad:
                raise ValueError(f"{type(self).__name__}: rounds {bad} are outside the run's rounds "
                                 f"0..{ctx.num_rounds - 1}; pass rounds within the run or raise rounds=")

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
        """Training overrides for an attacking client: extra epochs or steps, learning rate, batch size."""
        cfg.epochs += self.extra_epochs
        if cfg.steps is not None:
            cfg.steps += self.extra_steps
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
        return self.state.key or type(self).__name__

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters to record with the run: scalars as they are, anything else as text.

        The declared ``clients`` spec and ``rounds`` are included, and ``attacker_ids`` holds the
        resolved attacker set (comma-separated) once :meth:`setup` has run.
        """
        out = {k: _loggable(v) for k, v in self._settings().items()}
        out["attacker_ids"] = ",".join(map(str, self.attacker_ids))
        return out

    def _settings(self) -> dict[str, Any]:
        """The hyper-parameters: public attributes, without the run-time :attr:`state`."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "state"}

    def state_dict(self) -> dict[str, Any]:
        """State carried across rounds: the resolved attacker set (subclasses add theirs)."""
        return {"attacker_ids": list(self.state.attacker_ids)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.state.attacker_ids = tuple(int(i) for i in state.get("attacker_ids", self.state.attacker_ids))

    def __repr__(self) -> str:
        shown = {k: v if isinstance(v, (list, tuple, range)) else _loggable(v)
                 for k, v in self._settings().items()}
        args = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{type(self).__name__}({args}, attacker_ids={self.attacker_ids})"


class ModelPoisoningAttack(Attack):
    """An attack that rewrites its rows each active round with a function of :mod:`fl_lightning.attacks.functional`.

    Subclasses implement :meth:`craft`. An ``omniscient`` attack reads the round's other finite rows
    as the honest ones (it knows only its own clients, so another attack's rows count as honest);
    with none usable its rows stay as trained. Honest rows are never written; a copy is returned.
    """

    #: whether :meth:`craft` needs the other clients' rows
    omniscient: bool = True

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """The ``[A, N]`` rows the attackers send, from the honest ``[H, N]`` and their own ``[A, N]`` rows.

        ``ctx`` is the round restricted to those rows in that order (``[honest; own]``).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement craft(honest, own, ctx)")

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """A copy of ``updates`` whose attacker rows are :meth:`craft`'s."""
        out = updates.clone()
        rows = self.attacker_rows(ctx)
        if not rows:
            return out
        honest_rows = self.honest_rows(updates, ctx)
        if self.omniscient and not honest_rows:
            return out
        crafted = self.craft(updates[honest_rows], updates[rows], ctx.select(honest_rows + rows))
        out[rows] = crafted.to(device=updates.device, dtype=updates.dtype)
        return out

    def honest_rows(self, updates: Tensor, ctx: RoundContext) -> list[int]:
        """The other clients' finite rows; ``ctx.finite`` is used when the round loop has scanned them."""
        others = self.other_rows(ctx)
        if ctx.finite is not None:
            return [row for row in others if bool(ctx.finite[row])]
        if not others:
            return []
        keep = torch.isfinite(updates[others]).all(dim=1).tolist()
        return [row for row, kept in zip(others, keep) if kept]


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


def _check_rounds(rounds: Any, owner: str) -> None:
    """``rounds`` is ``None`` or a list / range of round indices (checked against the run at ``fit()`` start)."""
    if rounds is None:
        return
    if isinstance(rounds, (int, str, bytes)) or not isinstance(rounds, (list, tuple, range)):
        raise TypeError(f"{owner}: rounds must be a list or range of round indices, got {rounds!r}")
    for r in rounds:
        check_int(r, "rounds (a round index)", owner, minimum=0)


def check_local_work(name: str, extra_epochs: int, extra_steps: int, local_steps: int | None) -> None:
    """``ValueError`` when an attack's extra local work is counted in the unit the run does not use."""
    if local_steps is None and extra_steps:
        raise ValueError(f"{name}: extra_steps={extra_steps} needs a run that counts local steps; pass "
                         "FederatedTrainer(local_steps=...) or use extra_epochs")
    if local_steps is not None and extra_epochs:
        raise ValueError(f"{name}: extra_epochs={extra_epochs} has no effect when FederatedTrainer(local_steps="
                         f"{local_steps}) counts steps; pass extra_steps=... and extra_epochs=0")
