"""seg_crop, top_crop, the enhancement stack and histogram matching, on synthetic inputs."""

import pytest
import torch
import torch.nn.functional as F

from cxrray.representations import apply_representation
from cxrray.representations.crops import seg_box
from cxrray.representations.enhance import beasf, clahe, match_histogram


def _ramp(b=2, h=40, w=50):
    y, x = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return (y * w + x)[None, None].repeat(b, 1, 1, 1) / (h * w)


def test_top_crop_removes_exactly_the_top_8_percent():
    img = _ramp(h=50, w=50)
    out = apply_representation("top_crop", img, torch.zeros(2, 1, 50, 50))
    top = round(0.08 * 50)  # 4 rows
    expected = F.interpolate(img[:, :, top:, :], size=(50, 50), mode="bilinear", align_corners=True)
    assert torch.allclose(out, expected, atol=1e-5)
    assert out.min() >= img[:, :, top, 0].min() - 1e-6  # nothing from the removed rows survives


def test_seg_crop_is_the_lung_box_plus_2_5_percent():
    mask = torch.zeros(2, 1, 100, 100)
    mask[0, 0, 20:60, 10:30] = 1  # left lung
    mask[0, 0, 25:70, 50:80] = 1  # right lung -> box rows 20..69, cols 10..79
    x0, y0, x1, y1 = seg_box(mask)
    assert (x0[0].item(), y0[0].item()) == pytest.approx((10 - 0.025 * 70, 20 - 0.025 * 50))
    assert (x1[0].item(), y1[0].item()) == pytest.approx((79 + 0.025 * 70, 69 + 0.025 * 50))
    assert (x0[1].item(), y0[1].item(), x1[1].item(), y1[1].item()) == (0, 0, 99, 99)  # empty mask: whole image
    img = torch.rand(2, 1, 100, 100, generator=torch.Generator().manual_seed(0))
    out = apply_representation("seg_crop", img, mask)
    assert torch.allclose(out[1], img[1], atol=1e-5)  # whole-image box = identity
    # without margin the crop is exact: compare with slicing + resize
    from cxrray.representations.crops import crop_resize

    box = seg_box(mask, margin=0.0)
    exact = crop_resize(img[:1], *(t[:1] for t in box))
    ref = F.interpolate(img[:1, :, 20:70, 10:80], size=(100, 100), mode="bilinear", align_corners=True)
    assert torch.allclose(exact, ref, atol=1e-5)


def test_enhance_stack_channels():
    img = _ramp() ** 2
    out = apply_representation("enhance_stack", img, torch.zeros_like(img))
    assert out.shape == (2, 3, 40, 50)
    assert torch.equal(out[:, :1], img)
    assert torch.allclose(out[:, 1:2], clahe(img)) and torch.allclose(out[:, 2:3], beasf(img, 1.5))


def test_beasf_is_monotone_keeps_range_and_splits_at_the_mean():
    img = _ramp()[:1] ** 3  # dark-skewed
    out = beasf(img, 1.5)
    flat_in, flat_out = img.flatten(), out.flatten()
    order = torch.argsort(flat_in)
    assert (torch.diff(flat_out[order]) >= -1e-6).all()  # monotone tone mapping
    m = flat_in.mean()
    assert (flat_out[flat_in <= m] <= m + 1e-6).all() and (flat_out[flat_in > m] >= m - 1e-6).all()
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, img)


def test_clahe_raises_local_contrast():
    img = 0.4 + 0.05 * torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    assert clahe(img).std() > img.std() * 2


def test_histogram_matching_takes_the_reference_distribution():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 1, 32, 32, generator=g) ** 2
    ref = torch.rand(32, 32, generator=g) ** 0.5
    out = match_histogram(img, ref)
    assert torch.allclose(torch.sort(out[0].flatten())[0], torch.sort(ref.flatten())[0], atol=1e-6)
    for i in range(3):  # order of pixels is kept
        assert torch.equal(torch.argsort(out[i].flatten(), stable=True), torch.argsort(img[i].flatten(), stable=True))
