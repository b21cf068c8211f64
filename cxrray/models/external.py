"""A trained classifier cxrray did not train, in the form its owner has it (issue 40's front door).

``ModelSpec`` says how the model reads an image and what its outputs mean: its form and file, its input size
and channels, the intensity scaling and normalisation, how outputs become a probability (softmax, sigmoid, or
already probabilities) and which output is the positive class, and the layer for Grad-CAM. ``load_external``
builds an ``ExternalModel`` from it; ``ExternalModel.positive`` maps a batch of cxrray images (N, 1, H, W in
[0, 1]) to the positive class's probability, through the model's own preprocessing. ``dry_run`` scores one image
and refuses, in one line naming the spec field, a spec that does not match the model (wrong channels or size,
an index out of range, outputs that are not probabilities). Nothing is downloaded: every architecture is built
without pretrained weights and the weights come from the local file.

Forms: ``torchscript`` (``torch.jit.load``; no saliency: a ScriptModule takes no hooks), ``state_dict`` (a timm or
torchvision architecture name + weights), ``factory`` (``module.py:build`` returning an ``nn.Module``, + weights),
``onnx`` (onnxruntime, when installed; no saliency), ``torchxrayvision`` (a DenseNet of the ``torchxrayvision``
package by its weights name, e.g. ``densenet121-res224-all``, with the weights from a local file: its outputs'
names, input scaling to [-1024, 1024] and 224 px input are filled in for every field left at its default).
A multilabel model's positive output can be named (``finding`` among ``output_names``) instead of indexed.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrray.declared import check_ranges, option
from cxrray.registry import UserError

Form = Literal["torchscript", "state_dict", "factory", "onnx", "torchxrayvision"]
Output = Literal["softmax", "sigmoid", "probability"]
Cam = Literal["gradcam", "hirescam"]
SPEC = "the model's spec"  # their --help section


@dataclass(frozen=True)
class ModelSpec:
    """How an external model reads an image and what its outputs mean (a JSON file or the audit's flags)."""

    form: Form = option("torchscript", "how the model is stored", group=SPEC)
    path: str = option("", "the model file (torchscript, onnx) or its weights (state_dict, factory)", group=SPEC)
    arch: str = option("", "timm or torchvision architecture name (form state_dict), e.g. resnet18", group=SPEC)
    factory: str = option("", "module.py:build, a function returning the nn.Module (form factory)", group=SPEC)
    image_size: int = option(224, "the model's input size", lo=16, hi=4096, unit="px", group=SPEC)
    channels: int = option(1, "input channels (3: the grey image repeated)", lo=1, hi=3, group=SPEC)
    scale: float = option(1.0, "the [0, 1] image is multiplied by this first (255 for 0-255 inputs)", lo=0,
                          open_lo=True, group=SPEC)
    mean: tuple[float, ...] = option((0.0,), "per-channel mean subtracted after scaling", group=SPEC)
    std: tuple[float, ...] = option((1.0,), "per-channel standard deviation divided by", group=SPEC)
    output: Output = option("softmax", "how outputs become probabilities", group=SPEC)
    outputs: int = option(2, "how many outputs the model has", lo=1, hi=100_000, group=SPEC)
    positive_index: int = option(1, "the output of the positive class (a multilabel model: the finding's)", lo=0,
                                 group=SPEC)
    gradcam_layer: str = option("", "the module name Grad-CAM reads (empty: the last 2-D convolution)", group=SPEC)
    cam: Cam = option("gradcam", "gradcam, or hirescam for a head that flattens the feature map (position-specific "
                      "weights, where Grad-CAM's averaged gradients are not faithful)", group=SPEC)
    output_names: tuple[str, ...] = option((), "the outputs' names, in order (a multilabel model's findings)",
                                           group=SPEC)
    finding: str = option("", "the positive output by name (one of output_names); sets positive_index",
                          group=SPEC)

    def __post_init__(self) -> None:
        if self.form == "torchxrayvision":
            for name, value in xrv_defaults(self.arch).items():
                if getattr(self, name) == _DEFAULTS[name]:
                    object.__setattr__(self, name, value)
            if not self.finding:
                raise UserError(f"model spec: form torchxrayvision needs finding, the output to audit (one of "
                                f"{[n for n in self.output_names if n]})")
        if self.finding:
            if self.finding not in self.output_names:
                raise UserError(f"model spec: finding {self.finding!r} is not among output_names "
                                f"{[n for n in self.output_names if n]}")
            object.__setattr__(self, "positive_index", self.output_names.index(self.finding))
        if self.output_names and len(self.output_names) != self.outputs:
            raise UserError(f"model spec: {len(self.output_names)} output_names for {self.outputs} output(s)")
        check_ranges(self)
        for name, kind in (("form", Form), ("output", Output), ("cam", Cam)):
            if getattr(self, name) not in typing.get_args(kind):
                choices = list(typing.get_args(kind))
                raise UserError(f"model spec: {name} {getattr(self, name)!r} is not one of {choices}")
        if self.positive_index >= self.outputs:
            raise UserError(f"model spec: positive_index {self.positive_index} is out of range for {self.outputs} "
                            f"output(s) (0..{self.outputs - 1})")
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.channels):
                raise UserError(f"model spec: {name} has {len(getattr(self, name))} values; give 1 or {self.channels}"
                                f" (one per channel)")
        if any(s <= 0 for s in self.std):
            raise UserError(f"model spec: std must be positive, got {list(self.std)}")
        if self.output == "softmax" and self.outputs < 2:
            raise UserError("model spec: softmax needs at least 2 outputs; a single logit is 'sigmoid'")
        need = {"state_dict": ("arch", self.arch), "factory": ("factory", self.factory),
                "torchxrayvision": ("arch", self.arch)}.get(self.form)
        if need and not need[1]:
            raise UserError(f"model spec: form {self.form} needs '{need[0]}'")

    @classmethod
    def from_json(cls, path: Path) -> ModelSpec:
        """The spec in a JSON file; relative model paths are read from the file's folder. One line per error."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"model spec {path}: cannot be read ({' '.join(str(exc).split())[:160]})") from None
        if not isinstance(data, dict):
            raise UserError(f"model spec {path}: expected a JSON object of fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - known):
            raise UserError(f"model spec {path}: unknown field(s) {unknown}; valid: {sorted(known)}")
        for key in ("mean", "std", "output_names"):
            if key in data:
                data[key] = tuple(data[key]) if isinstance(data[key], list) else (data[key],)
        for key in ("path", "factory"):
            if data.get(key) and not Path(str(data[key]).split(":")[0]).is_absolute():
                data[key] = str(Path(path).parent / data[key])
        try:
            return cls(**data)
        except TypeError as exc:
            raise UserError(f"model spec {path}: {exc}") from None


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelSpec)}


def xrv_defaults(name: str) -> dict[str, Any]:
    """What a ``torchxrayvision`` DenseNet reads and returns (its package's own facts for weights ``name``): one
    224 px channel scaled to [-1024, 1024], 18 sigmoid outputs named by finding ('' where a model has none)."""
    try:
        import torchxrayvision as xrv
    except ImportError:
        raise UserError("model spec: form torchxrayvision needs the torchxrayvision package (pip install "
                        "torchxrayvision); nothing is downloaded, the weights come from path") from None
    dense = sorted(k for k in xrv.models.model_urls if k.startswith("densenet"))
    if name not in dense:
        raise UserError(f"model spec: arch {name!r} is not a torchxrayvision DenseNet; valid: {dense} (a ResNet: "
                        f"form factory with the torchvision resnet50 it wraps)")
    labels = tuple(xrv.models.model_urls[name]["labels"])
    return {"image_size": 224, "channels": 1, "scale": 2048.0, "mean": (1024.0,), "std": (1.0,),
            "output": "sigmoid", "outputs": len(labels), "output_names": labels,
            "gradcam_layer": "features.denseblock4"}


def _xrv(spec: ModelSpec) -> nn.Module:
    """The torchxrayvision DenseNet of ``spec.arch`` with the weights of ``spec.path``: a state dict, or the whole
    pickled model the package distributes (read with ``weights_only=False``: only for this form, a file the user
    trusts)."""
    import torchxrayvision as xrv

    model = xrv.models.DenseNet(weights=None, num_classes=spec.outputs)
    try:
        state = _state(spec.path)
    except Exception:  # noqa: BLE001  (a pickled whole model: weights_only refuses it)
        whole = torch.load(spec.path, map_location="cpu", weights_only=False)
        state = whole.state_dict() if isinstance(whole, nn.Module) else whole
    model.load_state_dict(state)
    return model


def _state(path: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"model {path}: not a state_dict (a {type(state).__name__})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _architecture(arch: str, spec: ModelSpec) -> nn.Module:
    """A timm or torchvision architecture by name, without pretrained weights (nothing is downloaded)."""
    import timm
    import torchvision

    if arch in timm.list_models():
        return timm.create_model(arch, pretrained=False, num_classes=spec.outputs, in_chans=spec.channels)
    if arch in torchvision.models.list_models():
        return torchvision.models.get_model(arch, weights=None, num_classes=spec.outputs)
    raise UserError(f"model spec: arch {arch!r} is neither a timm nor a torchvision architecture "
                    f"(e.g. resnet18, densenet121, efficientnet_b0)")


def _factory(target: str) -> nn.Module:
    """``module.py:build`` called with no arguments (or the ones it accepts of ``plugins.call_build``)."""
    from cxrray.models.plugins import call_build, load_function

    return call_build(load_function(target, "model spec: factory"), f"model spec: factory {target}")


class ExternalModel:
    """A loaded external model with its spec: ``positive(images)`` is the positive class's probability."""

    def __init__(self, spec: ModelSpec, module: nn.Module | None, session: Any = None) -> None:
        self.spec, self.module, self.session = spec, module, session

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """cxrray's (N, 1, H, W) images in [0, 1] as the model reads them: resized, channels, scaled, normalised."""
        s = self.spec
        x = images.float()
        if x.shape[-2:] != (s.image_size, s.image_size):
            x = F.interpolate(x, size=(s.image_size, s.image_size), mode="bilinear", align_corners=False)
        x = x.repeat(1, s.channels, 1, 1) if s.channels > 1 else x
        mean = torch.tensor(s.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(s.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * s.scale - mean) / std

    def outputs(self, images: torch.Tensor) -> np.ndarray:
        """The model's raw outputs (N, outputs) for cxrray images."""
        x = self.prepare(images)
        if self.session is not None:
            name = self.session.get_inputs()[0].name
            return np.asarray(self.session.run(None, {name: x.cpu().numpy()})[0], float)
        assert self.module is not None
        with torch.no_grad():
            out = self.module(x)
        return np.asarray(out.detach().float().cpu().numpy(), float)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Outputs (N, outputs) -> the positive class's probability (N,)."""
        s = self.spec
        col = raw[:, s.positive_index]
        if s.output == "softmax":
            shifted = raw - raw.max(axis=1, keepdims=True)
            return np.asarray(np.exp(shifted[:, s.positive_index]) / np.exp(shifted).sum(axis=1), float)
        if s.output == "sigmoid":
            return np.asarray(1 / (1 + np.exp(-col)), float)
        return np.asarray(col, float)

    def positive(self, images: torch.Tensor) -> np.ndarray:
        return self.probabilities(self.outputs(images))


def load_external(spec: ModelSpec) -> ExternalModel:
    """The model ``spec`` describes, in eval mode on the CPU; one line naming the file when it cannot be read."""
    if not spec.path or not Path(spec.path).is_file():
        raise UserError(f"model spec: path {spec.path!r} is not a file")
    try:
        if spec.form == "onnx":
            try:
                import onnxruntime
            except ImportError:
                raise UserError("model spec: form onnx needs onnxruntime (pip install onnxruntime)") from None
            return ExternalModel(spec, None, onnxruntime.InferenceSession(spec.path))
        if spec.form == "torchscript":
            module: nn.Module = torch.jit.load(spec.path, map_location="cpu")
        elif spec.form == "torchxrayvision":
            module = _xrv(spec)
        else:
            module = _architecture(spec.arch, spec) if spec.form == "state_dict" else _factory(spec.factory)
            module.load_state_dict(_state(spec.path))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001  (torch raises RuntimeError, pickle and zip errors, ...)
        why = " ".join(str(exc).split())[:200]
        raise UserError(f"model {spec.path} ({spec.form}) cannot be loaded: {why}") from None
    return ExternalModel(spec, module.eval())


def dry_run(model: ExternalModel, image: torch.Tensor) -> float:
    """Score one cxrray image (1, 1, H, W) and check the spec against what the model returns; its positive
    probability, or one line naming what does not match."""
    s = model.spec
    try:
        raw = model.outputs(image)
    except Exception as exc:  # noqa: BLE001
        why = " ".join(str(exc).split())[:200]
        raise UserError(f"model {s.path}: does not take a {s.channels}-channel {s.image_size} px input as the spec "
                        f"says (channels, image_size): {why}") from None
    if raw.ndim != 2 or raw.shape != (1, s.outputs):
        raise UserError(f"model {s.path}: returned outputs of shape {tuple(raw.shape)}; the spec says (1, "
                        f"{s.outputs}) (outputs)")
    if not np.isfinite(raw).all():
        raise UserError(f"model {s.path}: returned non-finite outputs on a test image")
    if s.output == "probability" and ((raw < 0) | (raw > 1)).any():
        raise UserError(f"model {s.path}: outputs {np.round(raw[0][:4], 3).tolist()} are not probabilities; set "
                        f"output to softmax or sigmoid")
    return float(model.probabilities(raw)[0])
