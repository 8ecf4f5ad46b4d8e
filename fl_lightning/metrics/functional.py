"""Attack and defense metrics as pure functions (the classes in this package call them)."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

#: client ids as a tensor of integers or any sequence of ints
IdSet = Union[Tensor, Sequence[int]]


def attack_success_rate(preds: Tensor, targets: Tensor, source: int | None, target: int | None) -> Tensor:
    """Share of test samples of class ``source`` predicted as ``target``.

    ``source=None`` (flip-all): the share of all samples misclassified. ``target=None``: the share of
    ``source`` samples predicted as anything else.

    Examples:
        >>> import torch
        >>> preds, targets = torch.tensor([7, 1, 7, 3]), torch.tensor([1, 1, 1, 3])
        >>> attack_success_rate(preds, targets, source=1, target=7)  # two of the three 1s read as 7
        tensor(0.6667)
    """
    hits, total = attack_success_counts(preds, targets, source, target)
    return hits / total.clamp_min(1)


def attack_success_counts(preds: Tensor, targets: Tensor, source: int | None,
                          target: int | None) -> tuple[Tensor, Tensor]:
    """Numerator and denominator of :func:`attack_success_rate`, to accumulate over batches."""
    preds, targets = preds.reshape(-1), targets.reshape(-1).to(preds.dtype)
    if source is None:
        return (preds != targets).sum().float(), torch.tensor(float(targets.numel()), device=preds.device)
    mask = targets == source
    wrong = preds[mask] == target if target is not None else preds[mask] != source
    return wrong.sum().float(), mask.sum().float()


def backdoor_success_rate(preds: Tensor, targets: Tensor, target: int) -> Tensor:
    """Share of triggered samples whose true label is not ``target`` that are predicted as ``target``.

    ``preds`` are the class predictions on the *triggered* inputs, ``targets`` the true labels of the
    clean inputs. Samples that already belong to ``target`` are left out: predicting them as the
    target is no success of the attack. With no such sample the rate is 0.
    """
    hits, total = backdoor_success_counts(preds, targets, target)
    return hits / total.clamp_min(1)


def backdoor_success_counts(preds: Tensor, targets: Tensor, target: int) -> tuple[Tensor, Tensor]:
    """Numerator and denominator of :func:`backdoor_success_rate`, to accumulate over batches."""
    preds, targets = preds.reshape(-1), targets.reshape(-1)
    if preds.numel() != targets.numel():
        raise ValueError(f"backdoor_success_rate: {preds.numel()} predictions for {targets.numel()} "
                         "labels; pass one predicted class per sample")
    eligible = targets != target
    return (eligible & (preds == target)).sum().float(), eligible.sum().float()



def detection_counts(flagged_ids: IdSet, attacker_ids: IdSet,
                     participating_ids: IdSet) -> tuple[Tensor, Tensor, Tensor]:
    """True positives, false positives and false negatives of one round's flagged clients.

    Only the round's ``participating_ids`` count: a flagged id or an attacker that did not take part
    is ignored. ``flagged_ids`` may also be a ``[K]`` bool mask aligned with ``participating_ids``
    (the ``"flagged"`` diagnostic of an aggregator). The counts are on ``flagged_ids``' device when it is
    a tensor, else on the CPU.
    """
    participating = _id_list(participating_ids, "participating_ids")
    device = flagged_ids.device if isinstance(flagged_ids, Tensor) else None
    if isinstance(flagged_ids, Tensor) and flagged_ids.dtype == torch.bool:
        if flagged_ids.numel() != len(participating):
            raise ValueError(f"detection_counts: a flagged mask of {flagged_ids.numel()} entries for "
                             f"{len(participating)} participating clients; pass one flag per client")
        flagged = {cid for cid, f in zip(participating, flagged_ids.reshape(-1).tolist()) if f}
    else:
        flagged = set(_id_list(flagged_ids, "flagged_ids")) & set(participating)
    attackers = set(_id_list(attacker_ids, "attacker_ids")) & set(participating)
    tp = len(flagged & attackers)
    return torch.tensor(float(tp), device=device), torch.tensor(float(len(flagged) - tp), device=device), \
        torch.tensor(float(len(attackers) - tp), device=device)


def detection_precision_recall(flagged_ids: IdSet, attacker_ids: IdSet,
                               participating_ids: IdSet) -> dict[str, Tensor]:
    """Precision and recall of the clients flagged in one round against the true attacker set.

    ``precision = TP / flagged`` and ``recall = TP / attackers``, both among the participating
    clients. The 0/0 cases are vacuously perfect: nothing flagged gives precision 1 (no false
    alarm was raised), no attacker taking part gives recall 1 (nothing was missed); the other
    figure then still exposes a bad detector.
    """
    return precision_recall_from_counts(*detection_counts(flagged_ids, attacker_ids, participating_ids))


def precision_recall_from_counts(tp: Tensor, fp: Tensor, fn: Tensor) -> dict[str, Tensor]:
    """Precision and recall from accumulated counts, 0/0 taken as 1 (see :func:`detection_precision_recall`)."""
    flagged, attackers = tp + fp, tp + fn
    one = torch.ones_like(tp)
    precision = torch.where(flagged > 0, tp / flagged.clamp_min(1), one)
    recall = torch.where(attackers > 0, tp / attackers.clamp_min(1), one)
    return {"precision": precision, "recall": recall}


def _id_list(ids: IdSet, name: str) -> list[int]:
    if isinstance(ids, Tensor):
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer client ids, got a {ids.dtype} tensor")
        return [int(i) for i in ids.reshape(-1).tolist()]
    return [int(i) for i in ids]
