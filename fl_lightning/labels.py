"""The one question every label-using feature asks: does this data carry integer class labels?

A sample is whatever the module's ``training_step`` takes; only some features read a label from it
(the ``classes``/``dirichlet`` partitions, label-flip and backdoor attacks, ``holders_of``, class
histograms, attack success rates). Each asks :func:`require_labels` before round 0, so unlabeled
data (``targets is None``) or regression targets (floating point) are refused with a message that
names the feature, instead of failing, or silently dropping samples, later.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

#: what to use instead when a feature needs class labels the data does not have
NO_LABEL_FIX = ("use partition='iid' or 'size_skew', a partition given as index lists or a key function, "
                "and attacks that need no labels (SignFlip, ALIE, IPM, GaussianNoise, ...)")


class MissingLabelsError(ValueError):
    """A feature that reads class labels was given data without integer labels; the message names both."""


def has_class_labels(targets: Tensor | None) -> bool:
    """Whether ``targets`` are integer class labels (not ``None``, not floating point)."""
    return targets is not None and not targets.is_floating_point() and not targets.is_complex()


def require_labels(targets: Tensor | None, feature: str, fix: str = NO_LABEL_FIX) -> Tensor:
    """``targets`` when they are integer class labels, else a :class:`MissingLabelsError` naming ``feature``."""
    if targets is None:
        raise MissingLabelsError(f"{feature} needs integer class labels, but the samples carry none "
                                 f"(the dataset's samples have no label the library can read); {fix}")
    if not has_class_labels(targets):
        raise MissingLabelsError(f"{feature} needs integer class labels, but the targets are {targets.dtype} "
                                 f"(a regression task); {fix}")
    return targets


def require_all_labels(targets: Sequence[Tensor | None], feature: str, fix: str = NO_LABEL_FIX) -> list[Tensor]:
    """:func:`require_labels` over every client's targets (one message for the first client without labels)."""
    return [require_labels(t, feature, fix) for t in targets]
