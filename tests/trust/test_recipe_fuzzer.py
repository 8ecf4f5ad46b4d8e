"""Recipe fuzzer: ``class_path`` entries of harmful callables at any depth of any field never run.

Each harmful callable leaves a file when it runs (``tests/trust/harmful.py``, plus ``os.system``,
``builtins.open``, ``subprocess.Popen``, ``os.makedirs`` and ``shutil.rmtree`` pointed at the test's folder,
and a function's import path as text, which the parser imports for an argument typed ``Callable``).
A random recipe hides one of them somewhere (a direct field, a plug-in's ``init_args``, an engine's
``trainer_kwargs`` / ``init_kwargs``, a logger's ``init_args``, a list, nested mappings, another spec's
``init_args``, a sweep profile), goes through everything a recipe goes through before training (parse, the
allow-list, build, a one-round fit if it got that far), and the folder must hold no mark afterwards.
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_lightning.fit_config import fit_one, fit_parser
from fl_lightning.sweeps.recipe import recipe_from_dict
from fl_lightning.sweeps.runner import parse_point
from tests.trust.harmful import MARKS

BASE = {
    "trainer": {"rounds": 1, "enable_progress_bar": False, "checkpoint_every": 0, "logger": False,
                "max_batches_per_epoch": 1},
    "model": {"class_path": "tests.helpers.TinyNet"},
    "data": {"dataset": {"class_path": "tests.helpers.Blobs", "init_args": {"num_train": 16, "num_test": 8}},
             "num_clients": 4},
}

#: field -> how the harmful value is written there (``X`` is replaced)
PLACES = {
    "trainer.aggregator": "X",
    "trainer.aggregator.inner": {"class_path": "NNM", "init_args": {"inner": "X"}},
    "trainer.aggregator.arg": {"class_path": "TrimmedMean", "init_args": {"beta": "X"}},
    "trainer.attacks": ["X"],
    "trainer.attacks.clients": [{"class_path": "SignFlip", "init_args": {"clients": "X"}}],
    "trainer.callbacks": ["X"],
    "trainer.engine": "X",
    "trainer.engine.trainer_kwargs": {"class_path": "fl_lightning.engines.lightning.LightningEngine",
                                      "init_args": {"trainer_kwargs": "X"}},
    "trainer.engine.init_kwargs": {"class_path": "fl_lightning.engines.ray.RayEngine",
                                   "init_args": {"init_kwargs": "X"}},
    "trainer.logger": "X",
    "trainer.logger.init_args": {"class_path": "CSVLogger", "init_args": {"name": "X"}},
    "trainer.logger.kwargs": {"class_path": "TensorBoardLogger", "init_args": {"comment": "X"}},
    "model": "X",
    "model.hidden": {"class_path": "tests.helpers.TinyNet", "init_args": {"hidden": "X"}},
    "data.dataset": "X",
    "data.dataset.noise": {"class_path": "tests.helpers.Blobs", "init_args": {"noise": "X"}},
    "data.partition": "X",
    "aggregators": ["X"],
    "data.dataset.loader": {"class_path": "fl_lightning.data.TorchDatasets", "init_args": {"train": {
        "class_path": "tests.trust.harmful.FilesDataset", "init_args": {"loader": "X"}}}},
}


def harmful(kind: str, marks: Path) -> dict:
    """A ``class_path`` entry whose call leaves a mark in ``marks``."""
    specs = {
        "function": {"class_path": "tests.trust.harmful.leave_mark"},
        "class": {"class_path": "tests.trust.harmful.MarkOnInit"},
        "call": {"class_path": "tests.trust.harmful.MarkOnCall"},
        "factory": {"class_path": "tests.trust.harmful.factory"},
        "os.system": {"class_path": "os.system", "init_args": {"command": f"touch {marks}/mark-system"}},
        "open": {"class_path": "builtins.open", "init_args": {"file": f"{marks}/mark-open", "mode": "w"}},
        "popen": {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", f"{marks}/mark-popen"]}},
        "makedirs": {"class_path": "os.makedirs", "init_args": {"name": f"{marks}/mark-dir"}},
        "rmtree": {"class_path": "shutil.rmtree", "init_args": {"path": f"{marks}/keep"}},
        "name": "tests.trust.harmful.leave_mark",  # a function's import path as text (for Callable arguments)
    }
    return specs[kind]


KINDS = ["function", "class", "call", "factory", "os.system", "open", "popen", "makedirs", "rmtree", "name"]
#: how the spec is wrapped, innermost first: a list, a mapping under a random key, another spec's init_args
wrappers = st.lists(st.one_of(st.just(("list", "")), st.tuples(st.just("dict"), st.sampled_from(["callbacks", "a", "x"])),
                              st.tuples(st.just("spec"), st.sampled_from(KINDS))), max_size=4)


def _wrap(value, layers, marks: Path):
    for layer, arg in layers:
        if layer == "list":
            value = [value]
        elif layer == "dict":
            value = {arg: value}
        else:
            outer = copy.deepcopy(harmful(arg, marks))
            if not isinstance(outer, dict):
                outer = {"class_path": "tests.trust.harmful.MarkOnInit"}
            outer.setdefault("init_args", {})["inner"] = value
            value = outer
    return value


def _put(template, value):
    if template == "X":
        return value
    if isinstance(template, list):
        return [_put(t, value) for t in template]
    if isinstance(template, dict):
        return {k: _put(v, value) for k, v in template.items()}
    return template


@pytest.fixture(scope="module")
def marks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("marks")
    (folder / "keep").mkdir()
    os.environ[MARKS] = str(folder)
    yield folder
    os.environ.pop(MARKS, None)


@pytest.fixture(scope="module")
def parser():
    parser = fit_parser()
    parser.exit_on_error = False
    return parser


def _attempt(parser, config: dict, tmp: Path) -> None:
    """Everything a recipe goes through before and while training; any error is fine, a mark is not."""
    config = {**config, "save_dir": str(tmp)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cfg = parser.parse_object(config)
            fit_one(cfg, parser, quiet=True)
        except (Exception, SystemExit):
            pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.sampled_from(sorted(PLACES)), kind=st.sampled_from(KINDS), layers=wrappers,
       via_profile=st.booleans())
def test_no_class_path_of_a_recipe_runs_anything(marks, parser, tmp_path, place, kind, layers, via_profile):
    for old in marks.iterdir():  # each example starts clean, so a mark names the example that left it
        if old.name != "keep":
            old.rmdir() if old.is_dir() else old.unlink()
    (marks / "keep").mkdir(exist_ok=True)
    value = _wrap(harmful(kind, marks), layers, marks)
    placed = _put(PLACES[place], value)
    config = copy.deepcopy(BASE)
    parts = place.split(".")
    dotted = ".".join(parts[:2]) if parts[0] in ("trainer", "data") else parts[0]  # where the template goes
    if via_profile:  # the same value reaching a sweep point through a profile
        raw = {**copy.deepcopy(BASE), "profiles": {"p": {dotted: placed}}}
        try:
            (point,) = recipe_from_dict(raw, "p").points()
            cfg = parse_point(parser, point)
            cfg.save_dir = str(tmp_path)
            fit_one(cfg, parser, quiet=True)
        except Exception:
            pass
    else:
        node = config
        for part in dotted.split(".")[:-1]:
            node = node[part]
        node[dotted.split(".")[-1]] = placed
        _attempt(parser, config, tmp_path)
    left = sorted(p.name for p in marks.iterdir() if p.name != "keep")
    assert left == [] and (marks / "keep").is_dir(), f"{kind} in {place} via {layers} ran: {left}"
