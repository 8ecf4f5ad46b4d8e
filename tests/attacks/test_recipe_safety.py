"""A recipe cannot make an attack import or call a function: only counts, fractions, ids and named selectors.

Audit of every attack field whose type could let the config parser import something:
``clients`` (was ``Callable``: now counts, fractions, ids, ``{holders_of: ...}``; a string is kept as a
string and refused), ``of`` (``str`` first, then an ``Attack`` subclass only), ``aggregator`` of the
optimal attacks (an ``Aggregator`` subclass only), ``pattern`` of PixelBackdoor (``str`` or a Tensor).
No attack field is typed ``Callable``, ``Any``, ``object`` or ``type``; the test below keeps it so.
"""
from __future__ import annotations

import collections.abc
import os
import sys
import typing

import pytest
import torch

from fl_lightning.attacks import ATTACKS, LabelFlip, SignFlip
from fl_lightning.fit_config import fit_parser

RECIPE = """
trainer:
  rounds: 2
  attacks:
    - class_path: {cls}
      init_args: {{clients: {clients}}}
model:
  class_path: tests.helpers.TinyNet
data:
  dataset:
    class_path: tests.helpers.Blobs
  num_clients: 4
"""


@pytest.mark.parametrize("cls", ["SignFlip", "LabelFlip", "MinMax"])
@pytest.mark.parametrize("name", ["os.system", "sys.exit"])
def test_a_function_named_in_clients_is_refused_and_never_called(monkeypatch, tmp_path, cls, name):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(("os.system", a)) or 0)
    monkeypatch.setattr(sys, "exit", lambda *a: calls.append(("sys.exit", a)))
    parser = fit_parser()
    cfg = parser.parse_string(RECIPE.format(cls=cls, clients=name))
    assert cfg.trainer.attacks[0].init_args.clients == name          # kept as text, nothing imported
    with pytest.raises(TypeError, match=rf"{cls}: clients must be a count, a fraction of the clients, a list of client ids or a "
                                        rf"named selector .* got the string '{name}'; a recipe cannot name a function"):
        parser.instantiate(cfg)
    assert calls == []


def test_named_selector_from_yaml_picks_the_holders(make_setup):
    parser = fit_parser()
    cfg = parser.parse_string(RECIPE.format(cls="SignFlip", clients="{holders_of: 1}"))
    (attack,) = parser.instantiate(cfg).trainer.attacks
    assert attack.clients == {"holders_of": 1}
    attack.setup(make_setup(num_clients=10))
    assert attack.attacker_ids == (0, 1)           # client i holds classes i and i + 1


def test_selectors_draw_a_count_among_holders_reproducibly(make_setup):
    ctx = make_setup(num_clients=20)
    first, again = SignFlip(clients={"holders_of": [1, 7], "count": 2}), SignFlip(clients={"holders_of": [1, 7], "count": 2})
    first.setup(ctx)
    again.setup(ctx)
    holders = {0, 1, 6, 7, 10, 11, 16, 17}
    assert first.attacker_ids == again.attacker_ids and set(first.attacker_ids) <= holders
    assert len(first.attacker_ids) == 2


@pytest.mark.parametrize("spec, error, message", [
    ({"holder_of": 1}, ValueError, "did you mean 'holders_of'"),
    ({"holders_of": 1, "count": -1}, ValueError, "clients.count must be an int >= 0"),
    ({"holders_of": "one"}, TypeError, r"clients.holders_of \(a class\) must be an int"),
    (True, TypeError, "clients must be a count"),
    ([1, "x"], TypeError, r"clients \(a client id\) must be an int"),
])
def test_bad_selectors_are_refused_when_the_attack_is_built(spec, error, message):
    with pytest.raises(error, match=message):
        SignFlip(clients=spec)


def test_selector_of_a_missing_class_is_refused_at_setup(make_setup):
    with pytest.raises(ValueError, match=r"holders_of names classes \[12\] that the dataset does not have"):
        SignFlip(clients={"holders_of": 12}).setup(make_setup())


def test_python_callers_keep_predicates(make_setup):
    attack = LabelFlip(source=0, target=1, clients=lambda labels: bool((labels == 3).any()))
    attack.setup(make_setup(num_clients=10))
    assert attack.attacker_ids == (2, 3)
    counted = LabelFlip(source=4, target=1, clients=2)   # the paper's draw among the source-class holders
    counted.setup(make_setup(num_clients=20))
    assert set(counted.attacker_ids) <= {3, 4, 13, 14} and len(counted.attacker_ids) == 2


_FORBIDDEN = (typing.Any, object, type)


def _leaves(hint: object) -> list[object]:
    args = typing.get_args(hint)
    if not args:
        return [hint]
    origin = typing.get_origin(hint)
    return [origin] + [leaf for arg in args for leaf in _leaves(arg)]


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_no_attack_field_lets_the_config_parser_import_a_function(name):
    hints = typing.get_type_hints(ATTACKS[name].__init__)
    for field, hint in hints.items():
        for leaf in _leaves(hint):
            assert leaf not in (collections.abc.Callable, typing.Callable), f"{name}.{field} is typed {hint}"
            assert leaf not in _FORBIDDEN, f"{name}.{field} is typed {hint}"
            assert not (isinstance(leaf, type) and leaf is not torch.Tensor and issubclass(leaf, type)), field
