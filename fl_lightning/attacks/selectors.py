"""Who attacks: the ``clients=`` of every attack, checked when the attack is built and drawn at ``fit()`` start.

A recipe (YAML) may write a count, a fraction of all clients, a list of client ids, or a named
selector the library defines, e.g. ``clients: {holders_of: 1}`` (every client holding class 1) or
``clients: {holders_of: [1, 7], count: 2}`` (two of them, drawn with the run's seed). It can never
name a function: :data:`ClientSpec`, the type the config parser reads, holds no ``Callable``, so
``clients: os.system`` stays a string and is refused here with a message. Python callers may still
pass a predicate over a client's labels; it is accepted at run time, not through the type.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, Union

from torch import Tensor

from fl_lightning.checks import check_int, did_you_mean
from fl_lightning.context import SetupContext
from fl_lightning.seeding import numpy_rng

#: a named selector as a recipe writes it, e.g. ``{holders_of: 1}`` or ``{holders_of: [1, 7], count: 2}``
Selector = dict[str, Union[int, list[int]]]

#: who attacks, as a recipe may write it: a count, a fraction of all clients, ids, or a :data:`Selector`.
#: ``str`` is listed only so that a name such as ``os.system`` reaches :func:`check_client_spec`,
#: which refuses it with a clear message, instead of failing deep inside the config parser.
ClientSpec = Union[int, float, Sequence[int], Selector, str]

#: the named selectors and their optional companions
SELECTORS = ("holders_of",)
SELECTOR_OPTIONS = ("count",)

_WHAT = ("a count, a fraction of the clients, a list of client ids or a named selector such as "
         "{holders_of: 1}")


def check_client_spec(spec: Any, owner: str) -> None:
    """Raise ``TypeError``/``ValueError`` at construction for a ``clients=`` the library cannot read.

    What depends on the data (ids that exist, enough eligible clients) is checked at ``fit()`` start
    by :func:`resolve_clients`.
    """
    if spec is None or callable(spec):           # None: the attack's default; callables: Python only
        return
    if isinstance(spec, str):
        raise TypeError(f"{owner}: clients must be {_WHAT}, got the string {spec!r}; a recipe cannot "
                        "name a function (pass a predicate over a client's labels from Python instead)")
    if isinstance(spec, bool):
        raise TypeError(f"{owner}: clients must be {_WHAT}, got {spec!r}")
    if isinstance(spec, Mapping):
        _check_selector(spec, owner)
        return
    if isinstance(spec, float):
        if not 0.0 <= spec <= 1.0:
            raise ValueError(f"{owner}: a fraction of clients must be in [0, 1], got {spec}")
        return
    if isinstance(spec, int):
        check_int(spec, "clients", owner, minimum=0)
        return
    if isinstance(spec, (list, tuple, range)):
        for cid in spec:
            check_int(cid, "clients (a client id)", owner, minimum=0)
        return
    raise TypeError(f"{owner}: clients must be {_WHAT}, got {type(spec).__name__}")


def _check_selector(spec: Mapping, owner: str) -> None:
    keys = [k for k in spec if k not in SELECTOR_OPTIONS]
    if len(keys) != 1 or keys[0] not in SELECTORS:
        unknown = [k for k in keys if k not in SELECTORS]
        hint = did_you_mean(str(unknown[0]), SELECTORS + SELECTOR_OPTIONS) if unknown else ""
        raise ValueError(f"{owner}: clients as a selector needs exactly one of {', '.join(SELECTORS)} "
                         f"(optionally with {', '.join(SELECTOR_OPTIONS)}), got keys {list(spec)}{hint}")
    classes = spec["holders_of"]
    for cls in classes if isinstance(classes, list) else [classes]:
        check_int(cls, "clients.holders_of (a class)", owner, minimum=0)
    if spec.get("count") is not None:
        check_int(spec["count"], "clients.count", owner, minimum=0)


def _holders(spec: Mapping, ctx: SetupContext, owner: str) -> list[int]:
    classes = spec["holders_of"] if isinstance(spec["holders_of"], list) else [spec["holders_of"]]
    labels = ctx.client_labels(f"{owner}: clients={{holders_of: {spec['holders_of']}}}")
    bad = [c for c in classes if c >= ctx.num_classes]
    if bad:
        raise ValueError(f"{owner}: clients.holders_of names classes {bad} that the dataset does not have "
                         f"(classes 0..{ctx.num_classes - 1})")
    return [i for i in range(ctx.num_clients) if any(bool((labels[i] == c).any()) for c in classes)]


def resolve_clients(spec: ClientSpec | Callable[[Tensor], bool], ctx: SetupContext,
                    eligible: Callable[[Tensor], bool], name: str, eligibility: str = "") -> tuple[int, ...]:
    """Turn a :data:`ClientSpec` (or a Python predicate) into sorted client ids, drawing with the run's seed.

    A count or fraction is drawn among the clients ``eligible`` admits (``eligibility`` says who, in
    words, for the error message); ids and selectors are taken as they are.
    """
    check_client_spec(spec, name)
    n = ctx.num_clients
    if callable(spec):
        labels = ctx.client_labels(f"{name}: clients=<a predicate over a client's labels>")
        return tuple(i for i in range(n) if spec(labels[i]))
    if isinstance(spec, Mapping):
        pool = _holders(spec, ctx, name)
        count = spec.get("count")
        if count is None:
            return tuple(pool)
        return _draw(pool, count, ctx, name, f"holders of {spec['holders_of']}")
    if isinstance(spec, (list, tuple, range)):
        ids = sorted({int(i) for i in spec})
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"{name}: client ids {bad} do not exist (clients are 0..{n - 1})")
        return tuple(ids)
    count = int(round(spec * n)) if isinstance(spec, float) else spec
    return _draw([i for i in range(n) if eligible(ctx.client_targets[i])], count, ctx, name, eligibility)


def _draw(pool: Sequence[int], count: int, ctx: SetupContext, name: str, eligibility: str) -> tuple[int, ...]:
    if count > len(pool):
        who = f" ({eligibility})" if eligibility else ""
        raise ValueError(f"{name}: asked for {count} attackers but only {len(pool)} of the "
                         f"{ctx.num_clients} clients are eligible{who}; ask for at most {len(pool)}")
    rng = numpy_rng(ctx.seed, "attackers", name)
    return tuple(sorted(int(i) for i in rng.choice(list(pool), size=count, replace=False))) if count else ()
