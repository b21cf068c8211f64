"""Dataset designs of Hasan et al. (CVR-Net study): how sources map onto classes.

- ``single``: each class comes from one source, a different one per class.
- ``multiple``: each class mixes several sources.
- ``independent``: the test partition comes from sources never seen in training
  or validation (named, or left out in turn with ``leave_out_sources``).

Each design is a registry entry ``fn(df, task, seed, **kw) -> df with split``
that raises ``DesignError`` saying which class lacks which sources when the
design cannot be formed from the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import polars as pl

from cxrray.data.splits import assign_splits, check_no_leakage
from cxrray.data.tasks import Task
from cxrray.registry import Registry, UserError

Design = Callable[..., pl.DataFrame]
DESIGNS: Registry[Design] = Registry("dataset design")


class DesignError(UserError):
    """The manifest's sources cannot form the requested design."""


def with_classes(df: pl.DataFrame, task: Task) -> pl.DataFrame:
    """Add the task class of every row (``class``); rows outside the task are dropped."""
    lookup = {label: c for c in task.classes for label in task.members[c]}
    return df.filter(pl.col("label").is_in(list(lookup))).with_columns(
        pl.col("label").replace_strict(lookup).alias("class"))


def _sources_per_class(df: pl.DataFrame) -> dict[str, dict[str, int]]:
    counts = df.group_by("class", "source").len().sort("class", "len", descending=[False, True])
    out: dict[str, dict[str, int]] = {}
    for r in counts.iter_rows(named=True):
        out.setdefault(r["class"], {})[r["source"]] = r["len"]
    return out


@DESIGNS.register("single")
def single(df: pl.DataFrame, task: Task, seed: int = 0,
           fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> pl.DataFrame:
    """Keep, for each class, only its largest source, all sources distinct (greedy by size)."""
    df = with_classes(df, task)
    per = _sources_per_class(df)
    missing = [c for c in task.classes if c not in per]
    if missing:
        raise DesignError(f"single design for {task.name}: no images of class(es) {missing}")
    chosen: dict[str, str] = {}
    for c in sorted(task.classes, key=lambda c: len(per[c])):  # fewest options first
        free = [s for s in per[c] if s not in chosen.values()]
        if not free:
            raise DesignError(f"single design for {task.name}: class {c!r} has only source(s) {list(per[c])}, "
                              f"already used by {[k for k, v in chosen.items() if v in per[c]]}")
        chosen[c] = free[0]
    keep = pl.struct("class", "source").map_elements(lambda r: chosen[r["class"]] == r["source"],
                                                     return_dtype=pl.Boolean)
    return assign_splits(df.filter(keep).drop("class"), fractions, seed=seed)


@DESIGNS.register("multiple")
def multiple(df: pl.DataFrame, task: Task, seed: int = 0, fractions: Sequence[float] = (0.6, 0.2, 0.2),
             min_sources: int = 2) -> pl.DataFrame:
    """Every class from at least ``min_sources`` sources; split stratified by class and source."""
    df = with_classes(df, task)
    per = _sources_per_class(df)
    short = {c: list(per.get(c, {})) for c in task.classes if len(per.get(c, {})) < min_sources}
    if short:
        raise DesignError(f"multiple design for {task.name} needs >= {min_sources} sources per class; "
                          f"too few for {short}")
    return assign_splits(df.drop("class"), fractions, seed=seed, stratify=("label", "source"))


@DESIGNS.register("independent")
def independent(df: pl.DataFrame, task: Task, seed: int = 0, test_sources: Sequence[str] = (),
                val_fraction: float = 0.2) -> pl.DataFrame:
    """Test on ``test_sources`` only; train/val (by patient) on every other source."""
    df = with_classes(df, task)
    known = sorted(df["source"].unique().to_list())
    unknown = [s for s in test_sources if s not in known]
    if not test_sources or unknown:
        raise DesignError(f"independent design needs test_sources from {known}; got {list(test_sources)}")
    is_test = pl.col("source").is_in(list(test_sources))
    test, train = df.filter(is_test), df.filter(~is_test)
    for name, part in (("training", train), ("test", test)):
        absent = [c for c in task.classes if c not in set(part["class"])]
        if absent:
            raise DesignError(f"independent design for {task.name}: class(es) {absent} missing from the {name} "
                              f"sources {sorted(part['source'].unique().to_list())}")
    shared = set(test["patient_id"]) & set(train["patient_id"])
    if shared:
        raise DesignError(f"independent design: patient(s) {sorted(shared)[:5]} appear in test and training sources")
    train = assign_splits(train.drop("class"), (1 - val_fraction, val_fraction), seed=seed)
    out = pl.concat([train, test.drop("class").with_columns(pl.lit("test").alias("split"))], how="vertical")
    check_no_leakage(out)
    return out.sort("row") if "row" in out.columns else out


def leave_out_sources(df: pl.DataFrame, task: Task, seed: int = 0) -> Iterator[tuple[str, pl.DataFrame]]:
    """Independent design with each source left out in turn (skipping sources that cannot form it)."""
    for source in sorted(df["source"].unique().to_list()):
        try:
            yield source, independent(df, task, seed=seed, test_sources=[source])
        except DesignError:
            continue
