"""Amazon Kindle Store reviews (5-core JSON lines) as binary sentiment: token ids for FastText."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from fl_lightning.checks import check_fraction, check_int, check_optional_int, check_seed
from fl_lightning.data.base import FederatedDataset, TensorData
from fl_lightning.data.files import DataFileError, DataFileNotFoundError, open_maybe_gzip
from fl_lightning.seeding import numpy_rng

PAD, UNK = 0, 1
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers (``don't`` stays one token); everything else separates tokens."""
    return _TOKEN.findall(text.lower())


def build_vocab(token_lists: list[list[str]], vocab_size: int) -> dict[str, int]:
    """The ``vocab_size - 2`` most frequent tokens -> ids 2.., ties broken alphabetically (0 pad, 1 unknown)."""
    counts = Counter(token for tokens in token_lists for token in tokens)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: max(vocab_size - 2, 0)]
    return {token: i + 2 for i, (token, _) in enumerate(ranked)}


def encode(token_lists: list[list[str]], vocab: dict[str, int], max_len: int) -> torch.Tensor:
    """``[n, max_len]`` int64 ids: truncated to ``max_len``, right-padded with 0, unknown words 1."""
    out = np.zeros((len(token_lists), max_len), dtype=np.int64)
    for row, tokens in enumerate(token_lists):
        ids = [vocab.get(t, UNK) for t in tokens[:max_len]]
        out[row, : len(ids)] = ids
    return torch.from_numpy(out)


class AmazonReviews(FederatedDataset):
    """Kindle Store 5-core reviews from ``path`` (JSON lines, gzipped or not): ratings 1-2 -> 0, 4-5 -> 1.

    As in the paper: 3-star reviews are dropped and a seeded 80/20 split gives train and test. The
    vocabulary (``vocab_size`` ids including 0 = padding and 1 = unknown, so it matches
    ``FastText(vocab_size=...)``) is built from the training split only. Inputs are
    ``[n, max_len]`` int64 token ids, targets int64 0/1. A review without ``reviewText`` (the
    2018 dump has some) counts as empty text. ``max_reviews`` keeps only the first kept reviews
    of the file, for quick runs. After :meth:`load`, ``vocab`` maps token -> id.
    """

    num_classes = 2
    class_names = ("negative", "positive")

    def __init__(self, path: str | Path, vocab_size: int = 25000, max_len: int = 200, seed: int = 0,
                 test_fraction: float = 0.2, max_reviews: int | None = None) -> None:
        # vocab_size >= 3: padding, unknown and at least one word
        check_int(vocab_size, "vocab_size", "AmazonReviews", minimum=3)
        check_int(max_len, "max_len", "AmazonReviews", minimum=1)
        check_fraction(test_fraction, "test_fraction", "AmazonReviews", include_zero=False, include_one=False)
        check_seed(seed, "AmazonReviews")
        check_optional_int(max_reviews, "max_reviews", "AmazonReviews", minimum=1)
        self.path = Path(path)
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.seed = seed
        self.test_fraction = test_fraction
        self.max_reviews = max_reviews
        self.vocab: dict[str, int] = {}

    def read(self) -> tuple[list[str], list[int]]:
        """Texts and 0/1 labels of the non-neutral reviews, in file order."""
        if not self.path.is_file():
            raise DataFileNotFoundError(f"{self.path}: file not found; expected Amazon reviews as JSON lines "
                                "(e.g. Kindle_Store_5.json.gz)")
        texts: list[str] = []
        labels: list[int] = []
        try:
            with open_maybe_gzip(self.path, "rt") as handle:
                for line_no, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    rating, text = self._parse(line, line_no)
                    if rating == 3:
                        continue
                    texts.append(text)
                    labels.append(1 if rating >= 4 else 0)
                    if self.max_reviews is not None and len(labels) >= self.max_reviews:
                        break
        except (OSError, EOFError, UnicodeDecodeError) as err:
            raise DataFileError(f"{self.path}: cannot be read ({type(err).__name__}: {err}); expected UTF-8 "
                                "JSON lines, optionally gzipped") from err
        if not labels:
            raise DataFileError(f"{self.path}: no review with a rating other than 3; expected Amazon reviews")
        return texts, labels

    def _parse(self, line: str, line_no: int) -> tuple[int, str]:
        where = f"{self.path}, line {line_no}"
        try:
            review = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{where}: not valid JSON ({err.msg}); expected one JSON object per line") from None
        if not isinstance(review, dict) or "overall" not in review:
            raise DataFileError(f"{where}: expected a JSON object with an 'overall' rating (1-5)")
        try:
            rating = float(review["overall"])
        except (TypeError, ValueError):
            raise DataFileError(f"{where}: 'overall' is {review['overall']!r}, expected a rating 1-5") from None
        if rating not in (1, 2, 3, 4, 5):
            raise DataFileError(f"{where}: 'overall' is {review['overall']!r}, expected a rating 1-5")
        text = review.get("reviewText") or ""
        return int(rating), text if isinstance(text, str) else str(text)

    def load(self) -> tuple[TensorData, TensorData]:
        """``[n, max_len]`` int64 token ids and int64 0/1 labels for train and test."""
        texts, labels = self.read()
        tokens = [tokenize(t) for t in texts]
        order = numpy_rng(self.seed, "amazon", "split").permutation(len(labels))
        num_test = int(round(len(labels) * self.test_fraction))
        if len(labels) >= 2:
            num_test = min(max(num_test, 1), len(labels) - 1)
        test_idx, train_idx = np.sort(order[:num_test]), np.sort(order[num_test:])
        self.vocab = build_vocab([tokens[i] for i in train_idx], self.vocab_size)
        y = torch.tensor(labels, dtype=torch.long)

        def part(idx: np.ndarray) -> TensorData:
            return TensorData(encode([tokens[i] for i in idx], self.vocab, self.max_len), y[torch.from_numpy(idx)])

        return part(train_idx), part(test_idx)

    def __repr__(self) -> str:
        return (f"AmazonReviews(path={str(self.path)!r}, vocab_size={self.vocab_size}, max_len={self.max_len}, "
                f"seed={self.seed})")
