"""Value checks every layer shares: "a number, but not a bool" and "a whole number".

``True`` is an ``int`` in Python and ``float(True) == 1.0``, so a stray boolean (YAML's
``yes``, a flag passed where a weight was meant) would silently become the number 1.
Every check of user input in hf_mixture goes through these, so that rule is written
once.

>>> as_number("1e-3"), as_number(True), as_number("abc")
(0.001, None, None)
>>> is_integer(3), is_integer(True), is_integer(3.0)
(True, False, False)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import HFMixtureError

_BOOLS = (bool, np.bool_)


def as_number(value: Any) -> float | None:
    """``value`` as a float when it is a number or a string that spells one; else None.

    A bool or None is not a number.  Strings are accepted because YAML 1.1 (PyYAML)
    reads ``1e-3`` — no dot — as the string '1e-3'.
    """
    if value is None or isinstance(value, _BOOLS):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def is_integer(value: Any) -> bool:
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, _BOOLS)


def check_int(value: Any, what: str, low: int) -> int:
    """``value`` as an int ``>= low``, or one sentence naming ``what`` (e.g. "Config field 'k'")."""
    if not is_integer(value) or value < low:
        raise HFMixtureError(f"{what} must be an integer >= {low}, got {value!r}.")
    return int(value)


def check_float(value: Any, what: str, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> float:
    """``value`` as a finite float in ``[low, high]`` (ends open as asked), or one sentence.

    >>> check_float("0.5", "Config field 'gamma'", 0, 1)
    0.5
    """
    v = as_number(value)
    if v is None:
        raise HFMixtureError(f"{what} must be a number, got {value!r}.")
    bad = (not math.isfinite(v) or v < low or v > high or (low_open and v == low)
           or (high_open and v == high))
    if bad:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise HFMixtureError(f"{what} is {value!r}; it must lie in {lo}{low}, {high}{hi}.")
    return v


def check_tokens(value: Any, what: str, allow_zero: bool = False) -> int:
    """A token count: a whole number (``1e9`` from YAML is fine) ``> 0`` (or ``>= 0``)."""
    if not is_integer(value):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise HFMixtureError(f"{what} must be a whole number of tokens, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        raise HFMixtureError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value}.")
    return int(value)


def check_unique_columns(names: list[str], where: str) -> None:
    """Refuse a table whose column names repeat (a reader would pick one, or raise KeyError).

    >>> check_unique_columns(["text", "id"], "f.parquet")
    >>> check_unique_columns(["text", "text"], "f.parquet")
    Traceback (most recent call last):
    ...
    hf_mixture.errors.HFMixtureError: f.parquet has the column name 'text' twice; every column needs its own name.
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise HFMixtureError(f"{where} has the column name '{name}' twice; every column "
                                 "needs its own name.")
        seen.add(name)
