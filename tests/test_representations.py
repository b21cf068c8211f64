import numpy as np
import pytest
import torch

from cxrray.representations import REPRESENTATIONS, apply_representation, lung_box, out_channels
from cxrray.representations.augment import AugmentConfig, augment


def _synthetic():
    """Two rectangular 'lungs' with a gap; a known box from (2, 1) to (7, 8)."""
    mask = torch.zeros(2, 1, 10, 10)
    mask[0, 0, 2:8, 1:4] = 1
    mask[0, 0, 3:6, 6:9] = 1
    mask[1, 0, 4:6, 4:6] = 1
    image = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(0)) + 0.1
    box = torch.zeros_like(mask, dtype=torch.bool)
    box[0, 0, 2:8, 1:9] = True
    box[1, 0, 4:6, 4:6] = True
    return image, mask, box


def _interior(m: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood lies inside the image and the mask (written out, loop by loop)."""
    out = torch.zeros_like(m, dtype=torch.bool)
    for b in range(m.shape[0]):
        for y in range(m.shape[2]):
            for x in range(m.shape[3]):
                ys, xs = range(y - 1, y + 2), range(x - 1, x + 2)
                out[b, 0, y, x] = all(0 <= j < m.shape[2] and 0 <= i < m.shape[3] and m[b, 0, j, i] > 0
                                      for j in ys for i in xs)
    return out


EXPECTED = {
    "original": lambda m, b: torch.ones_like(m, dtype=torch.bool),
    "lungs_isolated": lambda m, b: _interior(m),
    "lungs_removed": lambda m, b: m == 0,
    "lungs_framed": lambda m, b: b,
    "lungs_boxed_out": lambda m, b: ~b,
}


def test_lung_box_is_the_rectangle_around_both_lungs():
    _, mask, box = _synthetic()
    assert torch.equal(lung_box(mask), box)
    assert not lung_box(torch.zeros(1, 1, 5, 5)).any()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hide_seek_pixels_are_exact(name):
    image, mask, box = _synthetic()
    out = apply_representation(name, image, mask)
    keep = EXPECTED[name](mask, box).expand_as(image)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert torch.equal(out[keep], image[keep])
    assert (out[~keep] == 0).all()


@pytest.mark.parametrize("name", REPRESENTATIONS.names())
def test_representation_on_real_cxr(name):
    from conftest import REAL_MINI
    from PIL import Image

    row = next(x for x in REAL_MINI.read_text().splitlines()[1:] if ",masks/" in x).split(",")
    img = torch.tensor(np.asarray(Image.open(REAL_MINI.parent / row[0]).convert("L")) / 255.0)[None, None]
    mask = torch.tensor(np.asarray(Image.open(REAL_MINI.parent / row[1]).convert("L")) > 0).float()[None, None]
    out = apply_representation(name, img, mask)
    assert out.shape == (1, out_channels(name), 256, 256) and torch.isfinite(out).all()
    kept = (out != 0).float().mean().item()
    lung_share = mask.mean().item()
    assert 0.1 < lung_share < 0.6
    if name == "lungs_isolated":
        assert kept <= lung_share + 1e-6
    if name == "lungs_removed":
        assert (out[mask > 0] == 0).all() and kept > 0.3


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"expected image \(B,C,H,W\) and mask \(B,1,H,W\)"):
        apply_representation("original", torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 5, 5))
    with pytest.raises(KeyError, match=r"valid: .*lungs_boxed_out, lungs_framed"):
        apply_representation("lungs_hidden", torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


def test_augment_is_seeded_and_keeps_image_and_mask_aligned():
    mask = torch.zeros(4, 1, 32, 32)
    mask[:, :, 8:24, 6:14] = 1
    image = mask.clone()  # an image identical to its mask must stay identical (up to interpolation)
    out1 = augment(image, mask, torch.Generator().manual_seed(1), AugmentConfig(intensity=0.0))
    out2 = augment(image, mask, torch.Generator().manual_seed(1), AugmentConfig(intensity=0.0))
    out3 = augment(image, mask, torch.Generator().manual_seed(2), AugmentConfig(intensity=0.0))
    assert torch.equal(out1[0], out2[0]) and torch.equal(out1[1], out2[1])
    assert not torch.equal(out1[1], out3[1])
    img, m = out1
    agree = ((img > 0.5) == (m > 0.5)).float().mean()
    assert agree > 0.97
    assert set(m.unique().tolist()) <= {0.0, 1.0}  # thresholding keeps the mask binary
    assert not torch.equal(m, mask)  # it did move
    assert (img[m == 0] == 0).all()  # covering: no lung content outside the warped mask


def test_resized_mask_covers_every_pixel_with_lung_content():
    """Downsampling: outside the resized mask, the resized image holds nothing of the lungs."""
    import numpy as np

    from cxrray.data.images import resize, resize_mask

    yy, xx = np.mgrid[0:256, 0:256]
    lung = (((yy - 110) / 60.0) ** 2 + ((xx - 80) / 30.0) ** 2 <= 1).astype(np.uint8)
    small_img, small_mask = resize(lung.astype(np.float32), 64), resize_mask(lung, 64)
    assert set(np.unique(small_mask)) == {0, 1}
    assert small_img[small_mask == 0].max() == 0.0
    nearest = resize(lung, 64, nearest=True)
    assert small_img[nearest == 0].max() > 0.1  # the rim a nearest-neighbour mask leaves behind


def test_augment_intensity_shift_is_bounded():
    img = torch.full((16, 1, 8, 8), 0.5)
    out, _ = augment(img, torch.ones_like(img), torch.Generator().manual_seed(0),
                     AugmentConfig(rotate_deg=0, translate=0, zoom=0, intensity=0.1))
    centre = out[:, 0, 4, 4]
    assert (centre - 0.5).abs().max() <= 0.1 + 1e-6 and centre.std() > 0.01
