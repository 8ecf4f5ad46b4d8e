"""Bounds on a recipe's size and depth, checked on the YAML event stream before anything builds the data.

``yaml.safe_load`` of an alias bomb is instant (aliases share one object), but every later step copies the
tree (jsonargparse's namespaces, sweep points), so nine levels of nine aliases reach gigabytes. A document
nested thousands of levels deep ends in a ``RecursionError`` inside the loader. So before a recipe is loaded,
its events are counted with aliases expanded (in O(size of the text), no tree built, no recursion), and a
recipe over :data:`MAX_BYTES` of text, :data:`MAX_VALUES` values, :data:`MAX_CHARS` characters of scalars or
:data:`MAX_DEPTH` levels is refused with :class:`RecipeTooLarge`, one line. Only ``yaml`` is imported here:
the command line checks recipes before torch loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: the most bytes a recipe file (or one command-line value) may hold
MAX_BYTES = 1_000_000
#: the most values (mappings, lists, scalars) a recipe may expand to, aliases counted as expanded
MAX_VALUES = 100_000
#: the most characters its scalars may expand to
MAX_CHARS = 5_000_000
#: the deepest a recipe may nest, aliases counted as expanded
MAX_DEPTH = 50
_LIMITS = (f"a recipe holds at most {MAX_VALUES} values and {MAX_CHARS} characters once its aliases are "
           f"expanded, nests at most {MAX_DEPTH} levels and is at most {MAX_BYTES} bytes")


class RecipeTooLarge(ValueError):
    """A recipe (or a YAML value) over the size or depth bounds."""


def check_bounds(text: str, where: str) -> None:
    """Raise :class:`RecipeTooLarge` if the YAML ``text`` exceeds a bound; a YAML syntax error propagates."""
    if len(text) > MAX_BYTES:
        raise RecipeTooLarge(f"{where}: {len(text)} characters of YAML; {_LIMITS}: split it, or pass the "
                             "data it holds as a file the recipe names")
    anchors: dict[str, tuple[int, int, int]] = {}  # anchor -> (values, characters, depth) of its node
    stack: list[list[Any]] = [[None, 0, 0, 0]]  # frames: [anchor, values, characters, depth below]
    for event in _events(text, where):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) > MAX_DEPTH:
                raise RecipeTooLarge(f"{where}: nested more than {MAX_DEPTH} levels deep (line "
                                     f"{event.start_mark.line + 1}); {_LIMITS}")
            stack.append([event.anchor, 0, 0, 0])
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, values, chars, depth = stack.pop()
            node = (min(values + 1, MAX_VALUES + 1), chars, depth + 1)
        elif isinstance(event, yaml.ScalarEvent):
            anchor, node = event.anchor, (1, len(event.value), 0)
        elif isinstance(event, yaml.AliasEvent):
            anchor, node = None, anchors.get(event.anchor, (1, 0, 0))
        else:
            continue
        if anchor is not None:
            anchors[anchor] = node
        frame = stack[-1]
        frame[1] = min(frame[1] + node[0], MAX_VALUES + 1)  # saturated: a bomb's count stays a small int
        frame[2] = min(frame[2] + node[1], MAX_CHARS + 1)
        frame[3] = max(frame[3], node[2])
        line = event.start_mark.line + 1
        if sum(f[1] for f in stack) > MAX_VALUES:
            raise RecipeTooLarge(f"{where}: expands to more than {MAX_VALUES} values (aliases counted as "
                                 f"expanded; line {line}); {_LIMITS}: remove the repeated aliases")
        if sum(f[2] for f in stack) > MAX_CHARS:
            raise RecipeTooLarge(f"{where}: expands to more than {MAX_CHARS} characters of text (aliases counted "
                                 f"as expanded; line {line}); {_LIMITS}")
        if len(stack) - 1 + node[2] > MAX_DEPTH:
            raise RecipeTooLarge(f"{where}: nests more than {MAX_DEPTH} levels deep once its aliases are "
                                 f"expanded (line {line}); {_LIMITS}")


def _events(text: str, where: str) -> Any:
    """The YAML events of ``text``; libyaml's own nesting limit (PyYAML >= 6.0.4) reads as our depth bound."""
    events = yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    while True:
        try:
            yield next(events)
        except StopIteration:
            return
        except yaml.YAMLError as err:
            if "maximum nesting depth" not in str(err):
                raise
            line = err.problem_mark.line + 1 if getattr(err, "problem_mark", None) else "?"
            raise RecipeTooLarge(f"{where}: nested more than {MAX_DEPTH} levels deep (line {line}); {_LIMITS}") \
                from None


def safe_load(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` after :func:`check_bounds`."""
    check_bounds(text, where)
    return yaml.safe_load(text)


def read_text(path: str | Path, where: str | None = None) -> str:
    """The text of a recipe file, refused by its size before it is read when it is over :data:`MAX_BYTES`."""
    path = Path(path)
    where = where or str(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise RecipeTooLarge(f"{where}: {size} bytes; {_LIMITS}: split it, or pass the data it holds as a file "
                             "the recipe names")
    return path.read_text()


def bound_parser_loader() -> None:
    """Make jsonargparse check every YAML text it loads (config files, files a recipe names, values) first."""
    from jsonargparse import get_loader, set_loader

    loader = get_loader("yaml")
    if getattr(loader, "bounded", False):
        return

    def bounded(text: str, **kwargs: Any) -> Any:
        check_bounds(text, "a YAML value")
        return loader(text, **kwargs)

    bounded.bounded = True  # type: ignore[attr-defined]
    set_loader("yaml", bounded, exceptions=(yaml.YAMLError,))  # a bound exceeded is never read as a string
