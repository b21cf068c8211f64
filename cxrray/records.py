"""What a finished trial hands the stages after it: one frozen record, written and read only through this class.

``TrialRecord`` is ``trials/<id>/trial.json``: the spec, how the model was initialised, the epoch kept (chosen on
validation), its validation scores, the test scores, the training time and every epoch's loss, why the model is
degenerate (or ""), the node it ran on, and what a training method adds of its own (``method``: FuCiTNet's first
stage). The trial writes it (``training.outputs``); the sweep's results table (``results_row``), the analysis and
the model loader read it. A file of an older build, with keys this record does not know, keeps them under
``method``; a file whose trial id does not match its spec is refused.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrray.config import TrialDir, TrialSpec
from cxrray.registry import UserError

DERIVED = ("trial_id", "run_name")  # written for a reader of the file, derived from the spec on reading


@dataclass(frozen=True)
class ShortEncoding:
    """What a ShorT trial (``--methods short_<attribute>``) ends with: the attribute, the gradient factor of its
    head, and how well the backbone's penultimate features encode it (a probe's test AUROC; NaN when the test
    split lacks a group). Validated on read: the analysis reads typed fields, never a dict by key."""

    attribute: str
    factor: float
    encoding_auroc: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShortEncoding:
        try:
            out = cls(str(d["attribute"]), float(d["factor"]), float(d["encoding_auroc"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"trial.json: ShorT's encoding {dict(d)!r} is not readable ({exc!r})") from None
        auroc = out.encoding_auroc
        if not out.attribute or not -1.0 <= out.factor <= 1.0 or not (auroc != auroc or 0.0 <= auroc <= 1.0):
            raise UserError(f"trial.json: ShorT's encoding {dict(d)!r} is out of range (attribute named, factor in "
                            f"[-1, 1], encoding AUROC in [0, 1] or NaN)")
        return out


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial (``trial.json``)."""

    spec: TrialSpec
    init: str  # "random", "imagenet", or the trial id it started from
    best_epoch: int
    best_val_auroc: float
    metrics: Mapping[str, float] = field(default_factory=dict)  # test scores of the kept model
    best_val: Mapping[str, float] = field(default_factory=dict)  # validation scores of the kept epoch
    train_s: float = 0.0
    train_loss: tuple[float, ...] = ()  # every epoch's, across attempts
    degenerate: str = ""  # why the model did not learn ("" when it did)
    node_id: str = ""
    finished: float = 0.0  # Unix time the outputs were written
    method: Mapping[str, Any] = field(default_factory=dict)  # what a training method adds of its own
    short: ShortEncoding | None = None  # a ShorT trial's attribute, factor and encoding

    @property
    def trial_id(self) -> str:
        return self.spec.trial_id

    @property
    def run_name(self) -> str:
        return self.spec.run_name

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out = out | {"spec": self.spec.to_dict(), "train_loss": list(self.train_loss), "metrics": dict(self.metrics),
                     "best_val": dict(self.best_val), "method": dict(self.method),
                     "short": dataclasses.asdict(self.short) if self.short else None}
        return {"trial_id": self.trial_id, "run_name": self.run_name} | out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRecord:
        """The record of a ``to_dict`` (or of an older ``trial.json``: unknown keys go under ``method``)."""
        spec = TrialSpec.from_dict(d["spec"])
        if "trial_id" in d and d["trial_id"] != spec.trial_id:
            raise UserError(f"trial.json says trial {d['trial_id']} but its spec is trial {spec.trial_id}")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in d.items() if k not in known and k not in DERIVED}
        kw = {k: v for k, v in d.items() if k in known and k not in ("spec", "method", "short")}
        kw["train_loss"] = tuple(float(x) for x in kw.get("train_loss", ()))
        method = dict(d.get("method", {})) | extra
        short = d.get("short") or method.pop("short", None)  # (an older file kept it under ``method``)
        return cls(spec=spec, method=method, short=ShortEncoding.from_dict(short) if short else None, **kw)

    @classmethod
    def from_meta(cls, spec: TrialSpec, meta: Mapping[str, Any], metrics: Mapping[str, float],
                  finished: float) -> TrialRecord:
        """Build the record from what a training method's ``finish`` and the worker said (``meta``)."""
        return cls.from_dict({"spec": spec.to_dict(), **meta, "metrics": dict(metrics), "finished": finished})

    def write(self, trial_dir: TrialDir) -> None:
        trial_dir.meta.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def read(cls, trial_dir: TrialDir) -> TrialRecord:
        return cls.read_file(trial_dir.meta)

    @classmethod
    def read_file(cls, path: Path) -> TrialRecord:
        return cls.from_dict(json.loads(path.read_text()))

    def results_row(self) -> dict[str, Any]:
        """The trial's row of ``results.parquet``: spec fields, status, training facts, test scores."""
        losses = [x for x in self.train_loss if x == x]
        return self.spec.flat() | {
            "trial_id": self.trial_id, "run_name": self.run_name, "status": "finished", "init": self.init,
            "best_epoch": self.best_epoch, "best_val_auroc": self.best_val_auroc, "degenerate": self.degenerate,
            "node_id": self.node_id, "train_loss_min": min(losses) if losses else None} | dict(self.metrics)


@dataclass(frozen=True)
class StoppedRecord:
    """A hyper-parameter setting ASHA stopped early (``trials/<id>/stopped.json``): done for good, never retrained,
    not a failure; the metrics of its last epoch."""

    spec: TrialSpec
    epochs_done: int
    best_val_auroc: float | None = None
    val_auroc: float | None = None
    val_loss: float | None = None
    stopped: float = 0.0  # Unix time of the stop

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.spec.trial_id, "run_name": self.spec.run_name, "spec": self.spec.to_dict(),
                "epochs_done": self.epochs_done, "best_val_auroc": self.best_val_auroc, "val_auroc": self.val_auroc,
                "val_loss": self.val_loss, "stopped": self.stopped}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StoppedRecord:
        known = {f.name for f in dataclasses.fields(cls)} - {"spec"}
        return cls(spec=TrialSpec.from_dict(d["spec"]), **{k: v for k, v in d.items() if k in known})

    def write(self, trial_dir: TrialDir) -> None:
        trial_dir.path.mkdir(parents=True, exist_ok=True)
        trial_dir.stopped.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def read(cls, trial_dir: TrialDir) -> StoppedRecord:
        return cls.from_dict(json.loads(trial_dir.stopped.read_text()))

    def results_row(self) -> dict[str, Any]:
        """The setting's row of ``results.parquet``."""
        return self.spec.flat() | {"trial_id": self.spec.trial_id, "run_name": self.spec.run_name,
                                   "status": f"stopped by ASHA after epoch {self.epochs_done}",
                                   "best_val_auroc": self.best_val_auroc}
