"""Backbone registry. Each entry builds a classifier for any input channel count.

A ``BackboneDef`` carries what must travel with the network: its Grad-CAM
target layer, its minimum input size and its input normalisation, so a model
is never fed the wrong preprocessing by accident (the timm ``PretrainedCfg`` idea).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import torch
from torch import nn

from cxrray.config import check_choice
from cxrray.registry import Registry

log = logging.getLogger(__name__)

# Class-activation method: "gradcam" for heads that pool globally; "hirescam" (Draelos & Carin 2020) for heads
# that flatten the feature map (position-specific weights), where Grad-CAM's spatial averaging of the gradients
# is not faithful to what the model uses.
CamMethod = Literal["gradcam", "hirescam"]
# What the network outputs: class "logits", or "capsule_lengths" (COVID-CAPS: margin loss, see training.heads).
OutputKind = Literal["logits", "capsule_lengths"]
# ImageNet normalisation for a 1-channel input (timm sums the RGB filters of the first conv): the means and
# standard deviations of the three ImageNet channels, averaged. Non-ImageNet networks use (x - 0.5) / 0.25.
class Normalisation(TypedDict):
    """A backbone's input normalisation, spread into ``@backbone(...)``."""

    mean: float
    std: float


IMAGENET_GRAY: Normalisation = {"mean": 0.449, "std": 0.226}


@dataclass(frozen=True)
class BackboneDef:
    """A registered network and what travels with it: Grad-CAM layer and method, minimum input size,
    input normalisation, output kind."""

    name: str
    build: Callable[[int, int, bool], nn.Module]  # (num_classes, in_chans, pretrained) -> module
    gradcam_layer: str  # dotted module path of the Grad-CAM target layer
    min_size: int = 32
    mean: float = 0.5
    std: float = 0.25
    description: str = ""
    cam: CamMethod = "gradcam"
    output: OutputKind = "logits"
    # Shallower layers (deepest first) for inputs so small that ``gradcam_layer``'s map has too few cells to
    # say where the model looked (the analysis takes the deepest with at least 7 x 7 cells).
    cam_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice(f"backbone {self.name}", "cam", self.cam, CamMethod)
        check_choice(f"backbone {self.name}", "output", self.output, OutputKind)

    def probs(self, outputs: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities of a single-label network's outputs (softmax of logits; capsule lengths
        normalised to sum to 1, the ranking AUROC needs)."""
        if self.output == "capsule_lengths":
            return outputs / outputs.sum(1, keepdim=True).clamp_min(1e-8)
        return torch.softmax(outputs, 1)


BACKBONES: Registry[BackboneDef] = Registry("backbone")


def backbone(gradcam_layer: str, min_size: int = 32, description: str = "", cam: CamMethod = "gradcam",
             output: OutputKind = "logits", mean: float = 0.5, std: float = 0.25,
             cam_layers: tuple[str, ...] = ()) -> Callable:
    """Decorator registering a build function under its own name, with the facts that travel with it."""

    def deco(fn: Callable[[int, int, bool], nn.Module]) -> Callable:
        BACKBONES.register(fn.__name__)(BackboneDef(fn.__name__, fn, gradcam_layer, min_size, mean, std,
                                                    description or (fn.__doc__ or "").strip(), cam, output,
                                                    tuple(cam_layers)))
        return fn

    return deco


def _glorot(m: nn.Conv2d | nn.Linear) -> None:
    """Keras' default init (Glorot-uniform weights, zero bias), which the paper's model was trained from.
    PyTorch's default is 3x smaller in variance per layer: through five plain ReLU convolutions the
    activations shrink ~250x and the net sits at chance loss for epochs."""
    nn.init.xavier_uniform_(m.weight)
    if m.bias is not None:
        nn.init.zeros_(m.bias)


class _GlorotLazyLinear(nn.LazyLinear):
    """A lazy linear layer initialised like Keras once its input width is known."""

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            _glorot(self)


class BaseCNN(nn.Module):
    """Base CNN of Haghanifar et al.: 5 conv layers of 32 3x3 filters, ReLU, no BN or
    pooling, flatten, FC 10, FC 10, output. The flatten width follows the input size."""

    def __init__(self, num_classes: int, in_chans: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [nn.Conv2d(in_chans if i == 0 else 32, 32, 3), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), _GlorotLazyLinear(10), nn.ReLU(inplace=True),
                                  nn.Linear(10, 10), nn.ReLU(inplace=True), nn.Linear(10, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, nn.LazyLinear):
                _glorot(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@backbone(gradcam_layer="features.8", min_size=16, cam="hirescam")
def basecnn(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """Base CNN of COVID-CXNet (Haghanifar et al. 2020); never pretrained."""
    return BaseCNN(num_classes, in_chans)


def _timm(arch: str, num_classes: int, in_chans: int, pretrained: bool) -> Any:
    """A timm model (typed ``Any``: its ``num_features``, ``feature_info`` and ``forward_features`` are timm's)."""
    import timm

    return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)


@backbone(gradcam_layer="layer4", min_size=32, cam_layers=("layer3", "layer2"), **IMAGENET_GRAY)
def resnet18(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """ResNet-18 (timm); the small real backbone of the CPU demo."""
    return _timm("resnet18", num_classes, in_chans, pretrained)


@backbone(gradcam_layer="layer4", min_size=32, cam_layers=("layer3", "layer2"), **IMAGENET_GRAY)
def resnet50(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """ResNet-50 (timm), as in Sadre et al. and COVID-SDNet."""
    return _timm("resnet50", num_classes, in_chans, pretrained)


@backbone(gradcam_layer="features.norm5", min_size=32, **IMAGENET_GRAY,
          cam_layers=("features.denseblock3", "features.denseblock2"))
def densenet121(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """DenseNet-121 (timm), as in Fricks et al. and COVID-CXNet."""
    return _timm("densenet121", num_classes, in_chans, pretrained)


@backbone(gradcam_layer="features.18", min_size=32, **IMAGENET_GRAY)
def vgg11(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """VGG-11 (timm), as in Sadre et al."""
    return _timm("vgg11", num_classes, in_chans, pretrained)


@backbone(gradcam_layer="features.10", min_size=64, **IMAGENET_GRAY)
def alexnet(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """AlexNet (torchvision; timm has none), first conv replaced for ``in_chans``."""
    from torchvision.models import AlexNet_Weights
    from torchvision.models import alexnet as tv_alexnet

    model = tv_alexnet(weights=AlexNet_Weights.IMAGENET1K_V1 if pretrained else None)
    if in_chans != 3:
        old = model.features[0]
        new = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding)
        if pretrained:  # timm's trick: sum the RGB filters for one channel
            with torch.no_grad():
                new.weight.copy_(old.weight.sum(1, keepdim=True).repeat(1, in_chans, 1, 1) / in_chans)
                if new.bias is not None and old.bias is not None:
                    new.bias.copy_(old.bias)
        model.features[0] = new
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


@backbone(gradcam_layer="conv4", min_size=64, **IMAGENET_GRAY)
def xception(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """Xception (timm ``legacy_xception``, the original Chollet architecture), as in Hasan et al."""
    return _timm("legacy_xception", num_classes, in_chans, pretrained)


class CovidCXNet(nn.Module):
    """COVID-CXNet head (Haghanifar et al.): DenseNet-121 features, GAP, FC 10, dropout 0.2, output."""

    def __init__(self, num_classes: int, in_chans: int, pretrained: bool) -> None:
        super().__init__()
        self.backbone = _timm("densenet121", 0, in_chans, pretrained)  # num_classes=0: pooled features
        self.head = nn.Sequential(nn.Linear(self.backbone.num_features, 10), nn.ReLU(inplace=True),
                                  nn.Dropout(0.2), nn.Linear(10, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@backbone(gradcam_layer="backbone.features.norm5", min_size=32, **IMAGENET_GRAY)
def covid_cxnet(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """COVID-CXNet: DenseNet-121 (CheXNet init in the paper; ImageNet or random here) + GAP + FC 10 + dropout."""
    return CovidCXNet(num_classes, in_chans, pretrained)


def _fc_head(cin: int, num_classes: int) -> nn.Sequential:
    """CVR-Net head: GAP, then FC 512, 128, 64 (ReLU) and the class layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 512), nn.ReLU(inplace=True),
                         nn.Linear(512, 128), nn.ReLU(inplace=True), nn.Linear(128, 64), nn.ReLU(inplace=True),
                         nn.Linear(64, num_classes))


class CVRNet(nn.Module):
    """CVR-Net (Hasan et al. 2020): ResNet-50 and Xception branches, five heads on multi-scale features
    (ResNet conv3_x and conv4_x; Xception entry and middle flow; both final maps concatenated); the
    prediction is the mean of the five softmaxes.

    ``forward`` returns log(mean softmax), so cross-entropy on it is the NLL of the averaged
    prediction and a softmax of it gives back the mean probabilities.
    """

    def __init__(self, num_classes: int, in_chans: int, pretrained: bool) -> None:
        super().__init__()
        import timm

        resnet: Any = timm.create_model("resnet50", features_only=True, out_indices=(2, 3, 4),
                                        pretrained=pretrained, in_chans=in_chans)
        xception: Any = timm.create_model("legacy_xception", features_only=True, out_indices=(2, 3, 4),
                                          pretrained=pretrained, in_chans=in_chans)
        self.resnet, self.xception = resnet, xception
        rc, xc = resnet.feature_info.channels(), xception.feature_info.channels()
        self.heads = nn.ModuleList([_fc_head(rc[0], num_classes), _fc_head(rc[1], num_classes),
                                    _fc_head(xc[0], num_classes), _fc_head(xc[1], num_classes),
                                    _fc_head(rc[2] + xc[2], num_classes)])

    def head_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(5, B, C) softmax of every head."""
        r3, r4, r5 = self.resnet(x)
        xe, xm, x5 = self.xception(x)
        pool = lambda t: nn.functional.adaptive_avg_pool2d(t, 1)  # noqa: E731  (maps differ in size)
        final = torch.cat([pool(r5), pool(x5)], dim=1)
        feats = (r3, r4, xe, xm, final)
        return torch.stack([torch.softmax(h(f), dim=1) for h, f in zip(self.heads, feats, strict=True)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.head_probs(x).mean(0).clamp_min(1e-8))


@backbone(gradcam_layer="resnet.layer4", min_size=64, **IMAGENET_GRAY)
def cvrnet(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """CVR-Net multi-scale, multi-branch fusion of Hasan et al.; Grad-CAM per branch (resnet.layer4, xception.act4)."""
    return CVRNet(num_classes, in_chans, pretrained)


@functools.lru_cache(maxsize=1)
def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """Can the weight hub be reached? Checked once per process (the answer is cached), quickly, so an offline
    run does not sit in download retries."""
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@functools.cache
def head_keys(name: str, in_chans: int = 1) -> frozenset[str]:
    """State-dict keys of backbone ``name``'s classification layer(s): those whose shape follows
    ``num_classes``. Found by building the network twice on the meta device (no memory, no weights)."""
    spec = BACKBONES.get(name)
    with torch.device("meta"):
        a, b = spec.build(2, in_chans, False).state_dict(), spec.build(3, in_chans, False).state_dict()
    shape = lambda t: None if isinstance(t, nn.parameter.UninitializedParameter) else tuple(t.shape)  # noqa: E731
    return frozenset(k for k in a if shape(a[k]) != shape(b[k]))


def load_weights_file(model: nn.Module, path: str, drop: frozenset[str] = frozenset()) -> tuple[int, int]:
    """Load a local state dict, skipping tensors whose shape differs (head, first conv) and the keys in
    ``drop`` (a replaced head); returns (loaded, kept at their fresh init)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and k not in drop}
    model.load_state_dict(fit, strict=False)
    return len(fit), len(own) - len(fit)


@contextlib.contextmanager
def _cache_only(active: bool):
    """Switch the Hugging Face hub (timm's weight source) to cache-only for the block, then restore it."""
    if not active:
        yield
        return
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


class PretrainedUnavailable(UserWarning):
    """Pretrained weights could not be had; the network starts from random init (recorded as ``init=random``).
    Python's warning filter shows it once per backbone and process."""


def build_backbone(name: str, num_classes: int, in_chans: int = 1, pretrained: bool = False,
                   image_size: int | None = None, weights: str | None = None,
                   replace_head: bool = False) -> tuple[nn.Module, str]:
    """Build backbone ``name``; returns ``(model, init)``: ``imagenet``, ``file:<name>`` or ``random``.

    ``weights`` (a local state-dict file) wins over ``pretrained``; tensors whose
    shape does not fit (the head, a 1-channel first conv) keep their random init.
    ``pretrained=True`` asks timm/torchvision as a user would; when the weights
    cannot be had (offline and not cached) this says so once and falls back to
    random init, which the caller records in its results: nothing fails silently.
    ``replace_head``: the classification layer(s) always start fresh, even when
    their shape fits (a pretraining phase hands its features, not its head, on).
    """
    spec = BACKBONES.get(name)
    if image_size is not None and image_size < spec.min_size:
        raise ValueError(f"backbone {name!r} needs inputs of at least {spec.min_size} px, got {image_size}")
    init = "random"
    if weights:
        model = spec.build(num_classes, in_chans, False)
        if image_size is not None:  # lazy layers need their shapes before a state dict can fill them
            with torch.no_grad():
                model.eval()(torch.zeros(1, in_chans, image_size, image_size))
        drop = head_keys(name, in_chans) if replace_head else frozenset()
        loaded, skipped = load_weights_file(model, weights, drop)
        if not loaded:
            raise ValueError(f"{weights}: no tensor fits backbone {name!r}")
        log.info("%s: %d tensors from %s, %d kept random", name, loaded, weights, skipped)
        init = f"file:{Path(weights).name}"
    elif pretrained:
        try:
            with _cache_only(not hub_reachable()):  # offline: the local cache only, no download retries
                model = spec.build(num_classes, in_chans, True)
            init = "imagenet"
        except Exception as exc:  # noqa: BLE001  (offline, missing cache, no weights for this arch)
            warnings.warn(f"pretrained weights for {name} unavailable ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]}); using random init (recorded as init=random)",
                          PretrainedUnavailable, stacklevel=1)
            model = spec.build(num_classes, in_chans, False)
    else:
        model = spec.build(num_classes, in_chans, False)
    if image_size is not None:  # materialise lazy layers so the parameter count is real
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, image_size, image_size))
        model.train()
    return model, init
