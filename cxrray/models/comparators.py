"""Every comparator the five studies trained or cited, as registry entries.

Library backbones (timm): the CVR-Net comparison (Hasan et al., PROTOCOLS.md section 3) used VGG-19,
EfficientNet-B1, DenseNet-169, ResNet-152 and Inception-v3. Published systems re-implemented from their
papers (each docstring cites the paper and says what was inferred where the paper is silent):
DarkCovidNet, CoroNet, COVID-CAPS and an open COVID-Net. Parameter counts against the published ones:
``python -m cxrray.models.params`` (table in docs/models.md).
"""

from __future__ import annotations

import torch
from torch import nn

from cxrray.models.backbones import IMAGENET_GRAY, _timm, backbone


@backbone(gradcam_layer="features.34", min_size=32, **IMAGENET_GRAY)
def vgg19(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """VGG-19 (timm), a CVR-Net comparator (Hasan et al.); 224 px in the study."""
    return _timm("vgg19", num_classes, in_chans, pretrained)


@backbone(gradcam_layer="bn2", min_size=32, **IMAGENET_GRAY)
def efficientnet_b1(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """EfficientNet-B1 (timm), a CVR-Net comparator; native input 240 px."""
    return _timm("efficientnet_b1", num_classes, in_chans, pretrained)


@backbone(gradcam_layer="features.norm5", min_size=32, **IMAGENET_GRAY,
          cam_layers=("features.denseblock3", "features.denseblock2"))
def densenet169(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """DenseNet-169 (timm), a CVR-Net comparator."""
    return _timm("densenet169", num_classes, in_chans, pretrained)


@backbone(gradcam_layer="layer4", min_size=32, cam_layers=("layer3", "layer2"), **IMAGENET_GRAY)
def resnet152(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """ResNet-152 (timm), a CVR-Net comparator."""
    return _timm("resnet152", num_classes, in_chans, pretrained)


@backbone(gradcam_layer="Mixed_7c", min_size=75, **IMAGENET_GRAY)
def inception_v3(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """Inception-v3 (timm), a CVR-Net comparator; native input 299 px, at least 75 px."""
    return _timm("inception_v3", num_classes, in_chans, pretrained)


def _dn(cin: int, cout: int, k: int) -> nn.Sequential:
    """DarkNet layer: convolution, batch norm, leaky ReLU (slope 0.1)."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.1, inplace=True))


def _dn3(cin: int, cout: int) -> nn.Sequential:
    """DarkCovidNet's '3 x DN' block: 3x3 to ``cout``, 1x1 down to half, 3x3 back to ``cout``."""
    return nn.Sequential(_dn(cin, cout, 3), _dn(cout, cout // 2, 1), _dn(cout // 2, cout, 3))


class DarkCovidNet(nn.Module):
    """DarkCovidNet (Ozturk et al., Comput. Biol. Med. 2020, "Automated detection of COVID-19 cases
    using deep neural networks with X-ray images"), re-implemented from the paper's layer table.

    DN(8) - pool - DN(16) - pool - 3xDN(32) - pool - 3xDN(64) - pool - 3xDN(128) - pool - 3xDN(256)
    - DN(128, 1x1) - DN(256, 3x3) - conv 3x3 to the classes - flatten - linear. At the paper's 256 px
    the last map is 8x8 here; the paper's table shows 13x13 (its pooling padding is not stated), so the
    flatten width (``LazyLinear``) follows the input. Inferred: padding 'same', leaky slope 0.1, no bias
    before BN.
    """

    def __init__(self, num_classes: int, in_chans: int) -> None:
        super().__init__()
        pool = lambda: nn.MaxPool2d(2, 2)  # noqa: E731
        self.features = nn.Sequential(
            _dn(in_chans, 8, 3), pool(), _dn(8, 16, 3), pool(), _dn3(16, 32), pool(), _dn3(32, 64), pool(),
            _dn3(64, 128), pool(), _dn3(128, 256), _dn(256, 128, 1), _dn(128, 256, 3),
            nn.Conv2d(256, num_classes, 3, padding=1))
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@backbone(gradcam_layer="features.12", min_size=32, cam="hirescam")
def darkcovidnet(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """DarkCovidNet (Ozturk et al. 2020), the 'DarkNet' row of the CVR-Net comparison; never pretrained."""
    return DarkCovidNet(num_classes, in_chans)


class CoroNet(nn.Module):
    """CoroNet (Khan et al., Comput. Methods Programs Biomed. 2020): Xception (ImageNet) without its top,
    then flatten, dropout 0.5, dense 256 (ReLU), dense to the classes.

    The paper states 224 px and 33,969,964 parameters; that count matches a 5x5x2048 feature map,
    i.e. a 150 px input (224 px would give 46.5 M), so the flatten width follows the input
    (``LazyLinear``) and the parameter table reports both.
    """

    def __init__(self, num_classes: int, in_chans: int, pretrained: bool) -> None:
        super().__init__()
        self.backbone = _timm("legacy_xception", 0, in_chans, pretrained)
        self.backbone.reset_classifier(0, global_pool="")  # keep the spatial map: CoroNet flattens it
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.LazyLinear(256), nn.ReLU(inplace=True),
                                  nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))


@backbone(gradcam_layer="backbone.conv4", min_size=64, cam="hirescam", **IMAGENET_GRAY)
def coronet(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """CoroNet (Khan et al. 2020): Xception + flatten + dense 256 head."""
    return CoroNet(num_classes, in_chans, pretrained)


class CovidSDNet(nn.Module):
    """COVID-SDNet's classifier (Tabik et al., IEEE JBHI 2020): ResNet-50 whose last layer is replaced by
    FC 512 (ReLU) and the class layer (softmax)."""

    def __init__(self, num_classes: int, in_chans: int, pretrained: bool) -> None:
        super().__init__()
        self.backbone = _timm("resnet50", 0, in_chans, pretrained)  # pooled 2048-d features
        self.head = nn.Sequential(nn.Linear(self.backbone.num_features, 512), nn.ReLU(inplace=True),
                                  nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@backbone(gradcam_layer="backbone.layer4", min_size=32, **IMAGENET_GRAY,
          cam_layers=("backbone.layer3", "backbone.layer2"))
def covid_sdnet(num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """COVID-SDNet baseline classifier: ResNet-50 + FC 512 + softmax (use with ``seg_crop``)."""
    return CovidSDNet(num_classes, in_chans, pretrained)
