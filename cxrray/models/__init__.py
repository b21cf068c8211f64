"""Models stage: the backbone registry (timm-style) and builders.

The first use of a name below imports (and so registers) every entry: the study backbones (``backbones``),
the comparators (``comparators``), the re-implemented published networks (``published``) and a user's own
(``plugins``: ``file:module.py:build`` names and ``cxrray.backbones`` entry points). The package
itself imports no torch, so ``python -m cxrray.models.params --help`` answers at once (PEP 562 lazy names).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BACKBONES", "BackboneDef", "build_backbone"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cxrray.models import backbones, comparators, plugins, published  # noqa: F401  (registration)

        return getattr(backbones, name)
    raise AttributeError(f"module 'cxrray.models' has no attribute {name!r}")
