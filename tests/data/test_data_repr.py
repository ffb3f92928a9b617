"""Text and HTML reprs: content, sizes, truncation, never computing dask data."""

from __future__ import annotations

import html.parser

import dask
import dask.array as da
import numpy

from dask_zcollection.data import Dataset, Group, Variable
from dask_zcollection.data._repr import format_bytes, preview


def _boom() -> numpy.ndarray:
    raise AssertionError("dask data was computed")


def make_dataset() -> Dataset:
    n = 10000
    time = numpy.arange(n, dtype="int64").astype("M8[s]").astype("M8[ns]")
    ssh = numpy.full((n, 240), 0.25, dtype="float32")
    ssh[0, 0] = numpy.nan
    power = da.from_delayed(dask.delayed(_boom)(), shape=(n, 240), dtype="float32")
    ku = Group(
        "ku",
        [Variable("power", power.rechunk((4096, 240)), ("time", "range"))],
        attrs={"band": "Ku"},
    )
    return Dataset(
        variables=[
            Variable("time", time, ("time",)),
            Variable("ssh", ssh, ("time", "x_ac"), {"units": "m"}),
        ],
        groups=[Group("data_01", groups=[ku])],
        attrs={"title": "Altimetry " + "x" * 300, "cycle": 12},
    )


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(999) == "999 B"
    assert format_bytes(80_000) == "80.0 kB"
    assert format_bytes(9_600_000) == "9.6 MB"
    assert format_bytes(2.5e9) == "2.5 GB"


def test_preview() -> None:
    assert preview(numpy.array([1, 2, 3])) == "1 2 3"
    assert preview(numpy.array([numpy.nan, 0.1], "float32")) == "nan 0.1"
    assert preview(numpy.array(["2024-01-01", "NaT"], "M8[ns]")) == "2024-01-01 NaT"
    assert preview(numpy.array(["2024-01-01T10:30"], "M8[ns]")) == "2024-01-01 10:30:00"
    assert preview(numpy.array(["ab"])) == "'ab'"
    assert preview(numpy.array([b"ab"])) == "b'ab'"
    assert preview(numpy.array(5)) == "5"
    assert preview(numpy.zeros(0)) == "[]"
    text = preview(numpy.arange(100_000), 30)
    assert text.startswith("0 1") and text.endswith("99999") and "..." in text
    assert len(text) <= 30
    assert preview(da.zeros(10, chunks=4)) == "dask.array<chunksize=(4,)>"


def test_variable_repr() -> None:
    var = Variable("ssh", numpy.zeros((1000, 240), "float32"), ("time", "x_ac"), {"units": "m"})
    lines = repr(var).splitlines()
    assert lines[0] == "<Variable 'ssh' (time: 1000, x_ac: 240) float32 960.0 kB>"
    assert lines[1].split() == ["units:", "m"]


def test_dataset_repr() -> None:
    ds = make_dataset()
    text = repr(ds)  # the dask data raises if computed
    lines = text.splitlines()
    assert lines[0] == "<dask_zcollection.Dataset> Size: 19.3 MB"
    assert lines[1] == "Dimensions:  (time: 10000, x_ac: 240)"
    assert lines[2] == "Data variables:"
    assert lines[3].split()[:4] == ["time", "(time)", "datetime64[ns]", "80.0"]
    assert "1970-01-01 ... 1970-01-01 02:46:39" in lines[3]
    assert lines[4].split()[:6] == ["ssh", "(time,", "x_ac)", "float32", "9.6", "MB"]
    assert "nan 0.25" in lines[4]
    assert "Groups:" in lines
    assert "    /data_01/ku  (range: 240)  attrs: band='Ku'" in lines
    power = next(line for line in lines if "power" in line)
    assert power.startswith("        power") and "dask.array<chunksize=(4096, 240)>" in power
    assert "9.6 MB" in power
    assert "Attributes:" in lines
    assert any(line.split()[:2] == ["cycle:", "12"] for line in lines)
    assert all(len(line) <= 100 for line in lines)


def test_repr_truncates_many_variables() -> None:
    ds = Dataset(variables=[Variable(f"v{i:03d}", numpy.zeros(2), ("x",)) for i in range(120)])
    lines = repr(ds).splitlines()
    names = [line.split()[0] for line in lines[3:] if line.strip() != "..."]
    assert names[:2] == ["v000", "v001"] and names[-1] == "v119"
    assert len(names) == 50
    assert "    ..." in lines
    assert "v060" not in repr(ds)


def test_group_repr() -> None:
    ku = make_dataset()["data_01/ku"]
    text = repr(ku)
    assert text.startswith("<dask_zcollection.Group 'ku'> Size: 9.6 MB")
    assert "power" in text and "band: Ku" in text


class _Checker(html.parser.HTMLParser):
    VOID = frozenset({"br", "hr", "img", "meta", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_repr_html() -> None:
    ds = make_dataset().with_variables(
        {"weird": Variable("weird", numpy.zeros(1), ("z",), {"note": "<script>&"})}
    )
    out = ds._repr_html_()
    assert "<script>" not in out and "&lt;script&gt;&amp;" in out
    assert "<details" in out and "<summary>" in out
    checker = _Checker()
    checker.feed(out)
    checker.close()
    assert checker.stack == []
    text = "".join(checker.text)
    for name in ("time", "ssh", "power", "/data_01/ku", "weird", "Ku", "19.3 MB"):
        assert name in text
