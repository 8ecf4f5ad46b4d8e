"""Argument checks shared by every public entry point: one spelling, one exception type per mistake.

The rule everywhere in fl_lightning: a value of the wrong *type* raises ``TypeError``; a value of
the right type outside what the setting accepts raises ``ValueError``. Every message starts with
the owner (a class or function name) and names the setting, so ``Krum: f must be an int >= 0,
got -1`` says where to look and what to change.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Sequence

#: the largest seed every random generator we derive from it accepts (NumPy and torch take 64 bits)
MAX_SEED = 2**63 - 1


def _kind(value: Any) -> str:
    return type(value).__name__


def check_bool(value: Any, name: str, owner: str) -> bool:
    """``value`` if it is ``True`` or ``False``, else ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


def check_int(value: Any, name: str, owner: str, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[minimum, maximum]``.

    ``TypeError`` for another type, ``ValueError`` outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int{_int_range(minimum, maximum)}, got {value!r} "
                        f"({_kind(value)})")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{owner}: {name} must be an int{_int_range(minimum, maximum)}, got {value!r}")
    return value


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_optional_int(value: Any, name: str, owner: str, minimum: int | None = None,
                       maximum: int | None = None) -> int | None:
    """``None``, or an int as :func:`check_int` accepts it."""
    return None if value is None else check_int(value, name, owner, minimum, maximum)


def check_number(value: Any, name: str, owner: str, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True, high_inclusive: bool = True, finite: bool = True) -> float:
    """``value`` as a float if it is a real number (int or float, not bool) in the given range.

    ``TypeError`` for another type; ``ValueError`` for NaN, for an infinity when ``finite``, or
    outside ``low``/``high`` (each inclusive unless said otherwise).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number{_range(low, high, low_inclusive, high_inclusive)}, "
                        f"got {value!r} ({_kind(value)})")
    number = float(value)
    bad = math.isnan(number) or (finite and math.isinf(number))
    if not bad and low is not None:
        bad = number < low if low_inclusive else number <= low
    if not bad and high is not None:
        bad = number > high if high_inclusive else number >= high
    if bad:
        what = "a finite number" if finite else "a number"
        raise ValueError(f"{owner}: {name} must be {what}{_range(low, high, low_inclusive, high_inclusive)}, "
                         f"got {value!r}")
    return number


def _range(low: float | None, high: float | None, low_inclusive: bool, high_inclusive: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_inclusive else '>'} {low:g}")
    if high is not None:
        parts.append(f"{'<=' if high_inclusive else '<'} {high:g}")
    return (" " + " and ".join(parts)) if parts else ""


def check_positive(value: Any, name: str, owner: str) -> float:
    """A finite number > 0 (a learning rate, a tolerance, a clipping radius)."""
    return check_number(value, name, owner, low=0.0, low_inclusive=False)


def check_fraction(value: Any, name: str, owner: str, include_zero: bool = True, include_one: bool = True) -> float:
    """A number in ``[0, 1]`` (ends as asked)."""
    return check_number(value, name, owner, low=0.0, high=1.0, low_inclusive=include_zero,
                        high_inclusive=include_one)


def check_choice(value: Any, choices: Sequence[str], name: str, owner: str) -> str:
    """``value`` if it is one of ``choices``; otherwise the message lists them and the closest one."""
    if not isinstance(value, str):
        raise TypeError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r} "
                        f"({_kind(value)})")
    if value not in choices:
        raise ValueError(f"{owner}: unknown {name} {value!r}{did_you_mean(value, choices)}; "
                         f"valid: {', '.join(choices)}")
    return value


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` when none is close.

    Examples:
        >>> did_you_mean("Krumm", ["Krum", "FedAvg"])
        " (did you mean 'Krum'?)"
        >>> did_you_mean("xyz", ["Krum", "FedAvg"])
        ''
    """
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_seed(value: Any, owner: str, name: str = "seed") -> int:
    """A seed: an int in ``[0, 2**63 - 1]``, the range every generator we derive from it takes."""
    return check_int(value, name, owner, minimum=0, maximum=MAX_SEED)


def check_instance(value: Any, types: type | tuple[type, ...], name: str, owner: str, hint: str = "") -> Any:
    """``value`` if it is an instance of ``types``, else ``TypeError`` naming what was expected."""
    if not isinstance(value, types):
        expected = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise TypeError(f"{owner}: {name} must be a {expected}, got {_kind(value)}" + (f"; {hint}" if hint else ""))
    return value
