"""A polars scalar as the Python number its column holds. polars types ``Series.max()``, ``.sum()`` and a row's
value as any literal (date, bytes, list ...); a numeric column's value is read through these, so a type checker
sees a number and a non-numeric one fails loudly where it is read."""

from __future__ import annotations

from typing import SupportsFloat, SupportsIndex


def num(value: object) -> float:
    """``value`` (a number, or None for an empty column: NaN) as a float."""
    if value is None:
        return float("nan")
    if isinstance(value, SupportsFloat | SupportsIndex | str):
        return float(value)
    raise TypeError(f"not a number: {value!r}")


def count(value: object) -> int:
    """``value`` (an integral number: a count, a sum of booleans) as an int."""
    if isinstance(value, SupportsIndex):
        return int(value)
    if isinstance(value, SupportsFloat) and float(value).is_integer():
        return int(float(value))
    raise TypeError(f"not a count: {value!r}")
