"""LIME explanations (COVID-CXNet's second explanation method) measured like Grad-CAM.

For each test image, the ``lime`` package (Ribeiro et al. 2016) fits a local linear model on SLIC
superpixels switched off (set to black, the value the lung-hiding representations use) and
reports each superpixel's weight for the predicted class. The map is the positive weights painted
on their superpixels, so ``saliency_mass(map, lungs)`` is the share of the evidence *for* the
prediction that lies in the lungs, comparable with the Grad-CAM share. Seeded per image.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch


def lime_maps(model: torch.nn.Module, x: torch.Tensor, classes: np.ndarray, probs_fn, *, hide_value: float,
              num_samples: int = 300, n_segments: int = 100, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """(B, H, W) maps of positive LIME superpixel weights for ``classes[i]`` of model input ``x[i]``.

    ``probs_fn``: logits -> probabilities (the trial's head); ``hide_value``: the model-input value of
    a black pixel (what a hidden superpixel becomes).
    """
    from lime import lime_image
    from skimage.segmentation import slic

    model.eval()
    chans = x.shape[1]

    def classify(images: np.ndarray) -> np.ndarray:  # (N, H, W, 3) -> (N, classes)
        t = torch.as_tensor(images[..., :chans], dtype=torch.float32).permute(0, 3, 1, 2)
        with torch.no_grad():
            return torch.cat([probs_fn(model(t[i:i + batch_size])) for i in range(0, len(t), batch_size)]).numpy()

    def segment(image: np.ndarray) -> np.ndarray:
        lo, hi = float(image.min()), float(image.max())
        scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
        # enforce_connectivity=False: with it, scikit-image 0.26 merged every image into one segment here
        return slic(scaled, n_segments=n_segments, compactness=30.0, channel_axis=-1, start_label=0,
                    enforce_connectivity=False)

    out = np.zeros((len(x), x.shape[-2], x.shape[-1]), np.float32)
    for i in range(len(x)):
        img = x[i].permute(1, 2, 0).numpy().astype(np.float64)
        img3 = np.repeat(img, 3, axis=-1) if chans == 1 else img  # LIME segments RGB-shaped images
        explainer = lime_image.LimeImageExplainer(random_state=seed + i)
        with contextlib.redirect_stderr(io.StringIO()):  # lime draws a tqdm bar per image
            exp = explainer.explain_instance(img3, classify, labels=(int(classes[i]),), top_labels=None,
                                             hide_color=hide_value, num_samples=num_samples,
                                             segmentation_fn=segment, batch_size=batch_size, random_seed=seed + i)
        weights = dict(exp.local_exp[int(classes[i])])
        seg = exp.segments
        out[i] = np.vectorize(lambda s, w=weights: max(w.get(s, 0.0), 0.0))(seg)
    return out
