"""Several attacks in one run, applied in list order: the calls the trainer makes.

Every helper takes the run's ``attacks`` list. An attack acts on a client only if the client is
in its :attr:`~Attack.attacker_ids`; ``local_config``, ``poison_batch`` and ``poison_updates`` act
only in the attack's active rounds, ``poison_dataset`` once at setup. Two attacks on one client
compose: the first one's output is the second one's input.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from fl_lightning.attacks.base import Attack
from fl_lightning.context import BatchPoisoner, LocalConfig, RoundContext, SetupContext
from fl_lightning.data.base import TensorData
from fl_lightning.tamper import LentTensors, lent_context


def setup_attacks(attacks: Sequence[Attack], ctx: SetupContext) -> None:
    """Set every attack up in list order at ``fit()`` start; raises ``ValueError`` on any bad input.

    Before calling each :meth:`~Attack.setup` it numbers attacks of the same type (state keys
    ``"LabelFlip"``, ``"LabelFlip#1"``, ...: distinct checkpoint entries and distinct seeded
    draws) and finds the attack each ``of=`` refers to, which must come earlier in the list.
    """
    for attack in attacks:
        if not isinstance(attack, Attack):
            raise TypeError(f"attacks must be Attack instances, got {type(attack).__name__}")
    if len({id(a) for a in attacks}) != len(attacks):
        raise ValueError("the same attack object is listed twice in attacks=[...]; create two attacks")
    seen: Counter[str] = Counter()
    keys = []
    for attack in attacks:
        name = type(attack).__name__
        keys.append(name if seen[name] == 0 else f"{name}#{seen[name]}")
        seen[name] += 1
    for attack, key in zip(attacks, keys):
        attack.bind(key)
    for index, attack in enumerate(attacks):
        if attack.of is not None:
            attack.bind(keys[index], _find_followed(attack, attacks, index))
        attack.setup(ctx)


def _find_followed(attack: Attack, attacks: Sequence[Attack], index: int) -> Attack:
    name, earlier = type(attack).__name__, list(attacks[:index])
    if isinstance(attack.of, Attack):
        if any(a is attack.of for a in earlier):
            return attack.of
        where = "after it" if any(a is attack.of for a in attacks) else "not in attacks=[...]"
        raise ValueError(f"{name}: the attack of={attack.of.state_key} is {where}; list it before {name}")
    if not isinstance(attack.of, str):
        raise TypeError(f"{name}: of must be an attack or its name, got {type(attack.of).__name__}")
    by_type = [a for a in earlier if type(a).__name__ == attack.of]
    exact = [a for a in earlier if a.state_key == attack.of]
    known = [a.state_key for a in earlier]
    if len(by_type) > 1:
        raise ValueError(f"{name}: of={attack.of!r} matches several earlier attacks {known}; "
                         f"name one by its key (e.g. '{attack.of}#1')")
    if by_type or exact:
        return (by_type or exact)[0]
    raise ValueError(f"{name}: of={attack.of!r} matches no attack listed before it "
                     f"(earlier attacks: {known}); list that attack first")


def all_attacker_ids(attacks: Sequence[Attack]) -> tuple[int, ...]:
    """Sorted ids of every client that belongs to at least one attack (the true attacker set)."""
    return tuple(sorted({cid for attack in attacks for cid in attack.attacker_ids}))


def poison_client_data(attacks: Sequence[Attack], client_id: int, data: TensorData) -> TensorData:
    """The client's training data after every owning attack's ``poison_dataset``, in list order.

    Called once per client at setup. Returns ``data`` itself when no attack owns the client; when
    only the labels change, ``data.with_targets(...)`` (so lazily loaded data stays lazy); otherwise
    a new :class:`TensorData` (tensors are never changed in place).
    """
    owners = [a for a in attacks if a.is_attacker(client_id) and type(a).poison_dataset is not Attack.poison_dataset]
    if not owners:
        return data
    original = inputs = getattr(data, "inputs", None)
    targets = data.targets
    for attack in owners:
        inputs, targets = attack.poison_dataset(client_id, inputs, targets)
    if inputs is original:
        return data.with_targets(targets)
    if original is None:
        raise TypeError(f"{type(data).__name__} keeps no .inputs tensor, so the attacks "
                        f"{[a.state_key for a in owners]} cannot rewrite client {client_id}'s inputs "
                        "once at setup; poison them per batch (poison_batch) instead")
    return TensorData(inputs, targets)


def client_config(attacks: Sequence[Attack], client_id: int, round_idx: int,
                  cfg: LocalConfig) -> LocalConfig:
    """A copy of ``cfg`` after ``local_config`` of every attack owning the client and active in the round.

    Applied in list order: extra epochs add up; a later attack's ``lr`` / ``batch_size`` wins.
    ``cfg`` itself is not modified.
    """
    cfg = dataclasses.replace(cfg)
    for attack in attacks:
        if attack.is_attacker(client_id) and attack.is_active(round_idx):
            cfg = attack.local_config(client_id, round_idx, cfg)
    return cfg


def batch_poisoner(attacks: Sequence[Attack], client_id: int, round_idx: int) -> BatchPoisoner | None:
    """``None`` when no batch of this client is poisoned in this round, else ``f(inputs, targets, generator)``.

    ``f`` applies ``poison_batch`` of every attack that owns the client, is active in the round and
    :attr:`~Attack.poisons_batches`, in list order, all drawing from the one ``generator``.
    """
    chain = [a for a in attacks
             if a.poisons_batches and a.is_attacker(client_id) and a.is_active(round_idx)]
    if not chain:
        return None

    def poison(inputs: Tensor, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One local batch through every poisoning attack of the chain."""
        for attack in chain:
            inputs, targets = attack.poison_batch(client_id, inputs, targets, generator)
        return inputs, targets

    return poison


def poison_round_updates(attacks: Sequence[Attack], updates: Tensor, ctx: RoundContext) -> Tensor:
    """The ``[K, N]`` updates after ``poison_updates`` of every active attack with a client in the round.

    Applied in list order, each attack seeing the previous one's output. Raises ``RuntimeError``
    if an attack changes the shape or writes a row that is not its own. Returns ``updates``
    itself when no attack acted; the attacks shipped here never modify their input in place.
    When the round loop has scanned the rows (``ctx.finite``), only the rows an attack rewrote are
    scanned again, so the next attack sees an up-to-date mask.
    """
    for attack in attacks:
        if not attack.is_active(ctx.round):
            continue
        own = attack.attacker_rows(ctx)
        if not own:
            continue
        lent = LentTensors({"updates": updates, **lent_context(ctx)})
        result = attack.poison_updates(updates, ctx)
        _check_no_foreign_writes(attack, lent, own)
        if result is not updates:
            _check_own_rows_only(attack, updates, result, own, ctx.finite)
            if ctx.finite is not None:
                finite = ctx.finite.clone()
                finite[own] = torch.isfinite(result[own]).all(dim=1).to(finite.device)
                ctx = dataclasses.replace(ctx, finite=finite)
        updates = result
    return updates


def _check_no_foreign_writes(attack: Attack, lent: LentTensors, own: list[int]) -> None:
    """No in-place write into honest rows of the input, nor into the round's context tensors."""
    changed = lent.changed({"updates": own})
    if changed:
        raise RuntimeError(f"{attack.state_key}.poison_updates wrote in place into {', '.join(changed)}, which it "
                           f"does not own; write only its attackers' rows {own} of updates (from attacker_rows(ctx)) "
                           "and treat ctx's tensors as read-only (clone before changing them)")


def _check_own_rows_only(attack: Attack, before: Tensor, after: Tensor, own: list[int],
                         finite: Tensor | None = None) -> None:
    """Every row but ``own`` is unchanged; ``finite`` (the round's scan) spares a NaN-aware rescan."""
    name = attack.state_key
    if after.shape != before.shape:
        raise RuntimeError(f"{name}.poison_updates returned shape {tuple(after.shape)} for updates of "
                           f"shape {tuple(before.shape)}; return the same [K, N] shape")
    own_set = set(own)
    for row in range(before.shape[0]):
        if row in own_set or torch.equal(before[row], after[row]):
            continue
        # a finite row that is not equal has changed; only a row with NaN needs the NaN-aware compare
        known_finite = finite is not None and bool(finite[row])
        if known_finite or not torch.allclose(before[row], after[row], rtol=0.0, atol=0.0, equal_nan=True):
            raise RuntimeError(f"{name}.poison_updates changed row {row}, which is not one of its "
                               f"attackers' rows {own}; write only rows from attacker_rows(ctx)")


def attack_metrics(attacks: Sequence[Attack]) -> list[tuple[Attack, dict[str, Metric]]]:
    """Each attack with its fresh :meth:`~Attack.metrics`, log keys made unique across the run.

    A key already used by an earlier attack gets the attack's state key appended
    (``"attack/asr"`` then ``"attack/asr/LabelFlip#1"``).
    """
    used: set[str] = set()
    out = []
    for attack in attacks:
        metrics = {}
        for key, metric in attack.metrics().items():
            unique = key if key not in used else f"{key}/{attack.state_key}"
            used.add(unique)
            metrics[unique] = metric
        out.append((attack, metrics))
    return out


def update_attack_metrics(pairs: list[tuple[Attack, dict[str, Metric]]],
                          predict: Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor,
                          preds: Tensor) -> None:
    """Feed one test batch to every attack's metrics (``pairs`` from :func:`attack_metrics`)."""
    for attack, metrics in pairs:
        if metrics:
            attack.update_metrics(metrics, predict, inputs, targets, preds)
