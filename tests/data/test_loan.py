"""Lending Club loan.csv fixtures: features, imputation, standardisation, states, errors."""
from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from fl_lightning.data import (LOAN_BACKDOOR_FEATURES, LOAN_FEATURES, LOAN_STATUSES, DataFileError,
                               DataFileNotFoundError, FederatedDataModule, LendingClubLoan)
from fl_lightning.data.loan import LOAN_CATEGORICAL_FEATURES, LOAN_NUMERIC_FEATURES

STATES = ("CA", "NY", "TX")
CATEGORICAL = {"term": [" 36 months", " 60 months"], "emp_length": ["< 1 year", "3 years", "10+ years", "n/a"],
               "grade": ["A", "B", "G"], "sub_grade": ["A1", "B3", "G5"],
               "verification_status": ["Not Verified", "Source Verified", "Verified"],
               "initial_list_status": ["f", "w"], "application_type": ["Individual", "Joint App"],
               "pymnt_plan": ["n", "y"]}


def loan_rows(n: int = 30) -> list[dict[str, str]]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        row = {name: f"{rng.normal(100, 20):.2f}" for name in LOAN_NUMERIC_FEATURES}
        row.update({name: values[i % len(values)] for name, values in CATEGORICAL.items()})
        row["int_rate"] = f"{10 + i % 5}.5%"
        row["revol_util"] = "" if i % 4 == 0 else f"{i}%"
        row["loan_status"] = LOAN_STATUSES[i % 9]
        row["addr_state"] = STATES[i % 3]
        row["id"] = str(i)
        row["desc"] = 'Borrower said: "debt, consolidation"\nsecond line'
        rows.append(row)
    return rows


def write_loan(path: Path, rows: list[dict[str, str]], drop: str | None = None, compress: bool = False) -> Path:
    columns = ["id", "desc", "addr_state", *reversed(LOAN_FEATURES), "loan_status"]
    if drop:
        columns.remove(drop)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    buffer.write("\nTotal amount funded in policy code 1: 123456\n")  # LendingClub export footer
    data = buffer.getvalue().encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_feature_list() -> None:
    assert len(LOAN_FEATURES) == len(set(LOAN_FEATURES)) == 91
    assert len(LOAN_NUMERIC_FEATURES) == 83 and len(LOAN_CATEGORICAL_FEATURES) == 8
    assert set(LOAN_BACKDOOR_FEATURES) <= set(LOAN_FEATURES)
    assert len(LOAN_STATUSES) == 9 and LendingClubLoan.num_classes == 9


def test_read_parses_numbers_and_categories(tmp_path: Path) -> None:
    x, y, states = LendingClubLoan(write_loan(tmp_path / "loan.csv", loan_rows())).read()
    col = {name: x[:, i] for i, name in enumerate(LOAN_FEATURES)}
    assert x.shape == (30, 91) and y.tolist() == [i % 9 for i in range(30)]
    assert states[:4] == ["CA", "NY", "TX", "CA"]
    assert col["int_rate"][:3].tolist() == [10.5, 11.5, 12.5]
    assert np.isnan(col["revol_util"][0]) and col["revol_util"][1] == 1.0
    assert col["term"][:2].tolist() == [36.0, 60.0]
    assert col["emp_length"][:3].tolist() == [0.0, 3.0, 10.0] and np.isnan(col["emp_length"][3])
    assert col["sub_grade"][:3].tolist() == [0.0, 7.0, 34.0]
    assert col["application_type"][:2].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("compress", [False, True])
def test_load_imputes_and_standardises(tmp_path: Path, compress: bool) -> None:
    ds = LendingClubLoan(write_loan(tmp_path / "loan.csv", loan_rows(), compress=compress), seed=0)
    train, test = ds.load()
    assert train.inputs.shape == (24, 91) and test.inputs.shape == (6, 91)
    assert train.inputs.dtype == torch.float32 and train.targets.dtype == torch.long
    assert torch.isfinite(train.inputs).all() and torch.isfinite(test.inputs).all()
    assert torch.allclose(train.inputs.mean(0), torch.zeros(91), atol=1e-4)
    assert torch.allclose(train.inputs.std(0, unbiased=False), torch.ones(91), atol=1e-3)
    keys = ds.partition_keys()
    assert len(keys) == len(train) and set(keys) == set(STATES)
    j = LOAN_FEATURES.index("revol_util")
    raw, _, _ = ds.read()
    missing = np.isnan(raw[ds.train_rows, j])
    assert 0 < missing.sum() < len(train)
    median = np.nanmedian(raw[ds.train_rows, j])
    assert ds.feature_median[j] == median
    expected = (median - ds.feature_mean[j]) / ds.feature_std[j]
    assert torch.allclose(train.inputs[torch.from_numpy(missing), j], torch.tensor(expected, dtype=torch.float32))
    assert sorted([*ds.train_rows, *ds.test_rows]) == list(range(30))


def test_split_and_keys_are_seeded(tmp_path: Path) -> None:
    path = write_loan(tmp_path / "loan.csv", loan_rows())
    a, b, c = LendingClubLoan(path, seed=0), LendingClubLoan(path, seed=0), LendingClubLoan(path, seed=1)
    assert torch.equal(a.load()[1].inputs, b.load()[1].inputs)
    c.load()
    assert a.test_rows.tolist() == b.test_rows.tolist() != c.test_rows.tolist()
    assert a.partition_keys() == [STATES[i % 3] for i in a.train_rows]


def test_by_state_partition(tmp_path: Path) -> None:
    dm = FederatedDataModule(LendingClubLoan(write_loan(tmp_path / "loan.csv", loan_rows())),
                             num_clients=None, partition="by_key")
    dm.setup()
    assert dm.client_keys == list(STATES) and sum(len(c) for c in dm.clients) == 24
    assert dm.client_class_histogram().shape == (3, 9)


def test_max_rows(tmp_path: Path) -> None:
    x, y, _ = LendingClubLoan(write_loan(tmp_path / "loan.csv", loan_rows()), max_rows=7).read()
    assert len(x) == len(y) == 7


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFileNotFoundError, match="nope.csv: file not found"):
        LendingClubLoan(tmp_path / "nope.csv").load()
    path = write_loan(tmp_path / "loan.csv", loan_rows(), drop="tax_liens")
    with pytest.raises(DataFileError, match=r"loan.csv: missing required column\(s\) tax_liens"):
        LendingClubLoan(path).load()
    path = write_loan(tmp_path / "loan.csv", loan_rows(), drop="addr_state")
    with pytest.raises(DataFileError, match="missing required column.*addr_state"):
        LendingClubLoan(path).load()
    rows = loan_rows()
    rows[4]["dti"] = "twelve"
    with pytest.raises(DataFileError, match=r"loan.csv, line 11: column dti has 'twelve'; expected a number"):
        LendingClubLoan(write_loan(tmp_path / "loan.csv", rows)).load()
    rows = loan_rows()
    rows[2]["grade"] = "Z"
    with pytest.raises(DataFileError, match="column grade has 'Z'; expected one of 'a'"):
        LendingClubLoan(write_loan(tmp_path / "loan.csv", rows)).load()
    rows = loan_rows()
    rows[3]["loan_status"] = "Paid Off Somehow"
    with pytest.raises(DataFileError, match="unknown loan_status 'Paid Off Somehow'"):
        LendingClubLoan(write_loan(tmp_path / "loan.csv", rows)).load()
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataFileError, match="empty.csv: the file is empty"):
        LendingClubLoan(tmp_path / "empty.csv").load()
