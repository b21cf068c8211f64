"""Backbones from outside cxrray, so the full protocol runs on a user's own architecture (issue 40).

Two kinds of name reach ``BACKBONES`` through its factory:

- ``file:path/to/module.py:build``: ``build`` is imported from that file (made absolute before any trial is
  specified, ``models.absolute``, so every Ray worker reads the same file);
- a name a package registers under the ``cxrray.backbones`` entry-point group (``[project.entry-points.
  "cxrray.backbones"] mynet = "mypkg.nets:build"``).

``build`` is called with whichever of ``num_classes``, ``in_chans`` and ``pretrained`` it accepts and returns an
``nn.Module``. What travels with a registered backbone is read off the function or its module where given
(``GRADCAM_LAYER``, ``MIN_SIZE``, ``MEAN``, ``STD``); otherwise Grad-CAM reads the network's last 2-D
convolution and the input is normalised as (x - 0.5) / 0.25. Any problem is one line naming the file.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from cxrray.models.backbones import BACKBONES, BackboneDef
from cxrray.models.names import FILE_PREFIX as PREFIX
from cxrray.registry import UserError

ENTRY_POINTS = "cxrray.backbones"


def load_function(target: str, what: str) -> Callable[..., Any]:
    """``module.py:function`` imported from its file; one line naming ``what`` when it cannot be."""
    file, _, name = target.rpartition(":")
    if not file or not name or not Path(file).is_file():
        raise UserError(f"{what}: {target!r} must be an existing module.py:function")
    module_name = f"cxrray_plugin_{abs(hash(str(Path(file).resolve())))}"
    module = sys.modules.get(module_name)
    if module is None:
        module_spec = importlib.util.spec_from_file_location(module_name, file)
        if module_spec is None or module_spec.loader is None:
            raise UserError(f"{what}: {file} cannot be imported")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001  (the user's code: any error is theirs, said in one line)
            raise UserError(f"{what}: importing {file} failed ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:160]})") from None
        sys.modules[module_name] = module
    build = getattr(module, name, None)
    if not callable(build):
        raise UserError(f"{what}: {file} has no function {name!r}")
    return build


def call_build(build: Callable[..., Any], what: str, **kwargs: Any) -> nn.Module:
    """``build`` called with the keyword arguments it accepts; its result checked to be an ``nn.Module``."""
    params = inspect.signature(build).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    model = build(**{k: v for k, v in kwargs.items() if takes_all or k in params})
    if not isinstance(model, nn.Module):
        raise UserError(f"{what}: returned a {type(model).__name__}, not a torch nn.Module")
    return model


def _fact(build: Callable[..., Any], key: str, default: Any) -> Any:
    """A fact declared on the function (``build.GRADCAM_LAYER``) or its module, else ``default``."""
    return getattr(build, key, getattr(sys.modules.get(build.__module__), key, default))


def last_conv(model: nn.Module) -> str:
    """The name of the network's last 2-D convolution (the usual Grad-CAM layer), or ""."""
    return next((n for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Conv2d)), "")


def definition(name: str, build: Callable[..., Any]) -> BackboneDef:
    """The ``BackboneDef`` of a user's build function: its facts, its Grad-CAM layer checked on a built copy."""
    what = f"backbone {name}"

    def make(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
        return call_build(build, what, num_classes=num_classes, in_chans=in_chans, pretrained=pretrained)

    probe = make(2, 1, False)
    layers = dict(probe.named_modules())
    layer = _fact(build, "GRADCAM_LAYER", "") or last_conv(probe)
    if layer not in layers:
        raise UserError(f"{what}: GRADCAM_LAYER {layer!r} is not a module of the network (e.g. "
                        f"{', '.join(list(layers)[1:4])})")
    return BackboneDef(name, make, layer, int(_fact(build, "MIN_SIZE", 32)), float(_fact(build, "MEAN", 0.5)),
                       float(_fact(build, "STD", 0.25)), (build.__doc__ or getattr(sys.modules.get(
                           build.__module__), "__doc__", None) or f"{name} (a user's network)").strip())


@BACKBONES.factory("file:<module.py>:<function>, or a 'cxrray.backbones' entry point")
def plugin_backbone(name: str) -> BackboneDef | None:
    """The backbone a ``file:`` name or an installed entry point names; None for any other name."""
    if name.startswith(PREFIX):
        return definition(name, load_function(name[len(PREFIX):], f"backbone {name}"))
    from importlib.metadata import entry_points

    found = entry_points(group=ENTRY_POINTS, name=name)
    if not found:
        return None
    return definition(name, next(iter(found)).load())
