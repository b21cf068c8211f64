"""Saliency that survives a sanity check: is the map about the model, and does it point at what the model uses?

- **Model-parameter randomisation** (Adebayo et al. 2018): the top of the network (the CAM layer and every
  layer after it) is re-initialised and the map recomputed for the same class. A map that stays the same (Spearman
  rank correlation with the trained model's map at or above ``RHO_MAX``, averaged over the images) does not
  explain the model, whatever its in-lung share says: the finding is marked untrustworthy.
- **ROAD** (Rong et al. 2022, pytorch-grad-cam's ``ROADCombined``): pixels are removed (noisy linear
  imputation) from most to least relevant and the other way round; the score is half the gap between the two
  confidence drops, positive when the map ranks the pixels the model really uses first, about 0 for a random
  map.
Computed per trial on the saliency images, next to the in-lung share (``saliency.trial_saliency``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from scipy import stats

RHO_MAX = 0.5  # mean rank correlation with the randomised model's maps at or above which a map fails
ROAD_PERCENTILES = (20, 40, 60, 80)
ROAD_IMAGES = 16  # images per trial for ROAD (each needs a sparse solve per percentile)


def randomised_top(model: torch.nn.Module, layer: str, seed: int = 0) -> torch.nn.Module:
    """A copy of ``model`` whose module ``layer`` and every module registered after it (the head) are
    re-initialised, seeded, without touching the global random state."""
    out = copy.deepcopy(model)
    names = [n for n, _ in out.named_modules()]
    start = names.index(layer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, module in out.named_modules():
            if names.index(name) >= start and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return out.eval()


def rank_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image: Spearman rank correlation of two maps (NaN when either map is constant)."""
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1), strict=True)):
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            out[i] = stats.spearmanr(x, y).statistic
    return out


def randomisation_test(maps: np.ndarray, saliency: Callable[[torch.nn.Module], np.ndarray],
                       model: torch.nn.Module, layer: str, seed: int = 0) -> np.ndarray:
    """Per image: the rank correlation of ``maps`` (the trained model's) with ``saliency(randomised model)``."""
    return rank_similarity(maps, saliency(randomised_top(model, layer, seed)))


def road(model: torch.nn.Module, x: torch.Tensor, maps: np.ndarray, classes: np.ndarray,
         percentiles=ROAD_PERCENTILES, seed: int = 0) -> np.ndarray:
    """Per image: ROAD combined score of ``maps`` for ``classes[i]`` (softmax confidence); NaN for empty maps.
    The imputer's noise is drawn from ``seed`` (in a forked RNG state, the caller's left as it was), so the same
    model and maps give the same scores."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    maps = np.nan_to_num(np.asarray(maps, np.float32))
    out = np.full(len(x), np.nan)
    valid = np.flatnonzero(maps.reshape(len(maps), -1).max(1) > 0)
    if len(valid):
        metric = ROADCombined(percentiles=list(percentiles))
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            torch.manual_seed(seed)
            scores = metric(x[valid], maps[valid], [ClassifierOutputSoftmaxTarget(int(c)) for c in classes[valid]],
                            model)
        out[valid] = np.asarray(scores, float).ravel()
    return out
