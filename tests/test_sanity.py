"""Saliency sanity checks (issue 20, item 6), known answers: a ResNet-18 trained (in seconds) to find a bright
square passes the randomisation test with Grad-CAM and gets a positive ROAD score, while a map that ignores
the model (the image itself) fails the randomisation test and random maps score about 0 on ROAD; the
re-initialisation leaves the global random state and the lower layers alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrray.explain.cam_geometry import choose_layer
from cxrray.explain.saliency import gradcam
from cxrray.explain.sanity import RHO_MAX, randomisation_test, randomised_top, road
from cxrray.models import BACKBONES, build_backbone


def _data(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """64 px noise; class 1 has a bright 12 px square at a random place."""
    x = rng.normal(0, 0.3, (n, 1, 64, 64)).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i in np.flatnonzero(y):
        r, c = rng.integers(4, 48, 2)
        x[i, 0, r:r + 12, c:c + 12] += 2.0
    return torch.as_tensor(x), torch.as_tensor(y)


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, _ = build_backbone("resnet18", 2, 1, False, 64)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(60):
        xb, yb = _data(32, rng)
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = _data(24, rng)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    bdef = BACKBONES.get("resnet18")
    layer, geometry = choose_layer(model, (bdef.gradcam_layer, *bdef.cam_layers), x.shape)
    classes = y.numpy()
    maps = gradcam(model, layer, x, classes, geometry=geometry)
    return model, layer, geometry, x, classes, maps, accuracy


def test_the_trained_models_gradcam_passes_and_a_model_free_map_fails(trained):
    model, layer, geometry, x, classes, maps, accuracy = trained
    assert accuracy > 0.9  # it learned the square
    rho = randomisation_test(maps, lambda m: gradcam(m, layer, x, classes, geometry=geometry), model, layer)
    assert np.nanmean(rho) < RHO_MAX
    image_map = x[:, 0].numpy() - x[:, 0].numpy().min()  # "saliency" that is the image: no model in it
    same = randomisation_test(image_map, lambda m: image_map, model, layer)
    assert np.nanmean(same) == pytest.approx(1.0) and np.nanmean(same) >= RHO_MAX


def test_road_is_positive_for_the_models_maps_and_about_zero_for_random_ones(trained):
    model, _, _, x, classes, maps, _ = trained
    positives = np.flatnonzero(classes == 1)[:8]
    good = road(model, x[positives], maps[positives], classes[positives])
    noise = np.random.default_rng(3).random(maps[positives].shape).astype(np.float32)
    random = road(model, x[positives], noise, classes[positives])
    assert np.nanmean(good) > 0.05
    assert np.nanmean(good) > np.nanmean(random) + 0.05


def test_randomising_the_top_spares_the_rest_and_the_global_random_state(trained):
    model, layer, *_ = trained
    state = torch.random.get_rng_state()
    copy = randomised_top(model, layer, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    before, after = dict(model.named_parameters()), dict(copy.named_parameters())
    assert torch.equal(before["conv1.weight"], after["conv1.weight"])  # below the CAM layer: untouched
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed and all(n.startswith(layer) or not n.startswith(("conv1", "bn1", "layer1")) for n in changed)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])  # the head: re-initialised
