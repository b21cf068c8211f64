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
        self._factory: Callable[[str], T | None] | None = None
        self._cache: dict[str, T] = {}  # entries the factory made (not listed by ``names``)
        self._pattern = ""  # the names the factory makes, in words (for errors)

    def factory(self, pattern: str) -> Callable[[Callable[[str], T | None]], Callable[[str], T | None]]:
        """Decorator: a function making an entry for names no decorator registered (``None``: not one of its
        names), for whole families of names such as ``finding_<Name>``; ``pattern`` names them in errors."""

        def deco(fn: Callable[[str], T | None]) -> Callable[[str], T | None]:
            self._factory, self._pattern = fn, pattern
            return fn

        return deco

    def _made(self, name: object) -> T | None:
        if self._factory is None or not isinstance(name, str):
            return None
        if name not in self._cache:
            obj = self._factory(name)
            if obj is None:
                return None
            self._cache[name] = obj
        return self._cache[name]

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` (default: its ``__name__``)."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__")  # noqa: B009  (T is any object: the type checker cannot see it)
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
            made = self._made(name)
            if made is not None:
                return made
            valid = ", ".join(sorted(self._items)) + (f", or {self._pattern}" if self._pattern else "")
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items or self._made(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
