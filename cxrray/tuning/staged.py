"""Staged pretraining (Fricks et al. 2021) as a graph of phases.

A path is a chain of phases ending in the target task (PROTOCOLS.md section 4):

======  =========================  ===================  ========
path    phase 1: ChestX-ray14       phase 2: pneumonia   phase 3
======  =========================  ===================  ========
a       yes                        high prevalence      target
b       yes                        low prevalence       target
c       yes                        none                 target
d       no (ImageNet)              high prevalence      target
e       no (ImageNet)              low prevalence       target
f       no (ImageNet)              none                 target
======  =========================  ===================  ========

Every phase is itself a ``TrialSpec``, whose ``init_from`` is the trial id of
the phase before it, so identical upstream chains hash to one id: path a and b
share one phase-1 trial, and every seed of a path shares its upstream
checkpoints (upstream phases train once, with ``upstream_seed``). Each phase
replaces the head (``build_backbone(..., replace_head=True)``). The specs come
out in waves: a wave only needs checkpoints of the waves before it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cxrray.config import TrainRecipe, TrialSpec
from cxrray.registry import Registry
from cxrray.training.recipes import RECIPES


@dataclass(frozen=True)
class Phase:
    """One pretraining phase: which dataset (a key of the study's data), which task, which recipe."""

    name: str
    dataset: str
    task: str
    recipe: str
    fractions: tuple[float, ...]  # patient-level split of its dataset


PHASES: Registry[Phase] = Registry("phase")
for _p in (Phase("nih14", "nih14", "NIH14", "staged", (0.7, 0.1, 0.2)),
           Phase("pneu_high", "pneu_high", "PNEU", "staged_phase2", (0.8, 0.2)),
           Phase("pneu_low", "pneu_low", "PNEU", "staged_phase2", (0.8, 0.2))):
    PHASES.register(_p.name)(_p)

PATHS: Registry[tuple[str, ...]] = Registry("pretraining path")
for _name, _chain in {"a": ("nih14", "pneu_high"), "b": ("nih14", "pneu_low"), "c": ("nih14",),
                      "d": ("pneu_high",), "e": ("pneu_low",), "f": ()}.items():
    PATHS.register(_name)(_chain)

TARGET_FRACTIONS = (0.6, 0.2, 0.2)  # phase 3: patient-level stratified 60/20/20


def datasets_needed(paths: Sequence[str]) -> list[str]:
    """Dataset keys the given paths read (besides ``target``), in phase order."""
    return sorted({PHASES.get(p).dataset for name in paths for p in PATHS.get(name)},
                  key=lambda d: ("nih14", "pneu_high", "pneu_low").index(d))


def staged_specs(*, data_ids: Mapping[str, str], paths: Sequence[str] = tuple("abcdef"),
                 backbones: Sequence[str] = ("densenet121",),
                 representation: str = "original", task: str = "CL2", seeds: Sequence[int] = (0,),
                 upstream_seed: int = 0, image_size: int = 224, pretrained: bool = True,
                 recipes: Mapping[str, TrainRecipe] | None = None, study: str = "staged") -> list[list[TrialSpec]]:
    """Waves of specs: wave k holds the distinct phase-k trials (the last wave: the target trials).

    ``data_ids``: dataset key (``nih14``, ``pneu_high``, ``pneu_low``, ``target``) -> data id.
    ``recipes``: a recipe per phase name and ``target`` (default: the study's presets;
    the target uses ``staged_phase3``). Pretrained (ImageNet) weights start every chain.
    """
    recipes = dict(recipes or {})
    waves: list[dict[str, TrialSpec]] = []
    for backbone, name, seed in itertools.product(backbones, paths, seeds):
        chain, prev, label = PATHS.get(name), "", []
        for depth, phase_name in enumerate(chain):
            phase = PHASES.get(phase_name)
            label.append(phase.name)
            spec = TrialSpec(study=study, data_id=data_ids[phase.dataset], representation=representation,
                             backbone=backbone, task=phase.task, pretraining=">".join(label), seed=upstream_seed,
                             image_size=image_size, pretrained=pretrained,
                             recipe=recipes.get(phase.name, RECIPES.get(phase.recipe)), init_from=prev)
            _wave(waves, depth)[spec.trial_id] = spec
            prev = spec.trial_id
        target = TrialSpec(study=study, data_id=data_ids["target"], representation=representation,
                           backbone=backbone, task=task, pretraining=name, seed=seed, image_size=image_size,
                           pretrained=pretrained, recipe=recipes.get("target", RECIPES.get("staged_phase3")),
                           init_from=prev)
        _wave(waves, len(chain))[target.trial_id] = target
    # Targets of short paths (c, f) sit in early waves; they need nothing later, so that is fine.
    return [list(w.values()) for w in waves if w]


def _wave(waves: list[dict[str, TrialSpec]], depth: int) -> dict[str, TrialSpec]:
    while len(waves) <= depth:
        waves.append({})
    return waves[depth]
