"""Optimisation recipes of the five studies as named presets (PROTOCOLS.md).

Where a study leaves a value open (patience, smoothing), the preset says what
cxrray picked. A study preset is a ``TrainRecipe``; a sweep can override any field.
"""

from __future__ import annotations

import dataclasses

from cxrray.config import TrainRecipe
from cxrray.registry import Registry

RECIPES: Registry[TrainRecipe] = Registry("recipe")


def _add(name: str, recipe: TrainRecipe) -> None:
    RECIPES.register(name)(recipe)


# CPU demo: 8 epochs at Adam 1e-3, so that the small models learn the phantom in minutes (at 4, BaseCNN
# often sat at chance loss: a degenerate trial).
_add("demo", TrainRecipe(epochs=8))
# Sadre et al. (hide and seek): Adam 1e-4, batch 32, 20 epochs, CE with class weights 1,1,4
# (normal, pneumonia, COVID-19 -> task CL3), no horizontal flip.
_add("hide_seek", TrainRecipe(epochs=20, batch_size=32, lr=1e-4, class_weights="1,1,4"))
# Fricks et al. (staged pretraining), phase 1: SGD momentum 0.9, lr 0.01, wd 1e-4, LR/10 after 3
# epochs without val-loss gain, early stop after 10 restoring the best weights; unweighted BCE.
# Selection and early stopping by validation loss. Phase 2 (pneumonia) lr 1e-3, phase 3 (COVID-19) lr 5e-4.
_STAGED = TrainRecipe(epochs=100, batch_size=32, lr=0.01, weight_decay=1e-4, optimizer="sgd", momentum=0.9,
                      plateau_patience=3, plateau_factor=0.1, early_stop=10, class_weights="none", hflip=True,
                      select_by="loss")
_add("staged", _STAGED)
_add("staged_phase2", dataclasses.replace(_STAGED, lr=1e-3))
_add("staged_phase3", dataclasses.replace(_STAGED, lr=5e-4))
# Hasan et al. (CVR-Net): Adam 1e-4 (0.9, 0.999), reduce on plateau, early stop, weights from class frequencies.
# Patience values are not given; cxrray uses 5 and 15.
_add("cvrnet", TrainRecipe(epochs=100, batch_size=32, lr=1e-4, plateau_patience=5, early_stop=15,
                           class_weights="frequency", hflip=True))
# Tabik et al. (COVID-SDNet): SGD, batch 16 (lr and momentum not given; 1e-3 and 0.9 here).
_add("covid_sdnet", TrainRecipe(epochs=30, batch_size=16, lr=1e-3, optimizer="sgd", momentum=0.9,
                                class_weights="none"))
# Haghanifar et al. (COVID-CXNet): Adam ~1e-4 (LR range test), batch 16, label smoothing (0.1 here).
_add("covid_cxnet", TrainRecipe(epochs=30, batch_size=16, lr=1e-4, label_smoothing=0.1))
# Wang et al. (COVID-Net): Adam 2e-4, batch 8, 10 epochs, class weights 1,1,4 (normal, pneumonia, COVID-19)
# and COVID-19 batch re-balancing (sampler-balanced batches here); use with the top_crop representation.
_add("covidnet", TrainRecipe(epochs=10, batch_size=8, lr=2e-4, class_weights="1,1,4", balanced=True))
# Afshar et al. (COVID-CAPS): Adam 1e-3, batch 16, 100 epochs, margin loss weighted for the rarer positives.
_add("covid_caps", TrainRecipe(epochs=100, batch_size=16, lr=1e-3))


def resolve_class_weights(recipe: TrainRecipe, frequency_weights: list[float]) -> list[float] | None:
    """The per-class loss weights a recipe asks for (None = unweighted)."""
    if recipe.class_weights == "none":
        return None
    if recipe.class_weights == "frequency":
        return frequency_weights
    fixed = [float(x) for x in recipe.class_weights.split(",")]
    if len(fixed) != len(frequency_weights):
        raise ValueError(f"class_weights {recipe.class_weights!r} has {len(fixed)} values for "
                         f"{len(frequency_weights)} classes")
    return fixed
