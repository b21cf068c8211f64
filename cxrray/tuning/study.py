"""Study definitions: a study is a list of ``TrialSpec`` from registry names.

The sweep is ``itertools.product`` over the protocol axes; nothing else
decides which cells exist, so a reviewer can read the whole design here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from cxrray.config import TrainRecipe, TrialSpec
from cxrray.data.tasks import TASKS
from cxrray.models import BACKBONES
from cxrray.representations import REPRESENTATIONS

HIDE_SEEK_REPRESENTATIONS = ("original", "lungs_isolated", "lungs_removed", "lungs_framed", "lungs_boxed_out")


@dataclass(frozen=True)
class Resources:
    """What each trial asks of the cluster (not part of a trial's identity)."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    max_concurrent_trials: int = 1
    max_failures: int = 1  # retries of a failing trial, from its last checkpoint


def hide_seek_specs(*, data_id: str, representations: Sequence[str] = HIDE_SEEK_REPRESENTATIONS,
                    backbones: Sequence[str] = ("basecnn", "resnet18"), seeds: Sequence[int] = (0,),
                    task: str = "CL2", image_size: int = 64, pretrained: bool = False,
                    recipe: TrainRecipe = TrainRecipe(), study: str = "hide_seek") -> list[TrialSpec]:
    """Representation x backbone x seed (Sadre et al.); every name is checked against its registry."""
    for name in representations:
        REPRESENTATIONS.get(name)
    for name in backbones:
        bdef = BACKBONES.get(name)
        if image_size < bdef.min_size:
            raise ValueError(f"backbone {name!r} needs --image-size >= {bdef.min_size}, got {image_size}")
    if TASKS.get(task).multilabel:
        raise ValueError(f"task {task!r} is multilabel; the hide-and-seek study trains single-label tasks "
                         f"({[t for t in TASKS.names() if not TASKS.get(t).multilabel]})")
    return [
        TrialSpec(study=study, data_id=data_id, representation=rep, backbone=bb, task=task, seed=seed,
                  image_size=image_size, pretrained=pretrained, recipe=recipe)
        for rep, bb, seed in itertools.product(representations, backbones, seeds)
    ]
