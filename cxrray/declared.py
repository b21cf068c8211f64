"""An option declared once: a field of a frozen record with its type (the annotation), its default, its help and
its range (``option``). The command line (``add_arguments``), the YAML study files (the records' own readers)
and the range checks (``check_ranges``) are all read from that one declaration, so a default, a bound or a help
text is written in one place.

The command line follows the type: ``bool`` is a switch (``--x``; one whose default is True is spelled by its
``flag``, e.g. ``--no-transfer``), ``Literal`` gives the choices, ``tuple[T, ...]`` takes one or more values,
``T | None`` takes a ``T``; a range makes argparse refuse an out-of-range value in one line naming the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cxrray.registry import UserError

KEY = "option"


@dataclass(frozen=True)
class Declared:
    """What a field says about itself as an option (``option``'s keywords)."""

    help: str
    group: str = ""  # the --help section it is listed under
    lo: float | None = None  # lowest value (inclusive unless open_lo)
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    unit: str = ""  # what the number counts, for range errors
    metavar: str | None = None
    registry: str | None = None  # a registry whose names --help lists (the command supplies them)
    flag: str | None = None  # its spelling on the command line (default --field-name)
    default_text: str | None = None  # how --help says the default; "" says none
    how: bool = False  # how this invocation runs, not what the study is: left out of study.yaml

    def ends(self) -> str:
        """The range as a reader writes it: [16, 4096], (0, 1), [0, inf) ..."""
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        left = "(" if self.open_lo or self.lo is None else "["
        right = ")" if self.open_hi or self.hi is None else "]"
        return f"{left}{lo}, {hi}{right}"

    def outside(self, value: float) -> bool:
        """Whether ``value`` is out of the declared range."""
        lo, hi = self.lo, self.hi
        return ((lo is not None and (value < lo or (self.open_lo and value == lo)))
                or (hi is not None and (value > hi or (self.open_hi and value == hi))))


def option(default: Any, help: str, **declared: Any) -> Any:
    """A record field declared as an option: ``default``, ``help`` and ``Declared``'s keywords. A default of
    ``dataclasses.MISSING`` makes the option required."""
    meta = {KEY: Declared(help, **declared)}
    return dataclasses.field(metadata=meta) if default is dataclasses.MISSING else \
        dataclasses.field(default=default, metadata=meta)


def declared(f: dataclasses.Field[Any]) -> Declared | None:
    """The declaration of a record's field, or None for a field that is no option."""
    found = f.metadata.get(KEY)
    return found if isinstance(found, Declared) else None


def options_of(record: type[Any]) -> list[tuple[dataclasses.Field[Any], Declared, Any]]:
    """Each declared field of ``record`` with its declaration and its resolved type, in declaration order."""
    hints = typing.get_type_hints(record)
    return [(f, d, hints[f.name]) for f in dataclasses.fields(record) if (d := declared(f)) is not None]


def flag_of(f: dataclasses.Field[Any], d: Declared) -> str:
    return d.flag or "--" + f.name.replace("_", "-")


def check_ranges(record: Any) -> None:
    """Every declared numeric field of ``record`` (or each value of an axis) within its range: one line naming
    the option, before any work (the values of a study file come this way, not through argparse)."""
    for f in dataclasses.fields(record):
        d = declared(f)
        if d is None or (d.lo is None and d.hi is None):
            continue
        value = getattr(record, f.name)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and not isinstance(v, bool) and d.outside(v):
                raise UserError(f"{flag_of(f, d)} {v:g} is out of range: {d.ends()}"
                                + (f" ({d.unit})" if d.unit else ""))


class OneLineParser(argparse.ArgumentParser):
    """A parser whose errors are one line (``prog: error: message``, exit 2), as every cxrray error is."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind: type, d: Declared) -> Callable[[str], Any]:
    """An argparse type: a ``kind`` inside ``d``'s range, else argparse's one-line error naming the option."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if d.outside(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {d.ends()}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its errors
    return parse


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_of(f: dataclasses.Field[Any], d: Declared, names: Callable[[str], Sequence[str]] | None = None) -> str:
    """The help line: the declaration's text, the valid names of its registry, and the default."""
    text = d.help
    if d.registry and names is not None:
        text += f"; valid: {', '.join(names(d.registry))}"
    default = f.default if f.default is not dataclasses.MISSING else None
    said = d.default_text if d.default_text is not None else (
        "" if default is None or isinstance(default, bool) or default in ((), "") else _shown(default))
    return (text + (f" (default: {said})" if said else "")).replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, record: type[Any], *,
                  names: Callable[[str], Sequence[str]] | None = None, groups: dict[str, Any] | None = None,
                  defaults: bool = False, ranged: bool = True) -> None:
    """An argument per declared field of ``record``, listed under its group (``groups``: those made so far).
    ``defaults``: argparse fills in the record's defaults (a small command); without, parsing yields only what
    the command line gave (the study commands layer it over files and presets). ``ranged``: argparse refuses a
    number out of its range; a study command leaves that to ``check_ranges``, which also reads its files."""
    groups = {} if groups is None else groups
    for f, d, hint in options_of(record):
        target = parser
        if d.group and isinstance(parser, argparse.ArgumentParser):
            if d.group not in groups:
                groups[d.group] = parser.add_argument_group(d.group)
            target = groups[d.group]
        kw: dict[str, Any] = {"help": help_of(f, d, names), "dest": f.name}
        if d.metavar or (d.flag and hint is not bool):
            kw["metavar"] = d.metavar or flag_of(f, d).lstrip("-").replace("-", "_").upper()
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            hint = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is bool:
            kw["action"] = "store_false" if f.default is True else "store_true"
        elif origin is tuple:
            kw["nargs"] = "+"
            kw["type"] = _type(args[0], d, ranged)
        elif origin is Literal:
            kw["choices"] = list(args)
        else:
            kw["type"] = _type(hint, d, ranged)
        if defaults and f.default is not dataclasses.MISSING:
            kw["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        elif f.default is dataclasses.MISSING:
            kw["required"] = True
        target.add_argument(flag_of(f, d), **kw)


def _type(hint: Any, d: Declared, ranged: bool) -> Callable[[str], Any]:
    if hint in (int, float):
        return _number(hint, d if ranged else Declared(d.help))
    if hint is Path:
        return Path
    return str


def from_arguments(record: type[Any], given: dict[str, Any]) -> dict[str, Any]:
    """The values of ``record``'s declared fields in a parsed namespace's dict, typed as the fields (a tuple
    axis from argparse's list)."""
    out = {}
    for f, _d, _hint in options_of(record):
        if f.name in given:
            value = given[f.name]
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out
