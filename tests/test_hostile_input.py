"""Hostile input to the newest code: typed errors naming what is wrong, and nothing written."""

from __future__ import annotations

import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection.errors import SchemaError


@pytest.mark.parametrize("fill", [1000, -129, 1.5, float("nan")])
def test_fill_value_that_does_not_fit_is_a_schema_error_naming_the_variable(fill: object) -> None:
    # Before: 1000 into int8 raised a bare OverflowError, and 1.5 was truncated to 1.
    match = r"variable 'flag': fill value .* does not fit dtype int8"
    with pytest.raises(SchemaError, match=match):
        zc.Schema().with_dimension("time").with_variable(
            "flag", dtype="int8", dimensions=("time",), fill_value=fill
        )
    ok = (
        zc.Schema()
        .with_dimension("time")
        .with_variable("flag", dtype="int8", dimensions=("time",), fill_value=2.0)
    )
    assert ok["flag"].fill_value == numpy.int8(2)
