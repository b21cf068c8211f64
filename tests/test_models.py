import pytest
import torch

from cxrray.models import BACKBONES, build_backbone


@pytest.mark.parametrize("name", BACKBONES.names())
def test_backbone_forward_backward_and_gradcam_layer(name):
    bdef = BACKBONES.get(name)
    size = max(64, bdef.min_size)
    g = torch.Generator().manual_seed(0)
    model, init = build_backbone(name, num_classes=3, in_chans=1, pretrained=False, image_size=size)
    assert init == "random"
    x = torch.randn(2, 1, size, size, generator=g)
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert bdef.gradcam_layer in dict(model.named_modules())


def test_three_channel_input_and_too_small():
    model, _ = build_backbone("basecnn", 2, in_chans=3, image_size=32)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(ValueError, match="at least 64 px"):
        build_backbone("alexnet", 2, image_size=32)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(KeyError, match="unknown backbone 'resnet7'; valid: .*basecnn.*resnet18"):
        build_backbone("resnet7", 2)
