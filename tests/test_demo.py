"""The demo behind ``./run demo`` (the README's first command) runs and leaves what it says."""

from __future__ import annotations

from pathlib import Path

import numpy
import pytest

import dask_zcollection as dzc
from dask_zcollection import demo


def test_demo_writes_reads_and_appends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo.main(["--dir", str(tmp_path), "--days", "40", "--width", "8"])
    out = capsys.readouterr().out
    assert "filtered read (month == 2)" in out
    assert "partitions" in out

    # 40 days from 2024-01-01, then one more appended day: January and February.
    col = dzc.open_collection(f"file://{tmp_path / 'altimetry'}")
    assert col.partitions() == ["year=2024/month=01", "year=2024/month=02"]
    data = demo._synthetic("2024-01-01", 40, width=8)
    more = demo._synthetic(str(data["time"][-1] + numpy.timedelta64(10, "s")), 1, width=8)
    read = dzc.read_collection(f"file://{tmp_path / 'altimetry'}").compute()
    numpy.testing.assert_array_equal(
        read["time"].values, numpy.concatenate([data["time"], more["time"]])
    )
    numpy.testing.assert_array_equal(
        read["ssh"].values, numpy.concatenate([data["ssh"], more["ssh"]])
    )


def test_demo_schema_is_the_collections() -> None:
    schema = demo.altimetry_schema(width=16, chunks=4096)
    assert set(schema.variables) == {"time", "ssh", "x_ac"}
    assert schema.variables["ssh"].dimensions == ("time", "x_ac")
