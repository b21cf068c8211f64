"""The typed joins between the stages: frozen trial specifications and their stable ids, the context a
driver hands a trial, the run-folder layout, and the protocol axes.

One ``TrialSpec`` describes one cell of a sweep. Its ``trial_id`` (a hash of
every field) is the Tune trial name, the W&B run id and the resume key, so a
finished cell is recognised again whatever order the sweep is built in.
Resources are deliberately *not* part of the spec: the same trial on another
cluster shape is the same trial. ``TrialContext`` is everything else a trial
gets from the driver; ``RunLayout`` / ``TrialDir`` name every path under ``--out``
(no other module joins run-folder path strings).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from cxrray.registry import UserError

if TYPE_CHECKING:  # the outcome carries polars frames; Core itself needs no polars
    import polars as pl

Optimizer = Literal["adam", "sgd"]
SelectBy = Literal["auroc", "loss"]
WandbMode = Literal["offline", "online", "disabled"]


def check_choice(owner: str, name: str, value: object, choices: Any) -> None:
    """Raise ``UserError`` naming the field when ``value`` is not one of a ``Literal``'s values."""
    valid = get_args(choices)
    if value not in valid:
        raise UserError(f"{owner}.{name} {value!r} is not valid; valid: {', '.join(map(str, valid))}")


@dataclass(frozen=True)
class TrainRecipe:
    """Optimisation settings of one trial (defaults: the demo on 2 CPU cores).

    Named study presets live in ``cxrray.training.recipes.RECIPES``.
    """

    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Optimizer = "adam"
    momentum: float = 0.9  # sgd only
    plateau_patience: int = 0  # >0: LR x plateau_factor after this many epochs without val-loss gain
    plateau_factor: float = 0.1
    early_stop: int = 0  # >0: stop after this many epochs without a new best by ``select_by`` (best weights kept)
    label_smoothing: float = 0.0
    class_weights: str = "frequency"  # frequency | none | fixed per-class weights, e.g. "1,1,4"
    grad_accum: int = 1  # optimizer step every k batches: keeps the effective batch when workers change
    augment: bool = True
    hflip: bool = False  # anatomically unrealistic; off as in Sadre et al.
    balanced: bool = False  # class-balanced batches (Poisson oversampling of rare classes)
    select_by: SelectBy = "auroc"  # best epoch by validation "auroc" (ties: loss) or by validation "loss"

    def __post_init__(self) -> None:
        """Every choice is checked here, so a bad recipe fails where it is written, not inside a Ray actor."""
        check_choice("TrainRecipe", "optimizer", self.optimizer, Optimizer)
        check_choice("TrainRecipe", "select_by", self.select_by, SelectBy)
        for name in ("epochs", "batch_size", "grad_accum"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"TrainRecipe.{name} must be a whole number >= 1, got {getattr(self, name)!r}")
        for name in ("plateau_patience", "early_stop"):
            if getattr(self, name) < 0:
                raise UserError(f"TrainRecipe.{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise UserError(f"TrainRecipe: lr must be > 0, weight_decay >= 0 and label_smoothing in [0, 1); got "
                            f"{self.lr}, {self.weight_decay}, {self.label_smoothing}")
        if not 0 < self.plateau_factor < 1:
            raise UserError(f"TrainRecipe.plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.class_weights not in ("frequency", "none"):
            try:
                fixed = [float(x) for x in self.class_weights.split(",")]
            except ValueError:
                fixed = []
            if not fixed or any(not w >= 0 for w in fixed):
                raise UserError(f"TrainRecipe.class_weights {self.class_weights!r} is not valid; valid: frequency, "
                                f"none, or non-negative weights per class such as '1,1,4'")


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
    mask_dilation: int = 0  # px the lung mask grows by before hiding (at image_size): the dilation axis

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
        dilated = f".d{self.mask_dilation}" if self.mask_dilation else ""
        backbone = self.backbone_label
        return f"{self.representation}{dilated}.{backbone}.{self.pretraining}{extra}{fold}.s{self.seed}{setting}"

    @property
    def backbone_label(self) -> str:
        """The backbone as a name part: a user's ``file:/path/usernet.py:build`` reads ``usernet-build`` (the
        full name stays the key)."""
        if not self.backbone.startswith("file:"):
            return self.backbone
        file, _, fn = self.backbone[len("file:"):].rpartition(":")
        return f"{Path(file).stem}-{fn}"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able), the inverse of ``from_dict``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialSpec:
        """Rebuild a spec; unknown keys are an error naming the key."""
        d = dict(d)
        recipe = d.pop("recipe", {}) or {}
        _check_keys(cls, d)
        _check_keys(TrainRecipe, recipe)
        return cls(**d, recipe=TrainRecipe(**recipe))

    def protocol_cell(self, search_axes: tuple[str, ...] = ()) -> str:
        """The spec with its hyper-parameter axes (searched recipe fields) blanked: every setting of one
        protocol cell shares it (ASHA's bracket, the analysis' selection on validation)."""
        recipe = {k: v for k, v in dataclasses.asdict(self.recipe).items() if k not in search_axes}
        return json.dumps({**self.to_dict(), "recipe": recipe, "setting": ""}, sort_keys=True, default=str)

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
            raise UserError(f"unknown {cls.__name__} field(s) {extra}; valid: {sorted(valid)}")


# The protocol axes, defined once. A study varies some of the CONDITION_AXES (its table's rows) and the backbone;
# seeds and folds are replicates of a cell, aggregated, never pooled; a cell is every axis but the replicates.
CONDITION_AXES = ("representation", "pretraining", "design", "task", "method")
REPLICATE_AXES = ("fold", "seed")
CELL_AXES = ("study", "representation", "backbone", "method", "task", "pretraining", "design")
# one protocol cell and replicate (at one mask dilation): its hyper-parameter settings compete
SELECTION_AXES = (*CONDITION_AXES, "backbone", *REPLICATE_AXES, "mask_dilation")


@dataclass(frozen=True)
class DataRef:
    """What a trial needs of its prepared dataset: where the shards are, the class weights, which splits exist."""

    data_id: str
    shard_dir: str
    class_weights: tuple[float, ...] = ()  # empty for multilabel tasks (unweighted BCE)
    splits: tuple[str, ...] = ("train", "val", "test")  # a pretraining phase may have no test split
    image_size: int = 0  # the shard set's image side in px (0: not stated)


@dataclass(frozen=True)
class TrialContext:
    """Everything the driver hands one trial, besides its resources: the spec, its data, where to write,
    how to log. Crosses process boundaries as ``to_dict`` / ``from_dict``."""

    spec: TrialSpec
    run_dir: str
    data: DataRef
    storage: str = ""  # Ray checkpoint storage (a shared path or cloud URI on a cluster)
    wandb: WandbMode = "offline"
    project: str = "cxrray"
    weights: str | None = None  # local ImageNet state-dict file for specs with ``pretrained``
    checkpoint_every_s: float = 30.0  # epoch checkpoints at most this often (and the first of each attempt)
    use_gpu: bool = False

    def __post_init__(self) -> None:
        check_choice("TrialContext", "wandb", self.wandb, WandbMode)
        if self.data.data_id != self.spec.data_id:
            raise ValueError(f"trial {self.spec.trial_id} reads data {self.spec.data_id}, given {self.data.data_id}")
        if self.data.image_size and self.data.image_size != self.spec.image_size:
            raise UserError(f"trial {self.spec.run_name} trains at {self.spec.image_size} px, but its shard set "
                            f"{self.data.data_id} holds {self.data.image_size} px images")

    @property
    def layout(self) -> RunLayout:
        return RunLayout(Path(self.run_dir))

    @property
    def trial_dir(self) -> TrialDir:
        return self.layout.trial(self.spec.trial_id)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialContext:
        d = dict(d)
        _check_keys(cls, d)
        fields = dict(d.pop("data"))
        _check_keys(DataRef, fields)
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        data = DataRef(**kwargs)
        return cls(spec=TrialSpec.from_dict(d.pop("spec")), data=data, **d)


PREDICTIONS = "predictions.parquet"


@dataclass(frozen=True)
class TrialDir:
    """The files of one trial: ``<run>/trials/<trial_id>/``."""

    path: Path

    predictions = property(lambda self: self.path / PREDICTIONS)  # written last, atomically: the trial is done
    meta = property(lambda self: self.path / "trial.json")  # spec, selection, scores, training seconds
    model = property(lambda self: self.path / "model.pt")  # best-on-validation weights (standard fits)
    resume = property(lambda self: self.path / "resume.pt")  # an inline trial's epoch checkpoint
    attempts = property(lambda self: self.path / "attempts.log")  # one line per (re)start
    stopped = property(lambda self: self.path / "stopped.json")  # ASHA stopped this setting (never retrained)
    error = property(lambda self: self.path / "error.txt")  # the last failure's traceback
    wandb = property(lambda self: self.path / "wandb")
    wandb_step = property(lambda self: self.path / "wandb_step")  # the last epoch the W&B history holds

    def file(self, name: str) -> Path:
        """A method's own weights file (``fucitnet.pt``) or other per-trial output."""
        return self.path / name

    def train_rows(self, rank: int) -> Path:
        """The manifest rows one worker trained on in the first epoch of an attempt (an audit trail)."""
        return self.path / f"train_rows.rank{rank}.txt"

    @property
    def done(self) -> bool:
        return bool(self.predictions.exists())

    @property
    def finished(self) -> bool:
        """Done for good: predictions written, or stopped early by ASHA (never trained again)."""
        return self.done or self.stopped.exists()


@dataclass(frozen=True)
class RunLayout:
    """Every path under a run directory (``--out``); callers ask it, nobody joins path strings."""

    root: Path
    analysis_dir: str = "analysis"  # "analysis.partial" while a re-analysis is written (``staging``)

    trials = property(lambda self: self.root / "trials")
    analysis = property(lambda self: self.root / self.analysis_dir)
    report = property(lambda self: self.root / "report.html")
    predictions = property(lambda self: self.root / PREDICTIONS)  # every finished trial's, gathered
    results = property(lambda self: self.root / "results.parquet")  # one row per trial: spec, status, scores
    tmp = property(lambda self: self.root / "tmp")  # TMPDIR of Ray workers (W&B leaves folders there)
    ray = property(lambda self: self.root / "ray")  # default Ray storage (checkpoints, Tune state)
    study_file = property(lambda self: self.root / "study.yaml")  # the effective study: --config reproduces the run
    provenance = property(lambda self: self.root / "provenance.json")  # every invocation: command, versions, date
    workspace = property(lambda self: self.root / "wandb_workspace.json")  # the W&B dashboard, as code
    lock = property(lambda self: self.root / ".cxrray.lock")  # one writer per run directory (cxrray/runlock.py)
    lock_holder = property(lambda self: self.root / ".cxrray.lock.json")  # who holds it: pid, host, start time

    def trial(self, trial_id: str) -> TrialDir:
        return TrialDir(self.root / "trials" / trial_id)

    shards_root = property(lambda self: self.root / "shards")  # every shard set, and ingests in progress

    def shards(self, data_id: str, image_size: int) -> Path:
        """The shard set of one prepared dataset at one image size (cached, reused by every trial)."""
        return Path(self.shards_root) / f"{data_id}-{image_size}px"

    def shards_of(self, spec: TrialSpec) -> Path:
        return self.shards(spec.data_id, spec.image_size)

    def staging(self) -> RunLayout:
        """The layout a re-analysis writes into (``analysis.partial/``), swapped in whole by ``swap_analysis``: an
        interrupted analysis never leaves the run without its previous ``analysis/``."""
        return RunLayout(self.root, "analysis.partial")

    def swap_analysis(self) -> RunLayout:
        """Put the staged ``analysis.partial/`` in the place of ``analysis/`` (the old one is removed after the
        rename); returns the final layout."""
        import shutil

        final, staged, old = self.root / "analysis", self.root / "analysis.partial", self.root / "analysis.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        staged.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return RunLayout(self.root)

    def analysis_cache(self, step: str) -> Path:
        """``cache/analysis/<step>/``: a model-based step's per-trial results, kept across re-analyses."""
        return self.root / "cache" / "analysis" / step

    def analysis_file(self, name: str) -> Path:
        """``analysis/<name>`` (a table, a figure, a sub-folder of per-trial tables)."""
        return Path(self.analysis) / name

    def splits(self, name: str = "") -> Path:
        return self.root / (f"splits-{name}.csv" if name else "splits.csv")

    def quarantine(self, name: str = "") -> Path:
        return self.root / (f"quarantine-{name}.csv" if name else "quarantine.csv")

    def data(self, key: str) -> Path:
        """A generated dataset (phantom) of the run: ``data/<key>/manifest.csv`` lives there."""
        return self.root / "data" / key


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep leaves: trial ids by status, and the gathered results table."""

    finished: list[str]  # trial ids with predictions
    failed: list[str]
    skipped: list[str]  # already finished before this run
    results: pl.DataFrame  # the gathered predictions stay in the run folder (``RunLayout.predictions``)
    stopped: tuple[str, ...] = ()  # hyper-parameter settings ASHA stopped early (no predictions, not failures)
