"""Models stage: the backbone registry (timm-style) and builders."""

from cxrray.models.backbones import BACKBONES, BackboneDef, build_backbone

__all__ = ["BACKBONES", "BackboneDef", "build_backbone"]
