"""Frozen, typed trial specifications and their stable ids.

One ``TrialSpec`` describes one cell of a sweep. Its ``trial_id`` (a hash of
every field) is the Tune trial name, the W&B run id and the resume key, so a
finished cell is recognised again whatever order the sweep is built in.
Resources are deliberately *not* part of the spec: the same trial on another
cluster shape is the same trial.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainRecipe:
    """Optimisation settings of one trial (defaults: the demo on 2 CPU cores).

    Named study presets live in ``cxrray.training.recipes.RECIPES``.
    """

    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.9  # sgd only
    plateau_patience: int = 0  # >0: LR x plateau_factor after this many epochs without val-loss gain
    plateau_factor: float = 0.1
    early_stop: int = 0  # >0: stop after this many epochs without val-loss gain (best weights kept)
    label_smoothing: float = 0.0
    class_weights: str = "frequency"  # frequency | none | fixed per-class weights, e.g. "1,1,4"
    grad_accum: int = 1  # optimizer step every k batches: keeps the effective batch when workers change
    augment: bool = True
    hflip: bool = False  # anatomically unrealistic; off as in Sadre et al.
    balanced: bool = False  # class-balanced batches (Poisson oversampling of rare classes)
    select_by: str = "auroc"  # best epoch by validation "auroc" (ties: loss) or by validation "loss"


@dataclass(frozen=True)
class TrialSpec:
    """Everything that defines one trial's result (and nothing that does not)."""

    study: str
    data_id: str  # fingerprint of the manifest + split the trial reads
    representation: str
    backbone: str
    task: str = "CL2"
    pretraining: str = "none"
    design: str = "random"
    seed: int = 0
    image_size: int = 64
    pretrained: bool = False
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    init_from: str = ""  # trial id of the pretraining stage whose weights (not head) start this one
    fold: int = 0  # cross-validation fold (repeat * k + fold) the data_id was split for
    setting: str = ""  # the hyper-parameter setting of a --search sweep, e.g. "lr=0.001", for names only
    method: str = "standard"  # how the trial trains (cxrray.training.methods): "standard" fit or "fucitnet"

    @property
    def trial_id(self) -> str:
        """Stable 12-hex-digit hash of every field that differs from its default: trial name, W&B id,
        resume key. Leaving defaults out keeps every existing id when a later version adds a field."""
        blob = json.dumps(_non_default(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def run_name(self) -> str:
        """Readable name, e.g. ``lungs_removed.resnet18.none.s0``; design, task and fold join it when
        they are not the defaults (``original.resnet18.none.single.CL3.f2.s0``), so does a training method other than
        the standard fit (``seg_crop.covid_sdnet.none.single.fucitnet.s0``), a searched setting ends it
        (``original.resnet18.none.s0.lr=0.001``)."""
        extra = "".join(f".{v}" for v, d in ((self.design, "random"), (self.task, "CL2"), (self.method, "standard"))
                        if v != d)
        fold = f".f{self.fold}" if self.fold else ""
        setting = f".{self.setting}" if self.setting else ""
        return f"{self.representation}.{self.backbone}.{self.pretraining}{extra}{fold}.s{self.seed}{setting}"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able), the inverse of ``from_dict``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialSpec":
        """Rebuild a spec; unknown keys are an error naming the key."""
        d = dict(d)
        recipe = d.pop("recipe", {}) or {}
        _check_keys(cls, d)
        _check_keys(TrainRecipe, recipe)
        return cls(**d, recipe=TrainRecipe(**recipe))

    def flat(self) -> dict[str, Any]:
        """One flat row (``recipe.*`` prefixed) for results tables."""
        out = {k: v for k, v in self.to_dict().items() if k != "recipe"}
        out.update({f"recipe.{k}": v for k, v in dataclasses.asdict(self.recipe).items()})
        return out


def _non_default(obj: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _non_default(value)
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if value != default:
            out[f.name] = value
    return out


def _check_keys(cls: type, d: dict[str, Any]) -> None:
    valid = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(d) - valid)
    if extra:
        raise ValueError(f"unknown {cls.__name__} field(s) {extra}; valid: {sorted(valid)}")
