"""Models cxrray did not train (issue 40): the forms people have them in give the same probabilities, and every
spec that does not match its model is one line before any scoring, naming what to fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision

from cxrray.models.external import ModelSpec, dry_run, load_external
from cxrray.registry import UserError

IMAGENET = {"channels": 3, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
FACTORY = '''import torchvision


def build():
    return torchvision.models.resnet18(weights=None, num_classes=2)
'''


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """One torchvision ResNet-18 (seeded weights, no download) as a state_dict, TorchScript and a factory."""
    root = tmp_path_factory.mktemp("forms")
    model = torchvision.models.resnet18(weights=None, num_classes=2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
        model.fc.bias.copy_(torch.tensor([-2.0, 3.0]))  # logits, not probabilities
    model.eval()
    torch.save({"state_dict": model.state_dict()}, root / "weights.pt")
    torch.jit.trace(model, torch.rand(1, 3, 64, 64)).save(str(root / "model.ts"))
    (root / "arch.py").write_text(FACTORY)
    specs = {"state_dict": ModelSpec("state_dict", str(root / "weights.pt"), arch="resnet18", image_size=64,
                                     **IMAGENET),
             "torchscript": ModelSpec("torchscript", str(root / "model.ts"), image_size=64, **IMAGENET),
             "factory": ModelSpec("factory", str(root / "weights.pt"), factory=f"{root / 'arch.py'}:build",
                                  image_size=64, **IMAGENET)}
    return root, model, specs


def test_every_form_gives_the_same_probabilities(forms):
    _, model, specs = forms
    images = torch.rand(6, 1, 80, 80, generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1)) / torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(model(x), 1)[:, 1].numpy()
    for form, spec in specs.items():
        got = load_external(spec).positive(images)
        assert np.allclose(got, expected, atol=1e-5), form
        assert dry_run(load_external(spec), images[:1]) == pytest.approx(expected[0], abs=1e-5)


def test_a_spec_file_reads_its_paths_from_its_folder(forms):
    root, _, specs = forms
    (root / "spec.json").write_text(json.dumps({"form": "torchscript", "path": "model.ts", "image_size": 64,
                                                "channels": 3, "mean": [0.485, 0.456, 0.406],
                                                "std": [0.229, 0.224, 0.225]}))
    assert ModelSpec.from_json(root / "spec.json") == specs["torchscript"]


@pytest.mark.parametrize("change, message", [
    ({"channels": 1, "mean": (0.0,), "std": (1.0,)}, r"does not take a 1-channel 64 px input as the spec says"),
    ({"outputs": 3}, r"returned outputs of shape \(1, 2\); the spec says \(1, 3\) \(outputs\)"),
    ({"output": "probability"}, r"are not probabilities; set output to softmax or sigmoid"),
])
def test_a_spec_that_does_not_match_the_model_is_one_line_from_the_dry_run(forms, change, message):
    _, _, specs = forms
    spec = ModelSpec(**(vars(specs["torchscript"]) | change))
    with pytest.raises(UserError, match=message) as err:
        dry_run(load_external(spec), torch.rand(1, 1, 64, 64))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fields, message", [
    ({"positive_index": 2}, r"positive_index 2 is out of range for 2 output\(s\) \(0\.\.1\)"),
    ({"form": "tflite"}, r"form 'tflite' is not one of \['torchscript', 'state_dict', 'factory', 'onnx', "
                           r"'torchxrayvision'\]"),
    ({"form": "state_dict"}, r"form state_dict needs 'arch'"),
    ({"channels": 3, "mean": (0.5, 0.5)}, r"mean has 2 values; give 1 or 3"),
    ({"output": "softmax", "outputs": 1, "positive_index": 0}, r"a single logit is 'sigmoid'"),
    ({"image_size": 8}, r"--image-size 8 is out of range: \[16, 4096\] \(px\)"),
    ({"outputs": 3, "output_names": ("a", "b", "c"), "finding": "d"}, r"finding 'd' is not among output_names"),
    ({"output_names": ("a", "b", "c")}, r"3 output_names for 2 output\(s\)"),
    ({"cam": "lime"}, r"cam 'lime' is not one of \['gradcam', 'hirescam'\]"),
    ({"form": "torchxrayvision", "arch": "densenet121-res224-all"}, r"form torchxrayvision needs finding"),
    ({"form": "torchxrayvision", "arch": "resnet50-res512-all", "finding": "Pneumonia"},
     r"'resnet50-res512-all' is not a torchxrayvision DenseNet; valid: \['densenet121-res224-all'"),
])
def test_a_spec_that_cannot_be_right_is_refused_on_its_own(fields, message):
    with pytest.raises(UserError, match=message) as err:
        ModelSpec(**({"path": "x.pt"} | fields))
    assert "\n" not in str(err.value)


def test_an_unreadable_model_file_is_one_line_naming_it(forms, tmp_path):
    root = forms[0]
    cases = [(ModelSpec("torchscript", str(root / "weights.pt")), r"weights.pt \(torchscript\) cannot be loaded"),
             (ModelSpec("state_dict", str(root / "weights.pt"), arch="resnet34", **IMAGENET),
              r"weights.pt \(state_dict\) cannot be loaded: Error\(s\) in loading state_dict"),
             (ModelSpec("state_dict", str(root / "weights.pt"), arch="no_such_net"), r"arch 'no_such_net' is neither"),
             (ModelSpec("torchscript", str(tmp_path / "missing.ts")), r"path '.*missing.ts' is not a file"),
             (ModelSpec("factory", str(root / "weights.pt"), factory=f"{root / 'arch.py'}:nope"),
              r"arch.py has no function 'nope'")]
    (tmp_path / "broken.ts").write_bytes(b"PK\x03\x04 not a zip")
    cases.append((ModelSpec("torchscript", str(tmp_path / "broken.ts")), r"broken.ts \(torchscript\) cannot be loaded"))
    for spec, message in cases:
        with pytest.raises(UserError, match=message) as err:
            load_external(spec)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"unknown field\(s\) \['input'\]; valid:"):
        (tmp_path / "bad.json").write_text(json.dumps({"input": 3}))
        ModelSpec.from_json(tmp_path / "bad.json")


def test_a_torchxrayvision_densenet_is_read_from_a_local_file_by_finding_name(tmp_path):
    """The package's DenseNet (no download: weights=None, then the local file), as the whole pickled model it
    distributes and as a state dict: its own input scaling ([-1024, 1024], 224 px, one channel), its outputs
    named, the positive one chosen by finding."""
    import torchxrayvision as xrv

    torch.manual_seed(0)
    net = xrv.models.DenseNet(weights=None).eval()
    torch.save(net, tmp_path / "whole.pt")
    torch.save(net.state_dict(), tmp_path / "state.pt")
    images = torch.rand(3, 1, 96, 96, generator=torch.Generator().manual_seed(1))
    x = torch.nn.functional.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False) * 2048 - 1024
    with torch.no_grad():
        expected = torch.sigmoid(net(x)[:, 8]).numpy()
    for file in ("whole.pt", "state.pt"):
        spec = ModelSpec("torchxrayvision", str(tmp_path / file), arch="densenet121-res224-all", finding="Pneumonia")
        assert (spec.positive_index, spec.outputs, spec.image_size, spec.output) == (8, 18, 224, "sigmoid")
        assert spec.output_names[8] == "Pneumonia" and spec.gradcam_layer == "features.denseblock4"
        assert np.allclose(load_external(spec).positive(images), expected, atol=1e-6), file
