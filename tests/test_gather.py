"""A sweep's predictions gathered in batches: the table one diagonal concatenation would give, atomically."""

import polars as pl
import pytest

from cxrray.tuning.gather import gather_predictions, union_schema


def _trials(tmp_path):
    """Five trial files of different shapes: a three-class task's extra column, an all-null column, an
    integer column that a later file holds as floats."""
    frames = [
        pl.DataFrame({"trial_id": "a", "row": [1, 2], "prob_NOR": [0.2, 0.9], "severity": [None, None]}),
        pl.DataFrame({"trial_id": "b", "row": [1, 2], "prob_NOR": [0.3, 0.1], "severity": ["mild", None]}),
        pl.DataFrame({"trial_id": "c", "row": [3], "prob_NOR": [0.5], "prob_PNE": [0.4], "severity": [None]}),
        pl.DataFrame({"trial_id": "d", "row": [4.0, 5.0], "prob_NOR": [0.6, 0.7]}),
        pl.DataFrame({"trial_id": "e", "row": [6], "prob_NOR": [0.8], "severity": ["severe"]}),
    ]
    files = []
    for k, f in enumerate(frames):
        files.append(tmp_path / f"t{k}.parquet")
        f.write_parquet(files[-1])
    return frames, files


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_batches_give_the_table_of_one_concatenation(tmp_path, batch):
    frames, files = _trials(tmp_path)
    whole = pl.concat(frames, how="diagonal_relaxed")
    gather_predictions(files, tmp_path / "predictions.parquet", batch=batch)
    got = pl.read_parquet(tmp_path / "predictions.parquet")
    assert got.columns == ["trial_id", "row", "prob_NOR", "severity", "prob_PNE"]
    assert got.schema == whole.schema and got["row"].dtype == pl.Float64 and got["severity"].dtype == pl.String
    assert got.equals(whole)
    assert got["prob_PNE"].to_list() == [None, None, None, None, 0.4, None, None, None]
    assert not list(tmp_path.glob(".*tmp"))


def test_the_schema_is_read_from_footers_and_a_failed_gather_keeps_the_previous_table(tmp_path, monkeypatch):
    frames, files = _trials(tmp_path)
    assert union_schema(files[:1])["severity"] == pl.Null and union_schema(files[:2])["severity"] == pl.String
    dest = tmp_path / "predictions.parquet"
    frames[0].write_parquet(dest)
    read = pl.read_parquet

    def failing(path, *args, **kwargs):  # the disk fails once the first batch is written
        if path == files[3]:
            raise OSError(5, "Input/output error")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(pl, "read_parquet", failing)
    with pytest.raises(OSError, match="Input/output"):
        gather_predictions(files, dest, batch=2)
    monkeypatch.undo()
    assert pl.read_parquet(dest).equals(frames[0])  # the earlier table is untouched
    assert not list(tmp_path.glob(".*tmp"))  # and the half-written one is gone
