"""The end of a sweep: every trial folder's predictions and record gathered into the run's two tables.

The predictions are streamed into ``predictions.parquet`` a batch of trials at a time (``gather_predictions``),
so the driver never holds every trial's predictions at once: at 10,000 trials the gathered table is written
with the memory of ``BATCH`` trials. The analysis reads the table back from the run folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from cxrray.config import RunLayout, SweepOutcome, TrialSpec
from cxrray.records import StoppedRecord, TrialRecord

BATCH = 256  # trials per batch written to the gathered table


def collect(specs: list[TrialSpec], run_dir: Path, skipped: list[str] | None = None) -> SweepOutcome:
    """Gather per-trial predictions (into ``RunLayout.predictions``) and a results table (spec fields + training
    metadata); the outcome lists the trials by status."""
    layout = RunLayout(Path(run_dir))
    files, rows, finished, failed, stopped = [], [], [], [], []
    for s in specs:
        d = layout.trial(s.trial_id)
        if not d.done and d.stopped.exists():
            stopped.append(s.trial_id)
            rows.append(StoppedRecord.read(d).results_row())
        elif d.done:
            finished.append(s.trial_id)
            files.append(d.predictions)
            rows.append(TrialRecord.read(d).results_row())
        else:
            failed.append(s.trial_id)
            blocked = s.init_from and not layout.trial(s.init_from).done
            last = d.error.read_text().strip().splitlines()[-1][:300] if d.error.exists() else ""
            rows.append(s.flat() | {"trial_id": s.trial_id, "run_name": s.run_name, "error": last,
                                    "status": f"blocked by {s.init_from}" if blocked else "failed"})
    if files:
        gather_predictions(files, layout.predictions)
    results = pl.DataFrame(rows, infer_schema_length=None)
    results.write_parquet(layout.results)
    return SweepOutcome(finished, failed, skipped or [], results, tuple(stopped))


def union_schema(files: list[Path]) -> pl.Schema:
    """Every column of the trials' prediction files, in first-seen order, each with the type that holds all of
    its files' values (Polars' relaxed diagonal concatenation; a column all null in one file takes the others'
    type), read from the files' footers only."""
    empty = [pl.DataFrame(schema=pl.read_parquet_schema(f)) for f in files]
    return pl.concat(empty, how="diagonal_relaxed").schema


def gather_predictions(files: list[Path], dest: Path, batch: int = BATCH) -> None:
    """Write the rows of every file in ``files`` to ``dest``, in order, ``batch`` files at a time (the table a
    diagonal concatenation would give: columns missing from a file are null); atomic (a temporary file, then
    renamed), so a sweep stopped while gathering leaves the previous table."""
    import pyarrow.parquet as pq

    schema = union_schema(files)
    tmp = dest.with_name(f".{dest.name}.tmp")
    writer = None
    try:
        for start in range(0, len(files), batch):
            chunk = files[start:start + batch]
            frame = pl.concat([pl.read_parquet(f) for f in chunk], how="diagonal_relaxed")
            frame = frame.with_columns([pl.lit(None, dtype).alias(n) for n, dtype in schema.items()
                                        if n not in frame.columns]).select(list(schema)).cast(schema)
            table = frame.to_arrow()
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.close()
    os.replace(tmp, dest)
