"""Checks of a dataset against a task and its split, run before Ray starts: what would otherwise fail after
minutes of training (a manifest with one class, too few patients for the split) fails at once, in one line
that says what is missing and how much is needed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from cxrray.data.splits import assign_splits
from cxrray.data.tasks import TASKS
from cxrray.registry import UserError

SPLIT_NAMES = ("train", "val", "test")


def require_task_columns(rows: pl.DataFrame, task: str, where: str | Path) -> None:
    """The finding columns ``task`` reads besides ``label`` are in the manifest, or a ``UserError`` naming them."""
    missing = [c for c in TASKS.get(task).finding_columns if c not in rows.columns]
    if missing:
        raise UserError(f"{where}: task {task} needs the column(s) {missing} (1 / 0 / empty = unknown)")


def check_task_data(rows: pl.DataFrame, task: str, where: str | Path, *,
                    fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> pl.DataFrame:
    """The rows of ``task`` with their patient-level ``split`` (as ``prepare_data`` will make it), or a
    ``UserError``: a class of the task with no row; a split without a patient of some class (an AUROC there
    would be undefined), naming how many patients per class the fractions need."""
    the_task = TASKS.get(task)
    require_task_columns(rows, task, where)
    rows = the_task.rows_of(rows)
    used = rows if the_task.multilabel else rows.filter(pl.col("label").is_in(the_task.labels))
    if used.height == 0:
        raise UserError(f"{where}: no row for task {task} (it uses labels {list(the_task.labels)}; the manifest "
                        f"has {sorted(set(rows['label']))})")
    class_of = {label: c for c in the_task.classes for label in the_task.members.get(c, ())}
    if not the_task.multilabel:
        used = used.with_columns(pl.col("label").replace_strict(class_of).alias("_class"))
        present = set(used["_class"])
        missing = [c for c in the_task.classes if c not in present]
        if missing:
            raise UserError(f"{where}: task {task} needs every class of {list(the_task.classes)}; no row of "
                            f"{missing} (labels {[lb for c in missing for lb in the_task.members[c]]}) is in the "
                            f"manifest")
    split = assign_splits(used, fractions, seed=seed)
    names = SPLIT_NAMES[:len(fractions)]
    needed = math.ceil(1 / min(fractions) - 1e-9)
    share = "/".join(f"{round(100 * f)}" for f in fractions)
    for name in names:
        part = split.filter(pl.col("split") == name)
        if the_task.multilabel:
            if part.height == 0:
                raise UserError(f"{where}: {split['patient_id'].n_unique()} patient(s) are too few for the "
                                f"{share} split: {name} gets none; at least {needed} are needed")
            continue
        for c in the_task.classes:
            if part.filter(pl.col("_class") == c).height == 0:
                have = split.filter(pl.col("_class") == c)["patient_id"].n_unique()
                raise UserError(f"{where}: too few patients for the {share} split: the {name} split gets no "
                                f"patient of class {c} (a model cannot learn or be scored without it); every class "
                                f"needs at least {needed} patients, {c} has {have}")
    return split.drop("_class", strict=False)


def check_rows_left(rows: pl.DataFrame, quarantine: pl.DataFrame, where: str | Path) -> None:
    """Every row quarantined: say why (the first reasons) instead of starting Ray on nothing."""
    if rows.height == 0:
        if not quarantine.height:
            raise UserError(f"{where}: the manifest has no rows")
        raise UserError(f"{where}: no usable row: all {quarantine.height} are left out, the first as "
                        f"{quarantine['reason'][0]}")


def check_files_exist(rows: pl.DataFrame, where: str | Path, threads: int = 16) -> None:
    """A cheap existence pass over the image paths before Ray starts: when not one image exists (a wrong root, an
    unmounted share), refuse in one line instead of ingesting every row into the quarantine. Rows whose file is
    missing among others that exist go on to the ingest, which quarantines each with its reason."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    paths = [p for p in rows["image_path"].to_list() if p]
    if not paths:
        return
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(os.path.exists, paths, chunksize=256))
    if not any(found):
        raise UserError(f"{where}: none of the {len(paths)} image files exists (the first: {paths[0]}); is the "
                        f"data where the manifest says (paths are relative to the manifest)?")
