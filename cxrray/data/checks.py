"""Checks of a dataset against a task and its split, run before Ray starts: what would otherwise fail after
minutes of training (a manifest with one class, too few patients for the split) fails at once, in one line
that says what is missing and how much is needed."""

from __future__ import annotations

import math
import re
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
    needed = math.ceil(1 / min(fractions) - 1e-9)
    share = "/".join(f"{round(100 * f)}" for f in fractions)
    gap = split_gap(split, task, SPLIT_NAMES[:len(fractions)])
    if gap and the_task.multilabel:
        raise UserError(f"{where}: {split['patient_id'].n_unique()} patient(s) are too few for the {share} split: "
                        f"{gap[0]} gets none; at least {needed} are needed")
    if gap:
        name, c = gap
        have = split.filter(pl.col("_class") == c)["patient_id"].n_unique()
        raise UserError(f"{where}: too few patients for the {share} split: the {name} split gets no patient of "
                        f"class {c} (a model cannot learn or be scored without it); every class needs at least "
                        f"{needed} patients, {c} has {have}")
    return split.drop("_class", strict=False)


def split_gap(split: pl.DataFrame, task: str, names: Sequence[str] = SPLIT_NAMES) -> tuple[str, str] | None:
    """The first (split, class) of ``task`` without a patient in ``split`` (rows with ``split``; a multilabel task:
    (split, "") for an empty split), or None when every split holds every class."""
    the_task = TASKS.get(task)
    if "_class" not in split.columns and not the_task.multilabel:
        class_of = {label: c for c in the_task.classes for label in the_task.members.get(c, ())}
        split = split.filter(pl.col("label").is_in(list(class_of))).with_columns(
            pl.col("label").replace_strict(class_of).alias("_class"))
    for name in names:
        part = split.filter(pl.col("split") == name)
        if the_task.multilabel and part.height == 0:
            return name, ""
        for c in () if the_task.multilabel else the_task.classes:
            if part.filter(pl.col("_class") == c).height == 0:
                return name, c
    return None


def reason_kind(reason: str) -> str:
    """A quarantine reason without its row, file and details: "row 7: a/b.png: no lung mask (mask_path is
    empty)" -> "no lung mask"; rows lost are counted per kind."""
    text = re.sub(r"^row \d+: ", "", reason)
    head, _, rest = text.partition(": ")
    if rest and ("/" in head or "." in head):  # a file's path first
        text = rest
    kind = re.split(r" \(|: | \d", text, maxsplit=1)[0].strip()
    return KINDS.get(kind, kind)


KINDS = {"lung Dice": "mask disputed by the U-Net"}  # reason_kind's words where the reason's own start is cryptic


def check_what_is_left(kept: pl.DataFrame, lost: pl.DataFrame, task: str, where: str | Path, *,
                       names: Sequence[str] = SPLIT_NAMES, when: str = "after the ingest") -> None:
    """The manifest's split check rerun on the rows that are left (``kept``, with their ``split``) once the rows
    of ``lost`` (``reason`` per row) are taken out: a class that the quarantine emptied from a split stops the run
    before any trial, in one line that counts the rows lost per reason and says how to fix it."""
    gap = split_gap(kept, task, names) if lost.height else None
    if gap is None:
        return
    name, c = gap
    kinds = lost["reason"].map_elements(reason_kind, return_dtype=pl.Utf8).value_counts(sort=True)
    counts = ", ".join(f"{n} {k}" for k, n in kinds.iter_rows())
    what = f"no patient of class {c}" if c else "no row"
    fix = "the rows left out and why are listed above"
    if "mask disputed by the U-Net" in kinds["reason"]:
        fix = (f"the U-Net disagrees with the supplied masks: score it on them (`cxrray segment evaluate {where} UNET "
               f"--out DIR`) or run without --mask-unet")
    if "no lung mask" in kinds["reason"]:
        fix = (f"fill the missing lung masks with the lung U-Net in this command (--mask-unet UNET), or first with "
               f"`cxrray segment fill {where} UNET --out DIR` and then --manifest DIR/manifest.csv (a U-Net from "
               f"`cxrray segment train {where} --out DIR`, trained on the masked rows)")
    raise UserError(f"{where}: {when}, the {name} split holds {what} ({lost.height} of {kept.height + lost.height} "
                    f"rows left out: {counts}); nothing was trained. To fix: {fix}")


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
