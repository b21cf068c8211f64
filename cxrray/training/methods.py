"""Training methods (``TrialSpec.method``) as a registry of small classes, and what every method shares.

A method is a ``TrialMethod``: capability flags the studies ask before Ray starts (several workers per
trial? ASHA? which task kinds?), a ``validate(spec)`` hook, and ``build(ctx, session)`` returning a
``Trial`` that the generic driver (``worker.run_trial``) runs epoch by epoch: ``load`` a checkpoint,
``epoch``, ``state``, ``finish``. The driver owns the epoch loop, the W&B run, the checkpoint cadence and
the outputs, so a new method is one file with one class and its registration
(``@METHODS.register("name")`` on an instance), imported by ``cxrray/training/__init__.py``.

Registered: ``standard`` (one supervised fit of the backbone, ``standard.py``), ``fucitnet`` (the
class-inherent transformations of FuCiTNet / COVID-SDNet, ``fucitnet_trial.py``) and the family
``short_<attribute>_<factor>`` (shortcut testing, ``short.py``; ``METHOD_FAMILIES``). Shared helpers: the
seeded per-epoch generator, the shuffled training stream, the best-on-validation state and the
val/test prediction loop. No Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import polars as pl
import torch
from torch import nn

from cxrray.config import TrialContext, TrialDir, TrialSpec
from cxrray.data.tasks import TASKS
from cxrray.registry import Registry, UserError
from cxrray.representations import InputPipeline
from cxrray.training.heads import Head
from cxrray.training.loop import evaluate, predict
from cxrray.training.outputs import predictions_frame, selection_key
from cxrray.training.session import Session


@dataclass
class TrialResult:
    """What a trial hands the driver at the end (rank 0): per-split prediction frames, scores, weights files
    (name -> state dict) and metadata for ``trial.json``."""

    frames: list[pl.DataFrame]
    scores: dict[str, float]
    weights: dict[str, Any]
    meta: dict[str, Any]


class Trial(Protocol):
    """One trial of a method, built for a context and a session."""

    epochs: int  # epochs to run in all (every stage)
    config: dict[str, Any]  # what the W&B run records besides the spec (init, method settings)

    def load(self, state: dict[str, Any]) -> int:
        """Restore a checkpoint; returns the first epoch still to run."""

    def epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch and validate; returns its metrics (``stopped`` True ends the loop early)."""

    def state(self, epoch: int) -> dict[str, Any]:
        """The checkpoint after ``epoch``."""

    def finish(self) -> TrialResult:
        """Best-on-validation weights restored; predictions for val and test (rank 0 only)."""


class TrialMethod:
    """A registered training method. Subclasses set the capability flags and implement ``build``."""

    multi_worker: ClassVar[bool] = True  # can train as a multi-worker (DDP) Ray Train fit
    asha: ClassVar[bool] = True  # reports one comparable validation metric per epoch of one fit
    task_kinds: ClassVar[frozenset[str]] = frozenset({"single", "hierarchical", "multilabel"})

    name: str = ""

    def validate(self, spec: TrialSpec) -> None:
        """Raise ``UserError`` when this method cannot train ``spec`` (checked before Ray starts)."""
        kind = TASKS.get(spec.task).kind
        if kind not in self.task_kinds:
            words = {"single": "single-label", "hierarchical": "hierarchical", "multilabel": "multilabel"}
            raise UserError(f"method {self.name} needs a {' or '.join(words[k] for k in sorted(self.task_kinds))} "
                            f"task; {spec.task} is {words[kind]}")

    def check_resources(self, num_workers: int, asha: bool) -> None:
        """Raise ``UserError`` when the sweep's resources or scheduler ask what this method cannot do."""
        if num_workers > 1 and not self.multi_worker:
            raise UserError(f"method {self.name} trains on one worker per trial; got --num-workers {num_workers}")
        if asha and not self.asha:
            raise UserError(f"--asha compares settings epoch by epoch of one fit; method {self.name} cannot be "
                            f"judged that way")

    def cannot_estimate(self, rows: pl.DataFrame) -> str:
        """Why this method cannot be estimated on the manifest's ``rows`` ('' when it can): checked before Ray
        starts, so no trial trains for a table that would never be written."""
        return ""

    def build(self, ctx: TrialContext, session: Session) -> Trial:
        raise NotImplementedError


METHODS: Registry[TrialMethod] = Registry("method")
# A family name -> its registered variants (``--methods short_sex`` is every factor of ShorT on sex)
METHOD_FAMILIES: dict[str, tuple[str, ...]] = {}


def expand_methods(names: Iterable[str]) -> tuple[str, ...]:
    """The method names of a sweep axis, each family name replaced by its variants (in order, once each)."""
    out: list[str] = []
    for name in names:
        for m in METHOD_FAMILIES.get(name, (name,)):
            if m not in out:
                out.append(m)
    return tuple(out)


def register(name: str, *args: Any, **kwargs: Any) -> Callable[[type[TrialMethod]], type[TrialMethod]]:
    """Class decorator: register ``cls(*args, **kwargs)`` under ``name``. A variant with other settings is one
    more registration of the same class (``register("fucitnet_l1", FuCiTConfig(lam=0.1))(FuCiTNet)``)."""

    def deco(cls: type[TrialMethod]) -> type[TrialMethod]:
        method = cls(*args, **kwargs)
        method.name = name
        METHODS.register(name)(method)
        return cls

    return deco


def check_methods(specs: list[TrialSpec], num_workers: int = 1, asha: bool = False) -> None:
    """Every spec's method exists, can train its task, and fits the sweep's resources (before Ray starts)."""
    for spec in specs:
        method = METHODS.get(spec.method)
        method.validate(spec)
        method.check_resources(num_workers, asha)


@dataclass
class Best:
    """The best-on-validation epoch so far: its validation metrics and a copy of the weights worth keeping."""

    epoch: int = -1
    val: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] | None = None

    @property
    def kept(self) -> dict[str, Any]:
        """The kept weights (after the first epoch was offered)."""
        if self.state is None:
            raise RuntimeError("no epoch has been offered yet")
        return self.state

    def offer(self, epoch: int, val: dict[str, float], select_by: str, state: Callable[[], dict[str, Any]]) -> bool:
        """Keep this epoch when it beats the best so far by ``select_by`` (the first epoch always)."""
        if self.epoch >= 0 and selection_key(val, select_by) <= selection_key(self.val, select_by):
            return False
        self.epoch, self.val, self.state = epoch, dict(val), state()
        return True

    def to_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "val": self.val, "state": self.state}

    @classmethod
    def from_state(cls, d: dict[str, Any] | None) -> Best:
        if not d:
            return cls()
        if "val" not in d:  # a checkpoint written before Best existed: {val_auroc, val_loss, epoch, state}
            return cls(d["epoch"], {"auroc": d["val_auroc"], "loss": d["val_loss"]}, d["state"])
        return cls(d["epoch"], d["val"], d["state"])


def copy_state(model: nn.Module) -> Callable[[], dict[str, Any]]:
    """A deferred deep copy of a module's weights (taken only when an epoch is kept)."""
    return lambda: {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, nn.Module) else model


def epoch_seed(spec: TrialSpec, rank: int, epoch: int) -> int:
    """The seed of one epoch on one worker (a resumed trial draws exactly what an uninterrupted one would)."""
    return spec.seed * 1_000_003 + rank * 7919 + epoch


def epoch_generator(spec: TrialSpec, rank: int, epoch: int) -> torch.Generator:
    """The augmentation / rebalancing generator of one epoch on one worker."""
    return torch.Generator().manual_seed(epoch_seed(spec, rank, epoch))


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """torch's global RNG (dropout, stochastic depth, a layer's default init) seeded for a block and restored
    after it: what a trial draws depends on its spec only, not on the trials a reused actor ran before it, and
    the caller's RNG is left as it was. The stream is offset from ``epoch_generator``'s, so dropout and
    augmentation do not draw the same numbers."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 0x5EED)
        yield


def train_batches(session: Session, spec: TrialSpec, epoch: int, audit: TrialDir | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of this worker's training split, shuffled with a seed per epoch. A last batch of one image is
    left out: BatchNorm cannot normalise a batch of one (the split's size decides when it happens; the shuffle
    puts that image into a full batch in another epoch). ``audit``: also write the manifest rows it held to
    ``train_rows.rank<r>.txt`` (which rows trained this model, per worker)."""
    r = spec.recipe
    batches = session.dataset("train").iter_batches(batch_size=r.batch_size, batch_format="numpy",
                                                    local_shuffle_buffer_size=4 * r.batch_size,
                                                    local_shuffle_seed=spec.seed + epoch)
    batches = (b for b in batches if len(b["row"]) > 1)
    return _recording(batches, audit.train_rows(session.rank)) if audit is not None else batches


def _recording(batches, path) -> Iterator[dict[str, np.ndarray]]:
    rows: list[int] = []
    for b in batches:
        rows.extend(int(x) for x in b["row"])
        yield b
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(map(str, rows)) + "\n")


def validate_split(model: nn.Module, session: Session, pipe: InputPipeline, head: Head, amp: bool = False,
                   batch_size: int = 128) -> dict[str, float]:
    """Accuracy, loss and AUROC on the validation split (selection, plateau, early stop use nothing else)."""
    batches = session.dataset("val").iter_batches(batch_size=batch_size, batch_format="numpy")
    return evaluate(predict(model, batches, pipe, head, session.device, amp=amp), head)


def predict_splits(model: nn.Module, session: Session, pipe: InputPipeline, head: Head, spec: TrialSpec,
                   splits: tuple[str, ...], batch_size: int = 128) -> tuple[list[pl.DataFrame], dict[str, float]]:
    """The final per-image predictions of val and test (the test split is read here, once), and their scores.
    A pretraining phase may have no test split."""
    frames: list[pl.DataFrame] = []
    scores: dict[str, float] = {}
    for split in (s for s in ("val", "test") if s in splits):
        batches = session.dataset(split).iter_batches(batch_size=batch_size, batch_format="numpy")
        pred = predict(model, batches, pipe, head, session.device)
        frames.append(predictions_frame(pred, spec, split))
        scores |= {f"{split}_{k}": v for k, v in evaluate(pred).items()}
    return frames, scores
