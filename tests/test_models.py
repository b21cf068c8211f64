import pytest
import torch

from cxrray.models import BACKBONES, build_backbone


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", BACKBONES.names())
def test_backbone_forward_backward_and_gradcam_layer(name, in_chans):
    bdef = BACKBONES.get(name)
    size = max(64, bdef.min_size)
    g = torch.Generator().manual_seed(0)
    model, init = build_backbone(name, num_classes=3, in_chans=in_chans, pretrained=False, image_size=size)
    assert init == "random"
    x = torch.randn(2, in_chans, size, size, generator=g)
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert {bdef.gradcam_layer, *bdef.cam_layers} <= set(dict(model.named_modules()))


def test_three_channel_input_and_too_small():
    model, _ = build_backbone("basecnn", 2, in_chans=3, image_size=32)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(ValueError, match="at least 64 px"):
        build_backbone("alexnet", 2, image_size=32)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(KeyError, match=r"unknown backbone 'resnet7'; valid: .*basecnn.*resnet18"):
        build_backbone("resnet7", 2)


def test_cvrnet_predicts_the_mean_of_five_heads():
    model, _ = build_backbone("cvrnet", num_classes=3, in_chans=1, image_size=64)
    model.eval()
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        heads = model.head_probs(x)
        out = torch.softmax(model(x), dim=1)
    assert heads.shape == (5, 2, 3)
    assert torch.allclose(out, heads.mean(0), atol=1e-6)
    assert not torch.allclose(heads[0], heads[4])  # five different heads


def test_covid_cxnet_head_layout():
    model, _ = build_backbone("covid_cxnet", num_classes=2, in_chans=1, image_size=64)
    linear = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    drop = [m for m in model.head if isinstance(m, torch.nn.Dropout)]
    assert [lin.out_features for lin in linear] == [10, 2] and drop[0].p == 0.2
    assert linear[0].in_features == 1024  # DenseNet-121 features after global average pooling


def test_pretrained_offline_falls_back_once_and_says_so(monkeypatch):
    import time
    import warnings as pywarnings

    import cxrray.models.backbones as bb

    monkeypatch.setattr(bb, "hub_reachable", lambda *a, **k: False)

    import huggingface_hub.constants as hub
    import timm  # noqa: F401  (imported first, as in a real run: the env variable alone would be too late)

    before = hub.HF_HUB_OFFLINE

    t = time.time()
    with pywarnings.catch_warnings(record=True) as caught:
        pywarnings.simplefilter("default")  # Python's own filter: each warning once per place and message
        _, init1 = build_backbone("resnet18", 2, 1, pretrained=True)
        _, init2 = build_backbone("resnet18", 2, 1, pretrained=True)
    assert (init1, init2) == ("random", "random")
    assert before == hub.HF_HUB_OFFLINE  # restored after the build
    assert time.time() - t < 20  # no network retries
    said = [w for w in caught if issubclass(w.category, bb.PretrainedUnavailable)
            and "pretrained weights for resnet18 unavailable" in str(w.message)]
    assert len(said) == 1


def test_local_weights_file_loads_matching_tensors(tmp_path):
    src, _ = build_backbone("resnet18", 5, 3)
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    model, init = build_backbone("resnet18", 2, 3, weights=str(path))
    assert init == "file:w.pt"
    assert torch.equal(model.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    assert model.fc.out_features == 2  # the head keeps its own shape (random init)


def test_parameter_counts_match_the_publications():
    """Re-implementations land on the published counts: exactly where the paper gives enough detail
    (COVID-CAPS, CoroNet in Keras's convention, the timm comparators), closely where it does not."""
    from cxrray.models.params import PUBLISHED, counts

    got = {p.name: (counts(p.name, p.image_size, p.num_classes), p.count) for p in PUBLISHED}
    for name in ("vgg19", "efficientnet_b1", "densenet169", "resnet152", "inception_v3"):
        assert got[name][0][0] == got[name][1], name
    for name in ("coronet", "covid_caps"):  # Keras counts batch-norm statistics as parameters
        assert got[name][0][1] == got[name][1], name
    assert abs(got["darkcovidnet"][0][0] / got["darkcovidnet"][1] - 1) < 0.01
    assert abs(got["covidnet"][0][0] / got["covidnet"][1] - 1) < 0.05
    assert 38e6 < got["covidnet_large"][0][0] < 42e6


def test_capsule_routing_and_squash():
    """Squash keeps direction and maps lengths into [0, 1); routing sends the input capsules to the
    output capsule they agree with."""
    from cxrray.models.published import Capsule, squash

    v = squash(torch.tensor([[3.0, 4.0], [0.03, 0.04]]))
    assert torch.allclose(v.norm(dim=-1), torch.tensor([25 / 26, 0.0025 / 1.0025]), atol=1e-5)
    assert torch.allclose(v[0] / v[0].norm(), torch.tensor([0.6, 0.8]))
    caps = Capsule(d_in=2, n_caps=2, d_caps=2, routings=3)
    with torch.no_grad():
        caps.weight.copy_(torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]]))
    u = torch.tensor([[[1.0, 1.0]] * 6])  # every input predicts (1, 1) for capsule 0 and (1, -1) for 1
    out = caps(u)
    assert out.shape == (1, 2, 2) and (out.norm(dim=-1) < 1).all()
    assert torch.allclose(out[0, 0] / out[0, 0].norm(), torch.tensor([1.0, 1.0]) / 2 ** 0.5, atol=1e-5)
