"""Known answers of the phantom's source signature (issue 16, item 8): at the default strength, global
intensity statistics of the lungs_removed image cannot tell the confounded hospitals apart, while a CNN finds
the places of their burn-in text and marker; at full strength a histogram alone solves the confound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from cxrray.data import phantom
from cxrray.data.images import read_image, read_mask, resize, resize_mask
from cxrray.data.splits import assign_splits
from cxrray.representations.base import apply_representation

SIZE = 64


def _phantom(tmp: Path, **kw) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
    """((images, lung masks) at 64 px, CL2 labels (COVID-19 = 1), split) of a 160-patient phantom."""
    path = phantom.write_phantom(tmp, n_patients=160, seed=0, confound=1.0, **kw)
    m = assign_splits(pl.read_csv(path).with_row_index("row"), (0.6, 0.2, 0.2), seed=0)
    img = torch.tensor(np.stack([resize(read_image(tmp / p), SIZE) for p in m["image_path"]]))[:, None]
    mask = torch.tensor(np.stack([resize_mask(read_mask(tmp / p), SIZE) for p in m["mask_path"]]),
                        dtype=torch.float32)[:, None]
    return (img[:, 0].numpy(), mask[:, 0].numpy()), (m["label"] == "CVP").to_numpy().astype(int), m["split"].to_numpy()


def _histogram_auroc(data: tuple[np.ndarray, np.ndarray], y: np.ndarray, split: np.ndarray) -> float:
    """Test AUROC of a logistic regression on a 32-bin intensity histogram plus mean and sd of lungs_removed."""
    x = apply_representation("lungs_removed", *(torch.tensor(a)[:, None] for a in data))[:, 0].numpy()
    flat = x.reshape(len(x), -1)
    feats = np.column_stack([np.stack([np.histogram(a, 32, (0, 1))[0] / a.size for a in flat]),
                             flat.mean(1), flat.std(1)])
    tr, te = split == "train", split == "test"
    scale = StandardScaler().fit(feats[tr])
    lr = LogisticRegression(max_iter=5000).fit(scale.transform(feats[tr]), y[tr])
    return float(roc_auc_score(y[te], lr.predict_proba(scale.transform(feats[te]))[:, 1]))


@pytest.fixture(scope="module")
def default_phantom(tmp_path_factory) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
    return _phantom(tmp_path_factory.mktemp("default"))


def test_intensity_statistics_do_not_solve_the_default_confound(default_phantom, tmp_path):
    """Before: the pixel standard deviation alone reached test AUROC 1.000 on lungs_removed."""
    default = _histogram_auroc(*default_phantom)
    assert default <= 0.75
    assert _histogram_auroc(*_phantom(tmp_path, signature=1.0)) >= max(0.8, default + 0.15)  # the knob works


def test_a_cnn_still_finds_the_default_confound(default_phantom):
    """The hospitals' stamps differ by place only: ResNet-18 on lungs_removed finds them in 6 epochs."""
    from cxrray.models.backbones import build_backbone
    from cxrray.representations.augment import AugmentConfig, augment

    x, y, split = default_phantom
    image, mask = (torch.tensor(a)[:, None] for a in x)
    tr, te = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net, _ = build_backbone("resnet18", 2, 1)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    weight = torch.tensor([1 / (y[tr] == 0).mean(), 1 / (y[tr] == 1).mean()], dtype=torch.float32)

    def inputs(img: torch.Tensor, msk: torch.Tensor) -> torch.Tensor:
        return (apply_representation("lungs_removed", img, msk) - 0.449) / 0.226

    net.train()
    for _ in range(8):
        order = tr[torch.randperm(len(tr), generator=gen).numpy()]
        for i in range(0, len(order), 32):
            b = order[i:i + 32]
            img, msk = augment(image[b], mask[b], gen, AugmentConfig())
            loss = torch.nn.functional.cross_entropy(net(inputs(img, msk)), torch.tensor(y[b]), weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        score = torch.softmax(net(inputs(image[te], mask[te])), 1)[:, 1].numpy()
    assert roc_auc_score(y[te], score) >= 0.85


def test_signature_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="signature"):
        phantom.write_phantom(tmp_path, signature=1.5)


def test_every_source_stamps_the_same_intensities():
    """At strength 0 two hospitals' images differ only by where the text and marker are: their histograms
    differ by under 1 % of the pixels (noise landing on other pixels); at strength 1 by over 50x as much."""
    def spread(strength: float) -> list[int]:
        hists = [np.histogram(phantom.render("NOR", "none", s.at_strength(strength), np.random.default_rng(4),
                                             size=128)[0], 64, (0, 1))[0] for s in phantom.SOURCES]
        return [int(np.abs(h - hists[0]).sum()) for h in hists[1:]]

    assert max(spread(0.0)) < 0.01 * 128 * 128
    assert min(spread(1.0)) > 50 * max(spread(0.0))
