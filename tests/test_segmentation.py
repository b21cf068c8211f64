"""Lung segmentation on real CXRs with human masks, trained as a Ray Train job."""

import numpy as np
import polars as pl
import pytest
import torch
from conftest import REAL_MINI

from cxrray.segmentation.metrics import overlap_metrics
from cxrray.segmentation.postprocess import clean_mask, mask_quality
from cxrray.segmentation.unet import UNet


def test_unet_shapes_and_size_check():
    model = UNet(base=4, depth=3)
    assert model(torch.zeros(2, 1, 32, 48)).shape == (2, 1, 32, 48)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.zeros(1, 1, 30, 32))


def test_clean_mask_keeps_two_largest_and_fills_holes():
    prob = np.zeros((40, 40))
    prob[5:30, 3:15] = 0.9
    prob[5:30, 22:35] = 0.9
    prob[15:18, 8:10] = 0.1  # a hole inside the left lung
    prob[35:38, 35:38] = 0.9  # a speck
    mask = clean_mask(prob)
    assert mask[16, 9] == 1 and mask[36, 36] == 0
    assert mask_quality(mask).ok
    one = clean_mask(np.pad(np.ones((10, 10)), 15))
    q = mask_quality(one)
    assert not q.ok and "1 lung region(s)" in q.reason and "outside" in q.reason


def test_overlap_metrics_known_values():
    truth = np.zeros((10, 10), np.uint8)
    truth[:, :5] = 1
    pred = np.zeros_like(truth)
    pred[:, :4] = 1
    m = overlap_metrics(pred, truth)
    assert m["lung_dice"] == pytest.approx(2 * 40 / (40 + 50))
    assert m["lung_precision"] == 1.0 and m["lung_recall"] == pytest.approx(0.8)
    assert m["background_recall"] == 1.0 and m["lung_jaccard"] == pytest.approx(0.8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_local):
    from cxrray.segmentation.job import train_segmenter
    from cxrray.segmentation.train import SegConfig

    out = tmp_path_factory.mktemp("seg")
    per_image = train_segmenter(REAL_MINI, out, SegConfig(size=128, epochs=70))
    return out, per_image


def test_unet_reaches_dice_092_on_held_out_real_patients(trained, capsys):
    out, per_image = trained
    summary = pl.read_csv(out / "seg_summary.csv")
    with capsys.disabled():  # the figure belongs in every test log, not only in failures
        print("\nLung segmentation on held-out real patients (cxr-real-mini, hannover):")
        print(summary.select("source", "images", "lung_dice", "lung_jaccard", "lung_precision", "lung_recall",
                             "background_dice"))
    assert per_image.height >= 12
    assert per_image["lung_dice"].mean() >= 0.92
    assert (out / "unet.pt").exists() and set(summary["source"]) == {"hannover", "all"}


def test_fill_masks_for_images_without_one(trained, tmp_path):
    from cxrray.data.images import read_image, read_mask
    from cxrray.data.manifest import load_manifest
    from cxrray.segmentation.job import fill_masks

    out, _ = trained
    manifest = fill_masks(REAL_MINI, out / "unet.pt", tmp_path)
    df = load_manifest(manifest)
    assert df.height == 111 and (df["mask_path"] != "").all()
    unet = df.filter(pl.col("mask_source") == "unet")
    assert unet.height == 65
    r = unet.row(0, named=True)
    mask = read_mask(r["mask_path"])
    assert mask.shape == read_image(r["image_path"]).shape
    ok_share = (unet["mask_quality"] == "ok").mean()
    print(f"\nquality gate passed {ok_share:.0%} of {unet.height} U-Net masks on pediatric images")
    assert ok_share > 0.5
