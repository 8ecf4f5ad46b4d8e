"""Golden vectors of the published residual-reweighting implementation, for the aggregator tests.

They ship with the repository in ``tests/data/golden`` (see its README for where they come from). A
missing file fails the golden tests with a clear message instead of skipping them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"


@dataclass
class GoldenCase:
    """One golden case: its JSON description and accessors into the npz arrays."""

    info: dict
    arrays: np.lib.npyio.NpzFile

    @property
    def index(self) -> int:
        return int(self.info["case"])

    @property
    def k(self) -> int:
        return int(self.info["K"])

    def key(self, *parts: str) -> str:
        return "/".join([f"case{self.index}", *parts])

    def has(self, *parts: str) -> bool:
        return self.key(*parts) in self.arrays.files

    def array(self, *parts: str) -> np.ndarray:
        return self.arrays[self.key(*parts)]

    def input(self, name: str) -> np.ndarray:
        return self.array("input", name)

    def vector_params(self) -> list[str]:
        """Parameters with at least one dimension, in ``param_order``: the functional API's columns."""
        return [p for p in self.info["param_order"] if self.input(p).ndim > 1]

    def matrix(self) -> torch.Tensor:
        """The ``[K, N]`` input: every non-0-dim parameter flattened per client, in param_order."""
        return torch.from_numpy(np.concatenate([self.input(p).reshape(self.k, -1) for p in self.vector_params()],
                                               axis=1))

    def output(self, mode: str, params: list[str] | None = None) -> torch.Tensor:
        """The golden aggregate of ``mode`` over ``params`` (default: the functional API's columns)."""
        params = self.vector_params() if params is None else params
        return torch.from_numpy(np.concatenate([self.array("mode", mode, "out", p).reshape(-1).astype(np.float32)
                                                for p in params]))

    def modes(self, prefix: str) -> list[str]:
        """Mode labels (``irls``, ``irls@Lambda=1.0,thresh=0.2``, ...) whose base name is ``prefix``."""
        return [m for m in self.info["modes"] if m.split("@")[0] == prefix]

    def options(self, mode: str) -> dict:
        return self.info["modes"][mode]["options"]


def _load():
    json_path, npz_path = GOLDEN_DIR / "reference_cases.json", GOLDEN_DIR / "reference_cases.npz"
    if not (json_path.is_file() and npz_path.is_file()):
        return None
    info = json.loads(json_path.read_text())
    arrays = np.load(npz_path, allow_pickle=False)
    return [GoldenCase(case, arrays) for case in info["cases"]]


_CASES = _load()
_MISSING = (f"golden vectors not found in {GOLDEN_DIR}: the aggregator tests need reference_cases.json + .npz "
            "there (they are part of the repository; restore them with git checkout tests/data/golden)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``golden_case`` over every golden case (one failing placeholder when they are missing)."""
    if "golden_case" in metafunc.fixturenames:
        ids = [f"case{c.index}-K{c.k}" for c in _CASES] if _CASES else ["golden-missing"]
        metafunc.parametrize("golden_case", _CASES or [None], ids=ids)


@pytest.fixture
def golden_cases() -> list[GoldenCase]:
    """All golden cases (fails when the golden folder is absent)."""
    if not _CASES:
        pytest.fail(_MISSING)
    return _CASES


@pytest.fixture(autouse=True)
def _golden_present(request: pytest.FixtureRequest) -> None:
    if "golden_case" in request.fixturenames and request.getfixturevalue("golden_case") is None:
        pytest.fail(_MISSING)
