"""Generated data of any shape: the stand-in for CIFAR-10, Amazon and LOAN in quick runs and tests."""
from __future__ import annotations

from typing import Sequence

import torch

from fl_lightning.checks import check_int, check_optional_int, check_seed
from fl_lightning.data.base import FederatedDataset, TensorData

_OWNER = "SyntheticDataset"


class SyntheticDataset(FederatedDataset):
    """``n`` training and ``n_test`` test samples of ``shape``, ``num_classes`` classes, learnable, seeded.

    Float inputs are a class prototype plus unit noise (``separation`` scales the prototypes), so a
    model can learn them in a few steps. With ``vocab_size`` the inputs are int64 token ids
    ``[*shape]`` in ``1..vocab_size-1`` (0 is padding, as :class:`~fl_lightning.data.AmazonReviews`),
    every class drawing most of its tokens from its own slice of the vocabulary. With ``num_keys``
    every training sample gets a key ``"k0".."k{num_keys-1}"`` for the ``by_key`` partition (LOAN's
    US states). Labels are balanced: sample ``i`` has class ``i % num_classes`` before shuffling.
    """

    def __init__(self, shape: Sequence[int], num_classes: int, n: int = 256, n_test: int | None = None,
                 vocab_size: int | None = None, num_keys: int | None = None, separation: float = 1.0,
                 seed: int = 0) -> None:
        self.shape = tuple(check_int(s, "shape", _OWNER, minimum=1) for s in shape)
        if not self.shape:
            raise ValueError(f"{_OWNER}: shape must be non-empty positive sizes, got {list(shape)}")
        check_int(num_classes, "num_classes", _OWNER, minimum=1)
        check_int(n, "n", _OWNER, minimum=1)
        check_seed(seed, _OWNER)
        check_optional_int(n_test, "n_test", _OWNER, minimum=1)
        check_optional_int(vocab_size, "vocab_size", _OWNER, minimum=2)
        check_optional_int(num_keys, "num_keys", _OWNER, minimum=1, maximum=n)
        if n < num_classes:
            raise ValueError(f"{_OWNER}: need n >= num_classes ({num_classes}) for one sample of each class, got n={n}")
        if vocab_size is not None and vocab_size < num_classes + 1:
            raise ValueError(f"{_OWNER}: vocab_size must be >= num_classes + 1 (0 is padding), "
                             f"got {vocab_size} for {num_classes} classes")
        self.n_test = max(num_classes, n // 4) if n_test is None else n_test
        self.num_classes = num_classes
        self.class_names = tuple(str(c) for c in range(num_classes))
        self.n, self.vocab_size, self.num_keys = n, vocab_size, num_keys
        self.separation, self.seed = separation, seed

    def load(self) -> tuple[TensorData, TensorData]:
        """Training and test tensors, the same for the same arguments."""
        generator = torch.Generator().manual_seed(self.seed)
        labels = torch.arange(self.n + self.n_test) % self.num_classes
        labels = labels[torch.randperm(len(labels), generator=generator)]
        inputs = self._tokens(labels, generator) if self.vocab_size else self._floats(labels, generator)
        return (TensorData(inputs[:self.n], labels[:self.n]),
                TensorData(inputs[self.n:], labels[self.n:]))

    def _floats(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        prototypes = self.separation * torch.randn(self.num_classes, *self.shape, generator=generator)
        return prototypes[labels] + torch.randn(len(labels), *self.shape, generator=generator)

    def _tokens(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        words = self.vocab_size - 1                                  # ids 1..vocab_size-1
        width = max(1, words // self.num_classes)
        own = 1 + (labels * width).view(-1, *([1] * len(self.shape))) \
            + torch.randint(0, width, (len(labels), *self.shape), generator=generator)
        anywhere = torch.randint(1, self.vocab_size, (len(labels), *self.shape), generator=generator)
        pick_own = torch.rand(len(labels), *self.shape, generator=generator) < 0.7
        return torch.where(pick_own, own.clamp_max(self.vocab_size - 1), anywhere)

    def partition_keys(self) -> list | None:
        """``"k{i % num_keys}"`` for training sample ``i`` when ``num_keys`` is set."""
        return None if self.num_keys is None else [f"k{i % self.num_keys}" for i in range(self.n)]

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in (("vocab_size", self.vocab_size), ("num_keys", self.num_keys))
                        if v is not None)
        return (f"SyntheticDataset(shape={list(self.shape)}, num_classes={self.num_classes}, n={self.n}, "
                f"n_test={self.n_test}{extra}, seed={self.seed})")
