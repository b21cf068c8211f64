"""Models stage: the backbone registry (timm-style) and builders.

Importing this package registers every entry: the study backbones (``backbones``), the comparators
(``comparators``) and the re-implemented published networks (``published``)."""

from cxrray.models import comparators, published  # noqa: F401  (registration)
from cxrray.models.backbones import BACKBONES, BackboneDef, build_backbone

__all__ = ["BACKBONES", "BackboneDef", "build_backbone"]
