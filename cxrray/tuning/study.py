"""Study definitions: a study is a list of ``TrialSpec`` from registry names.

The sweep is ``itertools.product`` over the protocol axes; nothing else
decides which cells exist, so a reviewer can read the whole design here.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from cxrray.config import TrainRecipe, TrialSpec, WandbMode
from cxrray.data.designs import DESIGNS, DesignError, leave_out_sources
from cxrray.data.splits import kfold_splits
from cxrray.data.tasks import TASKS
from cxrray.models import BACKBONES
from cxrray.registry import UserError
from cxrray.representations import REPRESENTATIONS, hide_seek_representations, lung_hiding
from cxrray.training.methods import METHODS, check_methods, expand_methods

if typing.TYPE_CHECKING:
    from cxrray.tuning.asha import EarlyStop

HIDE_SEEK_REPRESENTATIONS = hide_seek_representations()  # Sadre et al.'s five, from their registry entries


@dataclass(frozen=True)
class Resources:
    """What each trial asks of the cluster (not part of a trial's identity)."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    max_concurrent_trials: int | None = None  # None: as many as the cluster holds (each trial's placement group)
    max_failures: int = 1  # retries of a failing trial, from its last checkpoint
    # "inline": a one-worker trial trains inside its Tune actor, which Tune reuses for the next trial
    # (no worker group to start: seconds per trial instead of tens); "train": a Ray Train worker group
    # per trial; "auto": inline when num_workers == 1.
    launcher: str = "auto"
    checkpoint_every_s: float = 30.0  # epoch checkpoints at most this often (and the first of each attempt)
    # CPUs a Ray Train fit reserves next to its workers for the Ray Data tasks that stream its shards (in its
    # placement group), so training cannot starve them; an inline trial reads its shards in its own process.
    data_cpus: float = 1.0

    def inline(self) -> bool:
        if self.launcher not in ("auto", "inline", "train"):
            raise UserError(f"unknown launcher {self.launcher!r}; valid: auto, inline, train")
        if self.launcher == "inline" and self.num_workers != 1:
            raise UserError(f"launcher 'inline' trains on one worker; num_workers is {self.num_workers}")
        return self.launcher == "inline" or (self.launcher == "auto" and self.num_workers == 1)


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs its trials, handed from the study (``Study.sweep_options``) to ``run_sweep`` /
    ``run_waves`` as one typed record, never keyword arguments unpacked from a dict."""

    resources: Resources = Resources()
    wandb_mode: WandbMode = "offline"
    project: str = "cxrray"
    weights: str | None = None  # a local ImageNet state-dict file for specs with ``pretrained``
    storage: str | None = None  # Ray's checkpoint storage (default ``<run_dir>/ray``)
    early_stop: EarlyStop | None = None  # ASHA over the hyper-parameter axes
    max_trials: int | None = None  # more specs than this is refused before any trial


def check_size(trials: int, max_trials: int | None) -> None:
    """A sweep of more than ``max_trials`` trials is refused in one line (``--max-trials`` raises the limit)."""
    if max_trials is not None and trials > max_trials:
        raise UserError(f"the sweep has {trials} trials, more than --max-trials {max_trials}; raise --max-trials "
                        f"if this is meant")


def method_names(methods: Sequence[str]) -> tuple[str, ...]:
    """The sweep's training methods, each family name (``short_sex``) replaced by its variants; an unknown name
    is an error listing the valid ones (before Ray starts)."""
    names = expand_methods(methods)
    for name in names:
        METHODS.get(name)
    return names


def check_methods_on_data(methods: Sequence[str], rows: pl.DataFrame, where: str | Path) -> None:
    """Each training method of the sweep can be estimated on the manifest's rows, or one line before Ray starts
    (ShorT on sex with every patient of one sex trained ten trials and then wrote no table)."""
    for given in dict.fromkeys(methods):  # a family (short_sex) is said once, by the name the user wrote
        why = next(filter(None, (METHODS.get(name).cannot_estimate(rows) for name in method_names([given]))), "")
        if why:
            raise UserError(f"{where}: method {given} cannot be estimated on this data: {why}; drop it from "
                            f"--methods")


def check_mask_dilation(dilation: Sequence[int], representations: Sequence[str], image_size: int) -> list[str]:
    """The representations a dilation axis reruns (those that hide the lungs); an error for a dilation below 0
    or of half the image or more, or for dilations without a lung-hiding representation to rerun."""
    if any(d < 0 or 2 * d >= image_size for d in dilation):
        raise UserError(f"--mask-dilation {' '.join(map(str, dilation))}: each must be 0 or more pixels and "
                        f"under half the image size ({image_size} px)")
    hiding = [r for r in representations if r in lung_hiding()]
    if any(dilation) and not hiding:
        raise UserError(f"--mask-dilation needs a representation that hides the lungs ({', '.join(lung_hiding())}) "
                        f"among --representations")
    return hiding


def hide_seek_specs(*, data_id: str, representations: Sequence[str] = HIDE_SEEK_REPRESENTATIONS,
                    backbones: Sequence[str] = ("basecnn", "resnet18"), seeds: Sequence[int] = (0,),
                    task: str = "CL2", image_size: int = 64, pretrained: bool = False,
                    recipe: TrainRecipe = TrainRecipe(), study: str = "hide_seek",
                    mask_dilation: Sequence[int] = (0,), methods: Sequence[str] = ("standard",)) -> list[TrialSpec]:
    """Representation x backbone x method x seed (Sadre et al.); every name is checked against its registry
    (``methods``: a family name such as ``short_sex`` stands for its variants, ``methods.expand_methods``).
    ``mask_dilation``: each non-zero value adds the lung-hiding representations again with the lung mask grown
    by that many pixels (the undilated trials are always there: the comparison every dilation is read against;
    their ids are those of a sweep without the axis)."""
    for name in representations:
        REPRESENTATIONS.get(name)
    check_image_size(image_size, backbones)
    if TASKS.get(task).multilabel:
        raise UserError(f"task {task!r} is multilabel; the hide-and-seek study trains single-label tasks "
                         f"({[t for t in TASKS.names() if not TASKS.get(t).multilabel]})")
    hiding = check_mask_dilation(mask_dilation, representations, image_size)
    grown = [(r, d) for d in sorted(set(mask_dilation) - {0}) for r in hiding]
    specs = [
        TrialSpec(study=study, data_id=data_id, representation=rep, backbone=bb, task=task, seed=seed,
                  image_size=image_size, pretrained=pretrained, recipe=recipe, mask_dilation=d, method=method)
        for (rep, d), bb, method, seed in itertools.product([(r, 0) for r in representations] + grown, backbones,
                                                            method_names(methods), seeds)
    ]
    check_methods(specs)
    return specs


def design_splits(rows: pl.DataFrame, design: str, task: str, *, folds: int = 1, seed: int = 0,
                  test_sources: Sequence[str] = ()) -> Iterator[tuple[int, pl.DataFrame]]:
    """``(fold, rows with split)`` for one dataset design of Hasan et al.

    single / multiple: a patient-level 60/20/20 holdout (``folds=1``) or k-fold
    cross-validation (``folds=k``: fold f is the test partition; stratified by
    label, and by source for multiple). independent: the named ``test_sources``
    (one fold), or, when none are named, each source that can form the design
    left out in turn (fold i = the i-th such source).
    """
    the_task = TASKS.get(task)
    rows = the_task.rows_of(rows)  # a finding task: label = the class its column gives
    if design == "independent":
        if test_sources:
            yield 0, DESIGNS.get("independent")(rows, the_task, seed=seed, test_sources=list(test_sources))
            return
        left_out = list(leave_out_sources(rows, the_task, seed=seed))
        if not left_out:
            raise DesignError(f"independent design for {task}: no source can be held out with every class on "
                              f"both sides (sources {sorted(rows['source'].unique().to_list())})")
        yield from ((i, df) for i, (_, df) in enumerate(left_out))
        return
    holdout = DESIGNS.get(design)(rows, the_task, seed=seed)
    if folds <= 1:
        yield 0, holdout
        return
    stratify = ("label", "source") if design == "multiple" else ("label",)
    for _, fold, df in kfold_splits(holdout.drop("split"), k=folds, seed=seed, stratify=stratify):
        yield fold, df


def source_bias_specs(*, data_ids: dict[tuple[str, str, int], str], backbones: Sequence[str],
                      seeds: Sequence[int] = (0,), image_size: int = 64, pretrained: bool = False,
                      recipe: TrainRecipe = TrainRecipe(), representation: str = "original",
                      study: str = "source_bias", methods: Sequence[str] = ("standard",)) -> list[TrialSpec]:
    """Design x task x fold (``data_ids`` keys) x backbone x method x seed: every name checked against its
    registry, and every method against the task (its registry entry says which task kinds it trains)."""
    for name in backbones:
        BACKBONES.get(name)
    specs = [
        TrialSpec(study=study, data_id=data_id, representation=representation, backbone=bb, task=task,
                  design=design, fold=fold, seed=seed, image_size=image_size, pretrained=pretrained, recipe=recipe,
                  method=method)
        for ((design, task, fold), data_id), bb, method, seed in itertools.product(data_ids.items(), backbones,
                                                                                    methods, seeds)
    ]
    check_methods(specs)
    return specs


def check_image_size(size: int, backbones: Sequence[str]) -> None:
    """The image size fits every backbone (its registry entry's minimum input): the one place this is checked."""
    small = [f"{b} (at least {BACKBONES.get(b).min_size} px)" for b in backbones if size < BACKBONES.get(b).min_size]
    if small:
        raise UserError(f"--image-size {size} is too small for {', '.join(small)}")


def check_specs(specs: Sequence[TrialSpec]) -> None:
    """Every registry-typed field of every spec names a registered entry (errors list the valid names), and
    every backbone gets inputs at least its minimum size: checked before Ray starts."""
    for spec in specs:
        REPRESENTATIONS.get(spec.representation)
        TASKS.get(spec.task)
        METHODS.get(spec.method)
        check_image_size(spec.image_size, [spec.backbone])


def parse_search(items: Sequence[str]) -> dict[str, list]:
    """``["lr=1e-3,1e-4", "batch_size=16,32"]`` -> typed values per recipe field. Each value is checked as the
    recipe checks it (a choice field takes only its choices), so a bad axis fails here, before Ray starts;
    errors name the field and the value."""
    hints = typing.get_type_hints(TrainRecipe)
    out: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or key not in hints:
            raise UserError(f"--search {item!r}: expected FIELD=V1,V2 with FIELD one of {sorted(hints)}")
        kind = hints[key]
        cast = (lambda v: v.lower() in ("1", "true", "yes")) if kind is bool else kind if kind in (int, float) else str
        typed: list[Any] = []  # (int, float, bool or str: the recipe field decides)
        for v in values.split(","):
            try:
                typed.append(cast(v))
                dataclasses.replace(TrainRecipe(), **{key: typed[-1]})
            except (TypeError, ValueError) as exc:
                raise UserError(f"--search {item!r}: value {v!r} is not valid for {key} ({exc})") from None
        out[key] = typed
    return out


def expand_search(specs: list[TrialSpec], search: dict[str, list]) -> list[TrialSpec]:
    """Every spec x every combination of the hyper-parameter values (recipe fields)."""
    if not search:
        return specs
    names = sorted(search)
    return [dataclasses.replace(s, recipe=dataclasses.replace(s.recipe, **dict(zip(names, combo, strict=True))),
                                setting=",".join(f"{n}={v}" for n, v in zip(names, combo, strict=True)))
            for s in specs for combo in itertools.product(*(search[n] for n in names))]
