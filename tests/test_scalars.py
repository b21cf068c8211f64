"""A polars scalar read as the number its column holds (``cxrray.scalars``): numbers pass through, an empty
column's None is NaN for a mean and a refusal for a count, and a non-number fails where it is read."""

import math

import polars as pl
import pytest

from cxrray.scalars import count, num


def test_numbers_of_a_column_read_as_floats_and_counts():
    frame = pl.DataFrame({"x": [1.5, 2.5], "n": [3, 4], "flag": [True, False]})
    assert num(frame["x"].max()) == 2.5 and num(frame["n"].mean()) == 3.5
    assert count(frame["n"].max()) == 4 and count(frame["flag"].sum()) == 1 and count(4.0) == 4
    assert math.isnan(num(pl.DataFrame({"x": []}, schema={"x": pl.Float64})["x"].max()))


@pytest.mark.parametrize("bad", [[1, 2], b"x", object()])
def test_a_value_that_is_no_number_fails_where_it_is_read(bad):
    with pytest.raises(TypeError, match="not a number"):
        num(bad)


def test_a_count_must_be_whole():
    with pytest.raises(TypeError, match=r"not a count: 2\.5"):
        count(2.5)
    with pytest.raises(TypeError, match="not a count"):
        count(None)
