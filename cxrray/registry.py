"""A small timm-style registry: a decorator registers a factory under a name.

Every experimental axis (representations, backbones, tasks, ...) is one
``Registry``; the sweep is built from their names and tests are generated
from them, so registering a thing is also what tests it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UserError(ValueError):
    """Bad input from the user (a manifest, an option, a study file): the CLIs print its message in one
    line and exit 2. Any other exception is a bug and keeps its traceback."""


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> object mapping filled by a decorator, with helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` (default: its ``__name__``)."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or raise ``UnknownNameError`` listing the valid ones."""
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
