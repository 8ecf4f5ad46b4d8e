"""Amazon reviews from JSON-lines fixtures (plain and gzipped)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from fl_lightning.data import AmazonReviews, DataFileError, DataFileNotFoundError
from fl_lightning.data.amazon import build_vocab, tokenize

REVIEWS = [
    ("Great book, loved it! Great story.", 5), ("Boring and too long.", 1), ("It was ok.", 3),
    ("Loved the characters, great pacing.", 4), ("Terrible. Don't buy.", 2), ("great great great", 5),
    ("Awful writing, boring plot", 1), ("A fine read", 4), ("meh", 3), ("Not for me, boring", 2),
]


def write_reviews(path: Path, reviews=REVIEWS, compress: bool = False) -> Path:
    lines = "".join(json.dumps({"reviewerID": f"R{i}", "asin": "B00", "reviewText": text, "overall": float(r),
                                "summary": "x"}) + "\n" for i, (text, r) in enumerate(reviews))
    path.write_bytes(gzip.compress(lines.encode()) if compress else lines.encode())
    return path


def test_tokenize_and_vocab() -> None:
    assert tokenize("Don't BUY it -- 5 stars!") == ["don't", "buy", "it", "5", "stars"]
    vocab = build_vocab([["b", "a", "b"], ["c", "a"]], vocab_size=4)
    assert vocab == {"a": 2, "b": 3}  # ties broken alphabetically, 0/1 reserved


@pytest.mark.parametrize("compress", [False, True])
def test_loads_reviews(tmp_path: Path, compress: bool) -> None:
    ds = AmazonReviews(write_reviews(tmp_path / "Kindle_Store_5.json.gz", compress=compress),
                       vocab_size=10, max_len=4, seed=0)
    train, test = ds.load()
    assert len(train) + len(test) == 8 and len(test) == 2  # two 3-star reviews dropped, 80/20
    assert train.inputs.dtype == torch.long and train.inputs.shape == (6, 4)
    assert train.targets.dtype == torch.long and set(train.targets.tolist()) <= {0, 1}
    assert len(ds.vocab) == 8 and set(ds.vocab.values()) == set(range(2, 10))
    assert int(train.inputs.max()) < 10
    assert ds.num_classes == 2 and ds.class_names == ("negative", "positive")


def test_vocab_from_training_split_only(tmp_path: Path) -> None:
    reviews = [(f"common word{i}", 5 if i % 2 else 1) for i in range(20)]
    ds = AmazonReviews(write_reviews(tmp_path / "r.json", reviews), vocab_size=100, max_len=3, seed=1)
    train, test = ds.load()
    train_words = {w for w in ds.vocab if w.startswith("word")}
    assert len(train_words) == len(train) == 16
    # test-only words are unknown (1); padding is 0
    assert (test.inputs[:, 1] == 1).all() and (test.inputs[:, 2] == 0).all()
    assert (test.inputs[:, 0] == ds.vocab["common"]).all()


def test_split_is_seeded(tmp_path: Path) -> None:
    path = write_reviews(tmp_path / "r.json", [(f"w{i}", 5) for i in range(30)])

    def held_out(seed: int) -> set[str]:
        ds = AmazonReviews(path, seed=seed, max_len=2)
        ds.load()
        return {f"w{i}" for i in range(30)} - set(ds.vocab)  # words only the test split has

    assert len(held_out(0)) == 6
    assert held_out(0) == held_out(0)
    assert held_out(0) != held_out(1)


def test_truncation_and_missing_text(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"overall": 5.0}\n\n' + json.dumps({"reviewText": "a b c d e", "overall": 1}) + "\n"
                    + json.dumps({"reviewText": "a", "overall": 4}) + "\n")
    ds = AmazonReviews(path, max_len=3, test_fraction=0.34, seed=0)
    train, test = ds.load()
    rows = {tuple(r.tolist()) for r in torch.cat([train.inputs, test.inputs])}
    assert (0, 0, 0) in rows  # a review without text is all padding


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFileNotFoundError, match="nope.json: file not found"):
        AmazonReviews(tmp_path / "nope.json").load()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"reviewText": "x", "overall": 5}) + "\n{not json\n")
    with pytest.raises(DataFileError, match=r"bad.json, line 2: not valid JSON"):
        AmazonReviews(bad).load()
    bad.write_text(json.dumps({"reviewText": "x"}) + "\n")
    with pytest.raises(DataFileError, match=r"bad.json, line 1: expected a JSON object with an 'overall'"):
        AmazonReviews(bad).load()
    bad.write_text(json.dumps({"reviewText": "x", "overall": 7}) + "\n")
    with pytest.raises(DataFileError, match=r"line 1: 'overall' is 7, expected a rating 1-5"):
        AmazonReviews(bad).load()
    bad.write_text(json.dumps({"reviewText": "x", "overall": 3}) + "\n")
    with pytest.raises(DataFileError, match="no review with a rating other than 3"):
        AmazonReviews(bad).load()
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataFileError, match="bad.json: cannot be read"):
        AmazonReviews(bad).load()
    with pytest.raises(ValueError, match="vocab_size must be an int >= 3"):
        AmazonReviews(bad, vocab_size=2)
