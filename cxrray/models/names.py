"""Backbone names that are paths (``file:module.py:build``, ``plugins``): torch-free, so the studies can make
them absolute while parsing their options."""

from __future__ import annotations

from pathlib import Path

FILE_PREFIX = "file:"  # a user's network: file:path/to/module.py:build (``plugins``)


def absolute(name: str) -> str:
    """A backbone name with a ``file:`` path made absolute (so every Ray worker reads the same file); every other
    name as it is. Torch-free: studies call it while parsing their options."""
    if not name.startswith(FILE_PREFIX):
        return name
    file, sep, fn = name[len(FILE_PREFIX):].rpartition(":")
    return f"{FILE_PREFIX}{Path(file).resolve()}{sep}{fn}" if sep else name
