"""Lending Club ``loan.csv`` (Kaggle "lending-club-loan-data"): 91 features, 9 loan statuses, keyed by US state.

The 91 features, in this order (:data:`LOAN_FEATURES`), all read from same-named columns:

- 83 numeric columns, parsed as numbers (a trailing ``%`` is dropped: ``"13.5%"`` -> 13.5):
  loan terms (7) ``loan_amnt funded_amnt funded_amnt_inv int_rate installment annual_inc dti``;
  credit file (9) ``delinq_2yrs inq_last_6mths mths_since_last_delinq mths_since_last_record
  open_acc pub_rec revol_bal revol_util total_acc``;
  payments so far (10) ``out_prncp out_prncp_inv total_pymnt total_pymnt_inv total_rec_prncp
  total_rec_int total_rec_late_fee recoveries collection_recovery_fee last_pymnt_amnt``;
  collections and balances (5) ``collections_12_mths_ex_med mths_since_last_major_derog
  acc_now_delinq tot_coll_amt tot_cur_bal``;
  recent accounts (15) ``open_acc_6m open_act_il open_il_12m open_il_24m mths_since_rcnt_il
  total_bal_il il_util open_rv_12m open_rv_24m max_bal_bc all_util total_rev_hi_lim inq_fi
  total_cu_tl inq_last_12m``;
  account ages and recency (15) ``acc_open_past_24mths avg_cur_bal bc_open_to_buy bc_util
  chargeoff_within_12_mths delinq_amnt mo_sin_old_il_acct mo_sin_old_rev_tl_op
  mo_sin_rcnt_rev_tl_op mo_sin_rcnt_tl mort_acc mths_since_recent_bc mths_since_recent_bc_dlq
  mths_since_recent_inq mths_since_recent_revol_delinq``;
  trade-line counts and limits (22) ``num_accts_ever_120_pd num_actv_bc_tl num_actv_rev_tl
  num_bc_sats num_bc_tl num_il_tl num_op_rev_tl num_rev_accts num_rev_tl_bal_gt_0 num_sats
  num_tl_120dpd_2m num_tl_30dpd num_tl_90g_dpd_24m num_tl_op_past_12m pct_tl_nvr_dlq
  percent_bc_gt_75 pub_rec_bankruptcies tax_liens tot_hi_cred_lim total_bal_ex_mort
  total_bc_limit total_il_high_credit_limit``.
- 8 encoded categorical columns: ``term`` (``"36 months"`` -> 36), ``emp_length`` (``"< 1 year"``
  -> 0, ``"1 year"`` -> 1 ... ``"10+ years"`` -> 10, ``"n/a"`` missing), ``grade`` (A..G -> 0..6),
  ``sub_grade`` (A1..G5 -> 0..34), ``verification_status`` (Not Verified 0, Source Verified 1,
  Verified 2), ``initial_list_status`` (f 0, w 1), ``application_type`` (Individual 0, Joint 1),
  ``pymnt_plan`` (n 0, y 1).

The paper's backdoor features (:data:`LOAN_BACKDOOR_FEATURES`) are among them. Missing values
(empty cells, ``n/a``) are imputed with the training split's median, then every feature is
standardised with the training mean and std; the split is a seeded 80/20. Rows whose
``loan_status`` is empty (LendingClub exports end with summary lines) are skipped. Targets index
:data:`LOAN_STATUSES`; :meth:`LendingClubLoan.partition_keys` gives each training row's ``addr_state``.
"""
from __future__ import annotations

import csv
import operator
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from fl_lightning.checks import check_fraction, check_optional_int, check_seed
from fl_lightning.data.base import FederatedDataset, TensorData
from fl_lightning.data.files import DataFileError, DataFileNotFoundError, open_maybe_gzip
from fl_lightning.seeding import numpy_rng

LOAN_STATUSES = (
    "Fully Paid", "Charged Off", "Current", "Default", "Late (31-120 days)", "In Grace Period",
    "Late (16-30 days)", "Does not meet the credit policy. Status:Fully Paid",
    "Does not meet the credit policy. Status:Charged Off",
)

LOAN_NUMERIC_FEATURES = (
    # loan terms
    "loan_amnt", "funded_amnt", "funded_amnt_inv", "int_rate", "installment", "annual_inc", "dti",
    # credit file
    "delinq_2yrs", "inq_last_6mths", "mths_since_last_delinq", "mths_since_last_record", "open_acc",
    "pub_rec", "revol_bal", "revol_util", "total_acc",
    # payments so far
    "out_prncp", "out_prncp_inv", "total_pymnt", "total_pymnt_inv", "total_rec_prncp", "total_rec_int",
    "total_rec_late_fee", "recoveries", "collection_recovery_fee", "last_pymnt_amnt",
    # collections and balances
    "collections_12_mths_ex_med", "mths_since_last_major_derog", "acc_now_delinq", "tot_coll_amt",
    "tot_cur_bal",
    # recent accounts
    "open_acc_6m", "open_act_il", "open_il_12m", "open_il_24m", "mths_since_rcnt_il", "total_bal_il",
    "il_util", "open_rv_12m", "open_rv_24m", "max_bal_bc", "all_util", "total_rev_hi_lim", "inq_fi",
    "total_cu_tl", "inq_last_12m",
    # account ages and recency
    "acc_open_past_24mths", "avg_cur_bal", "bc_open_to_buy", "bc_util", "chargeoff_within_12_mths",
    "delinq_amnt", "mo_sin_old_il_acct", "mo_sin_old_rev_tl_op", "mo_sin_rcnt_rev_tl_op", "mo_sin_rcnt_tl",
    "mort_acc", "mths_since_recent_bc", "mths_since_recent_bc_dlq", "mths_since_recent_inq",
    "mths_since_recent_revol_delinq",
    # trade-line counts and limits
    "num_accts_ever_120_pd", "num_actv_bc_tl", "num_actv_rev_tl", "num_bc_sats", "num_bc_tl", "num_il_tl",
    "num_op_rev_tl", "num_rev_accts", "num_rev_tl_bal_gt_0", "num_sats", "num_tl_120dpd_2m", "num_tl_30dpd",
    "num_tl_90g_dpd_24m", "num_tl_op_past_12m", "pct_tl_nvr_dlq", "percent_bc_gt_75", "pub_rec_bankruptcies",
    "tax_liens", "tot_hi_cred_lim", "total_bal_ex_mort", "total_bc_limit", "total_il_high_credit_limit",
)

_GRADES = "ABCDEFG"
#: value (lower-cased, stripped) -> code, for the encoded categorical columns; "" and n/a are missing
LOAN_CATEGORIES: dict[str, dict[str, float]] = {
    "emp_length": {"< 1 year": 0, "1 year": 1, **{f"{y} years": y for y in range(2, 10)}, "10+ years": 10},
    "grade": {g.lower(): i for i, g in enumerate(_GRADES)},
    "sub_grade": {f"{g}{n}".lower(): 5 * i + n - 1 for i, g in enumerate(_GRADES) for n in range(1, 6)},
    "verification_status": {"not verified": 0, "source verified": 1, "verified": 2},
    "initial_list_status": {"f": 0, "w": 1},
    "application_type": {"individual": 0, "joint app": 1, "joint": 1},
    "pymnt_plan": {"n": 0, "y": 1},
}
LOAN_CATEGORICAL_FEATURES = ("term", *LOAN_CATEGORIES)

#: the 91 input features, in tensor column order
LOAN_FEATURES: tuple[str, ...] = LOAN_NUMERIC_FEATURES + LOAN_CATEGORICAL_FEATURES
#: the six features the paper's LOAN backdoor sets just above their maximum
LOAN_BACKDOOR_FEATURES = ("num_tl_120dpd_2m", "num_tl_90g_dpd_24m", "pub_rec_bankruptcies", "pub_rec",
                          "acc_now_delinq", "tax_liens")

_MISSING = ("", "n/a", "na", "nan", "none", "null")
_TERM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:months?)?\s*$", re.IGNORECASE)
_CHUNK_ROWS = 65536


class LendingClubLoan(FederatedDataset):
    """Lending Club loans from a local ``loan.csv`` (optionally gzipped): 91 features -> 9 loan statuses.

    Partition by US state with ``FederatedDataModule(..., partition="by_key", num_clients=None)``.
    ``max_rows`` reads only the first rows, for quick runs. After :meth:`load`, ``feature_median``,
    ``feature_mean`` and ``feature_std`` hold the training statistics (raw units, per feature) and
    ``train_rows`` / ``test_rows`` the positions (among the rows :meth:`read` returns) of each split.
    """

    num_classes = len(LOAN_STATUSES)
    class_names = LOAN_STATUSES
    feature_names = LOAN_FEATURES

    def __init__(self, path: str | Path, seed: int = 0, test_fraction: float = 0.2,
                 max_rows: int | None = None) -> None:
        check_fraction(test_fraction, "test_fraction", "LendingClubLoan", include_zero=False, include_one=False)
        check_optional_int(max_rows, "max_rows", "LendingClubLoan", minimum=2)
        check_seed(seed, "LendingClubLoan")
        self.path = Path(path)
        self.seed = seed
        self.test_fraction = test_fraction
        self.max_rows = max_rows
        self.feature_median: np.ndarray | None = None
        self.feature_mean: np.ndarray | None = None
        self.feature_std: np.ndarray | None = None
        self.train_rows: np.ndarray | None = None
        self.test_rows: np.ndarray | None = None
        self._train_states: list[str] | None = None

    def read(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Raw ``[n, 91]`` float32 features (NaN = missing), int64 status labels and states, in file order."""
        if not self.path.is_file():
            raise DataFileNotFoundError(f"{self.path}: file not found; expected the Lending Club loan.csv")
        features: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        states: list[str] = []
        try:
            with open_maybe_gzip(self.path, "rt", newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is None:
                    raise DataFileError(f"{self.path}: the file is empty; expected loan.csv with a header row")
                columns = self._columns(header)
                pick = operator.itemgetter(*columns)
                status_at, state_at, width = columns[-2], columns[-1], max(columns) + 1
                rows: list[tuple[str, ...]] = []
                lines: list[int] = []
                for row in reader:
                    if len(row) < width or not row[status_at].strip():
                        continue
                    rows.append(pick(row))
                    lines.append(reader.line_num)
                    full = self.max_rows is not None and len(states) + len(rows) >= self.max_rows
                    if len(rows) == _CHUNK_ROWS or full:
                        self._convert(rows, lines, features, labels, states)
                        rows, lines = [], []
                    if full:
                        break
                if rows:
                    self._convert(rows, lines, features, labels, states)
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
            raise DataFileError(f"{self.path}: cannot be read as CSV ({type(err).__name__}: {err}); "
                                "expected the Lending Club loan.csv") from err
        if len(states) < 2:
            raise DataFileError(f"{self.path}: {len(states)} loan rows with a loan_status; need at least 2")
        return np.concatenate(features), np.concatenate(labels), states

    def _columns(self, header: list[str]) -> list[int]:
        """Column positions of the 91 features, then ``loan_status`` and ``addr_state``."""
        position = {name.strip().lstrip("\ufeff"): i for i, name in enumerate(header)}
        needed = (*LOAN_FEATURES, "loan_status", "addr_state")
        missing = [name for name in needed if name not in position]
        if missing:
            raise DataFileError(f"{self.path}: missing required column(s) {', '.join(missing)}; expected the "
                                f"Lending Club loan.csv header (see fl_lightning.data.loan.LOAN_FEATURES)")
        return [position[name] for name in needed]

    def _convert(self, rows: list[tuple[str, ...]], lines: list[int], features: list[np.ndarray],
                 labels: list[np.ndarray], states: list[str]) -> None:
        """Parse one chunk of picked string cells into numbers (errors name the line and column)."""
        columns = list(zip(*rows))
        out = np.empty((len(rows), len(LOAN_FEATURES)), dtype=np.float64)
        for j, name in enumerate(LOAN_FEATURES):
            if name in LOAN_CATEGORIES or name == "term":
                # few distinct values: parse each once
                code = {v: _parse_category(name, v.strip().lower()) for v in set(columns[j])}
                out[:, j] = [code[v] for v in columns[j]]
                bad = np.isinf(out[:, j])
            else:
                out[:, j], bad = _parse_numbers(columns[j])
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataFileError(f"{self.path}, line {lines[row]}: column {name} has {rows[row][j]!r}; "
                                    f"expected {_expected(name)} or an empty cell")
        raw_status = [r[-2].strip() for r in rows]
        status_code = {s.lower(): i for i, s in enumerate(LOAN_STATUSES)}
        codes = [status_code.get(" ".join(s.lower().split()), -1) for s in raw_status]
        if -1 in codes:
            row = codes.index(-1)
            raise DataFileError(f"{self.path}, line {lines[row]}: unknown loan_status {raw_status[row]!r}; "
                                f"expected one of {list(LOAN_STATUSES)}")
        features.append(np.where(np.isfinite(out), out, np.nan).astype(np.float32))
        labels.append(np.asarray(codes, dtype=np.int64))
        states.extend(r[-1].strip().upper() for r in rows)

    def load(self) -> tuple[TensorData, TensorData]:
        """Standardised ``[n, 91]`` float32 features and int64 status labels for train and test."""
        x, y, states = self.read()
        order = numpy_rng(self.seed, "loan", "split").permutation(len(y))
        num_test = min(max(int(round(len(y) * self.test_fraction)), 1), len(y) - 1)
        test_idx, train_idx = np.sort(order[:num_test]), np.sort(order[num_test:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are handled below
            median = np.nanmedian(x[train_idx], axis=0).astype(np.float64)
        median = np.where(np.isnan(median), 0.0, median)
        for j in range(x.shape[1]):  # in place, column by column: the real file has ~2M rows
            column = x[:, j]
            column[np.isnan(column)] = median[j]
        mean = x[train_idx].mean(axis=0, dtype=np.float64)
        std = x[train_idx].std(axis=0, dtype=np.float64)
        std = np.where(std > 0, std, 1.0)
        x -= mean.astype(np.float32)
        x /= std.astype(np.float32)
        self.feature_median, self.feature_mean, self.feature_std = median, mean, std
        self.train_rows, self.test_rows = train_idx, test_idx
        self._train_states = [states[i] for i in train_idx]
        yt = torch.from_numpy(y)
        return (TensorData(torch.from_numpy(x[train_idx]), yt[train_idx]),
                TensorData(torch.from_numpy(x[test_idx]), yt[test_idx]))

    def partition_keys(self) -> list[str]:
        """``addr_state`` of every training row, in training order (loads the file if not yet loaded)."""
        if self._train_states is None:
            self.load()
        return list(self._train_states)

    def __repr__(self) -> str:
        return f"LendingClubLoan(path={str(self.path)!r}, seed={self.seed})"


def _parse_category(name: str, value: str) -> float:
    """Code of a lower-cased categorical cell: NaN when missing, +inf when not understood."""
    if value in _MISSING:
        return np.nan
    if name == "term":
        match = _TERM.match(value)
        return float(match.group(1)) if match else np.inf
    return float(LOAN_CATEGORIES[name].get(value, np.inf))


def _parse_numbers(cells: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Floats of numeric cells (empty or ``n/a`` -> NaN, a trailing ``%`` dropped) and a mask of bad cells."""
    try:  # fast path: plain numbers and empty cells
        return np.array([float(v) if v else np.nan for v in cells]), np.zeros(len(cells), dtype=bool)
    except ValueError:
        pass
    values = np.empty(len(cells), dtype=np.float64)
    bad = np.zeros(len(cells), dtype=bool)
    for i, cell in enumerate(cells):
        text = cell.strip().rstrip("%").rstrip()
        if text.lower() in _MISSING:
            values[i] = np.nan
            continue
        try:
            values[i] = float(text)
        except ValueError:
            values[i], bad[i] = np.nan, True
    return values, bad


def _expected(name: str) -> str:
    if name in LOAN_CATEGORIES:
        return "one of " + ", ".join(repr(v) for v in LOAN_CATEGORIES[name])
    if name == "term":
        return "a number of months such as '36 months'"
    return "a number (a trailing % is allowed)"
