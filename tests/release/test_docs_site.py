"""The API reference: the site builds strictly, what it documents has docstrings, and docstring examples run."""
from __future__ import annotations

import doctest
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fl_lightning
from tests.test_import_graph import package_modules

ROOT = Path(__file__).resolve().parents[2]
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))


def test_the_site_builds_strictly(tmp_path) -> None:
    pytest.importorskip("mkdocstrings", reason="the docs extra: pip install -e '.[docs]'")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    aggregators = (tmp_path / "site" / "api" / "aggregators" / "index.html").read_text()
    for rule in ("ResidualReweight", "Krum", "Bulyan", "TrimmedMean", "NNM"):
        assert f'id="{rule.lower()}"' in aggregators  # one section per rule


def _documented() -> list[str]:
    """The dotted names the API pages render (``::: name``)."""
    names = []
    for page in API_PAGES:
        names += re.findall(r"^::: (\S+)", page.read_text(), re.M)
    return names


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_documented_name_and_its_public_methods_have_a_docstring() -> None:
    documented = _documented()
    assert len(documented) >= 40
    missing = []
    for dotted in documented:
        obj = _resolve(dotted)
        if not inspect.getdoc(obj):
            missing.append(dotted)
        members = vars(obj).items() if inspect.isclass(obj) else []
        for name, member in members:
            if not name.startswith("_") and inspect.isfunction(member) and not inspect.getdoc(member):
                missing.append(f"{dotted}.{name}")
    assert not missing, "documented without a docstring: " + ", ".join(missing)


def test_the_docstring_examples_run() -> None:
    modules = {name: path for name, path in package_modules().items() if ">>> " in path.read_text()}
    assert len(modules) >= 6, sorted(modules)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    examples = 0
    for name in sorted(modules):
        for test in finder.find(importlib.import_module(name), name):
            examples += len(test.examples)
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert examples >= 10 and result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed"
    assert fl_lightning.__version__
