"""Saliency maps placed where the layer's cells are, at a resolution that can say where; patient bootstrap."""

import numpy as np
import pytest
import torch
from PIL import Image

from cxrray.explain.cam_geometry import grid_geometry, layer_geometry, place
from cxrray.explain.saliency import bootstrap_ci, saliency_mass
from cxrray.models import BACKBONES, build_backbone


def _lung_mask(phantom_manifest, size: int) -> np.ndarray:
    import polars as pl

    row = pl.read_csv(phantom_manifest).row(0, named=True)
    mask = Image.open(phantom_manifest.parent / row["mask_path"]).convert("L").resize((size, size), Image.NEAREST)
    return np.asarray(mask) > 0


def _sampled(mask: np.ndarray, geometry) -> np.ndarray:
    """The mask as a layer grid can hold it: each cell takes the mask at its centre pixel."""
    rows = np.clip(np.rint(geometry.offset[0] + geometry.stride[0] * np.arange(geometry.cells[0])), 0,
                   mask.shape[0] - 1).astype(int)
    cols = np.clip(np.rint(geometry.offset[1] + geometry.stride[1] * np.arange(geometry.cells[1])), 0,
                   mask.shape[1] - 1).astype(int)
    return mask[np.ix_(rows, cols)].astype(np.float32)


def test_grid_geometry_known_answers():
    g = grid_geometry((54, 54), (64, 64))  # the base CNN: five unpadded 3x3 convolutions
    assert (g.offset, g.stride) == ((5.0, 5.0), (1.0, 1.0))
    g = grid_geometry((7, 7), (224, 224))  # ResNet layer4
    assert (g.offset, g.stride) == ((15.5, 15.5), (32.0, 32.0))
    assert grid_geometry((8, 8), (299, 299)).offset == (37.0, 37.0)  # Inception's unpadded stem trims the borders


def test_a_map_equal_to_the_lung_mask_scores_one_where_stretching_did_not(phantom_manifest):
    """The base CNN's 54x54 map equal to the lungs it covers: placed by geometry it scores 1.0 inside the
    lungs; stretched onto 64 px (the resize pytorch-grad-cam does) it scored about 0.7."""
    mask = _lung_mask(phantom_manifest, 64)
    model, _ = build_backbone("basecnn", 2, 1, image_size=64)
    geometry = layer_geometry(model, BACKBONES.get("basecnn").gradcam_layer, (1, 1, 64, 64))
    native = mask[5:59, 5:59].astype(np.float32)[None]
    assert saliency_mass(place(native, geometry, (64, 64)), mask[None])[0] == pytest.approx(1.0)
    stretched = torch.nn.functional.interpolate(torch.as_tensor(native)[None], size=(64, 64), mode="bilinear")[0]
    assert saliency_mass(stretched.numpy(), mask[None])[0] < 0.8


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_places_a_lung_map_on_the_lungs(name, phantom_manifest):
    """For every registered backbone at an image size it takes: a map equal to the lung mask, as its layer's
    grid holds it, lands on that mask (share 1.0 of the mass inside it)."""
    bdef = BACKBONES.get(name)
    model, _ = build_backbone(name, 2, 1)
    for size in (max(bdef.min_size, 64), 224, 299):  # the smallest size whose grid has a cell inside the lungs
        geometry = layer_geometry(model, bdef.gradcam_layer, (1, 1, size, size))
        native = _sampled(_lung_mask(phantom_manifest, size), geometry)
        if native.any():
            break
    assert native.any(), f"{name}: {geometry.cells} cells at {size} px, none inside the lungs"
    lungs_as_held = place(native[None], geometry, (size, size)) > 0
    assert saliency_mass(place(native[None], geometry, (size, size)), lungs_as_held)[0] == pytest.approx(1.0)
    assert geometry.stride[0] > 0 and -0.5 <= geometry.offset[0] <= size


def test_too_coarse_maps_are_not_interpretable_and_a_shallower_layer_is_taken():
    from cxrray.explain.cam_geometry import choose_layer

    bdef = BACKBONES.get("resnet18")
    model, _ = build_backbone("resnet18", 2, 1, image_size=64)
    layers = (bdef.gradcam_layer, *bdef.cam_layers)
    layer, geometry = choose_layer(model, layers, (1, 1, 64, 64))
    assert layer == "layer2" and geometry.cells == (8, 8)  # layer4 is 2x2 and layer3 4x4 at 64 px
    layer, geometry = choose_layer(model, layers, (1, 1, 32, 32))
    assert layer is None and geometry.cells == (4, 4)


def test_bootstrap_resamples_patients_not_images():
    """One patient with many identical images dominates an image bootstrap; resampling patients widens the CI."""
    rng = np.random.default_rng(0)
    values = np.concatenate([np.full(20, 0.9), rng.uniform(0.1, 0.3, 20)])
    groups = np.array(["p0"] * 20 + [f"q{i}" for i in range(20)])
    img_lo, img_hi = bootstrap_ci(values)
    pat_lo, pat_hi = bootstrap_ci(values, groups=groups)
    assert pat_hi - pat_lo > 1.5 * (img_hi - img_lo)


def test_crops_are_scored_against_the_lungs_the_model_saw(phantom_manifest):
    """seg_crop and top_crop move the lungs with the image; the saliency is scored against the mask moved the
    same way (scored against the uncropped mask, a map exactly on the lungs the model saw lost much of its
    share); representations that only hide pixels leave the mask where it is."""
    from cxrray.representations import REPRESENTATIONS

    raw = torch.as_tensor(_lung_mask(phantom_manifest, 64))[None, None].float()
    for name, iou_below in (("seg_crop", 0.6), ("top_crop", 0.95)):
        seen = REPRESENTATIONS.get(name).seen_mask(raw)
        inter, union = float((seen * raw).sum()), float(((seen + raw) > 0).sum())
        assert inter / union < iou_below, name  # the lungs moved
        on_seen = seen[:, 0].numpy()
        assert saliency_mass(on_seen, on_seen > 0)[0] == 1.0
        assert saliency_mass(on_seen, raw[:, 0].numpy() > 0)[0] < 0.9
    for name in ("original", "lungs_removed", "lungs_isolated", "lungs_boxed_out", "enhance_stack"):
        assert torch.equal(REPRESENTATIONS.get(name).seen_mask(raw), raw)
