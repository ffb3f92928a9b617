"""Reprs and pictures: Collection repr, LazyCollection HTML repr, plot_partitions, visualize,
and no third-party log noise when an Icechunk repository is opened."""

from __future__ import annotations

import asyncio
import html.parser
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection._display import standalone_html
from dask_zcollection.data._repr import format_bytes
from dask_zcollection.errors import InvalidInputError
from dask_zcollection.store import _icechunk

#: Variables of the factory's schema and their bytes per row (uncompressed).
ROW_BYTES = 8 + 3 * 4 + 1 + 2 * 4


def _times() -> numpy.ndarray:
    """Jan, Mar and Apr 2024 every 6 h: February is a gap."""
    t = numpy.arange("2024-01-01", "2024-04-10", numpy.timedelta64(6, "h"), dtype="datetime64[ns]")
    return t[(t < numpy.datetime64("2024-02-01")) | (t >= numpy.datetime64("2024-03-01"))]


@pytest.fixture
def gapped(factory: Any, tmp_path: Path) -> str:
    """A file collection with partitions Jan (124 rows), Mar (124) and Apr (36) 2024."""
    url = f"file://{tmp_path}/col"
    factory.create(url).insert(factory.data(_times(), seed=2))
    return url


# -- Collection -----------------------------------------------------------------------------------
def test_collection_repr_has_the_partition_count_and_size(gapped: str) -> None:
    col = zc.open_collection(gapped)
    text = repr(col)
    size = format_bytes(284 * ROW_BYTES + 3 * 2)  # and the immutable x_ac (int16)
    assert text == (
        f"<Collection {gapped!r} mode='r' partitioning=Date(('time',), resolution='M') "
        f"partitions=3 size={size}>"
    )
    rw = zc.open_collection(gapped, mode="rw")
    rw.drop_partitions("month == 1")
    assert "partitions=2 size=" in repr(rw)  # after a write: the new catalog


def test_collection_repr_never_raises(gapped: str) -> None:
    col = zc.open_collection(gapped)

    async def inside_a_loop() -> str:  # a Jupyter cell: the sync API works there
        return repr(col)

    async def on_the_library_loop() -> str:  # where the sync API refuses to block
        return repr(col)

    from dask_zcollection._sync import sync

    assert "partitions=3 " in asyncio.run(inside_a_loop())
    assert "partitions=? size=?" in sync(on_the_library_loop())
    assert "partitions=3 " in repr(col)


# -- LazyCollection -------------------------------------------------------------------------------
class _Checker(html.parser.HTMLParser):
    """Checks that every tag opened is closed, in order, and collects the text."""

    VOID: ClassVar[set[str]] = {"br", "meta", "img", "hr", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> str:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    return " ".join(checker.text)


def test_lazy_repr_html_in_xarray_style(gapped: str) -> None:
    lazy = zc.read_collection(gapped).filter("month >= 3")
    page = lazy._repr_html_()
    text = _parse(page)
    assert "<dask_zcollection.LazyCollection>" in text and gapped in text
    assert "2 selected of 3" in text
    assert "rows: 160" in " ".join(text.split())
    assert format_bytes(lazy.nbytes) in text
    assert "2024-03-01 .. 2024-04-09 18:00:00" in text
    # collapsible sections: variables open, partitions and attributes folded
    assert "<details open><summary>Variables (5)</summary>" in page
    assert "<details><summary>Partitions (2)</summary>" in page
    assert "<details><summary>Attributes (2)</summary>" in page
    for cell in ("data_01/ku/power", "(time, x_ac)", "float32", "datetime64[ns]", "fill 255"):
        assert cell in text, cell
    assert "immutable" in text  # x_ac
    assert "<summary>attrs (1)</summary>" in page and "units" in text  # ssh's attributes
    assert "year=2024/month=03" in text and "year=2024/month=01" not in text
    # a time range narrows the span shown; the text repr has it too
    ranged = lazy.filter(time=slice("2024-03-05", "2024-03-07T12:00"))
    assert "2024-03-05 .. 2024-03-07 12:00:00" in _parse(ranged._repr_html_())
    assert repr(ranged).endswith("time range:   2024-03-05 .. 2024-03-07 12:00:00")
    # names are escaped
    assert "<Date" not in page


def test_lazy_repr_html_of_an_empty_selection(gapped: str) -> None:
    lazy = zc.read_collection(gapped).filter("month == 2")
    text = _parse(lazy._repr_html_())
    assert "0 selected of 3" in text and "time range: -" in " ".join(text.split())
    assert "Partitions" not in text


def test_standalone_page_for_screenshots(gapped: str, tmp_path: Path) -> None:
    """The page the documentation's browser check loads: complete, self-contained HTML."""
    page = standalone_html(zc.read_collection(gapped), title="A collection")
    assert page.startswith("<!DOCTYPE html>") and "<title>A collection</title>" in page
    assert "<details>" not in page  # every section open for the screenshot
    assert "src=" not in page and "href=" not in page  # loads nothing
    (tmp_path / "repr.html").write_text(page)
    text = _parse(page)
    assert "3 selected of 3" in text and "year=2024/month=04" in text


# -- plot_partitions -------------------------------------------------------------------------------
def test_plot_partitions_is_a_timeline_with_gaps(gapped: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates as mdates

    lazy = zc.read_collection(gapped)
    ax = lazy.plot_partitions()
    bars = ax.patches
    assert len(bars) == 3
    spans = [
        (mdates.num2date(b.get_x()).date().isoformat(), mdates.num2date(b.get_x() + b.get_width()))
        for b in bars
    ]
    assert [s[0] for s in spans] == ["2024-01-01", "2024-03-01", "2024-04-01"]
    # February is blank: January's bar ends on Jan 31, March's starts on Mar 1
    assert spans[0][1].strftime("%Y-%m-%d %H") == "2024-01-31 18"
    # coloured by rows: Jan and Mar (124 rows) alike, April (36) another colour
    colours = [tuple(b.get_facecolor()) for b in bars]
    assert colours[0] == colours[1] != colours[2]
    assert ax.figure.axes[-1].get_ylabel() == "rows"  # the colour bar
    assert ax.get_xlabel() == "time"
    by_bytes = lazy["ssh"].plot_partitions(by="bytes")
    assert by_bytes.figure.axes[-1].get_ylabel() == "bytes (uncompressed)"
    # given axes are drawn on and returned
    import matplotlib.pyplot as plt

    _, mine = plt.subplots()
    assert lazy.filter("month == 1").plot_partitions(ax=mine) is mine
    assert len(mine.patches) == 1
    plt.close("all")
    with pytest.raises(InvalidInputError, match="'rows' or 'bytes'"):
        lazy.plot_partitions(by="colour")


def test_plot_partitions_without_matplotlib(gapped: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"dask_zcollection\[plot\]"):
        zc.read_collection(gapped).plot_partitions()


# -- visualize -----------------------------------------------------------------------------------
def test_visualize_without_graphviz_names_the_extra(
    gapped: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match=r"pip install 'dask_zcollection\[graphviz\]'"):
        zc.read_collection(gapped).visualize()


def test_visualize_without_the_dot_program(
    gapped: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` there
    with pytest.raises(ImportError, match="Graphviz's dot program"):
        zc.read_collection(gapped).visualize(filename=str(tmp_path / "g"))


def test_visualize_draws_the_optimised_graph(gapped: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from dask import dot

    drawn: list[Any] = []
    monkeypatch.setattr(dot, "graphviz_to_file", lambda g, filename, fmt: drawn.append(g) or g)
    lazy = zc.read_collection(gapped).map_partitions(_same).filter("month == 3")
    assert lazy.visualize(filename=None) is drawn[0]
    source = drawn[0].source
    # Unoptimised: a filter task over 3 maps over 3 reads (+ the immutable group's).
    # Optimised: the filter pushed below the map and absorbed by the read.
    assert source.count('label="zc-read"') == 2  # March and the immutable group
    assert source.count('label="zc-map"') == 1
    assert "zc-filter" not in source


def _same(ds: Any) -> Any:
    return ds


# -- no log noise ---------------------------------------------------------------------------------
@pytest.mark.icechunk
def test_opening_icechunk_prints_nothing(
    factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    url = f"icechunk://{tmp_path}/repo"
    factory.create(url).insert(factory.data(_times()[:8]))
    monkeypatch.delenv("ICECHUNK_LOG", raising=False)
    # Repositories are cached per process: forget them so that this one is opened anew.
    monkeypatch.setattr(_icechunk, "_REPOS", {})
    capfd.readouterr()
    col = zc.open_collection(url)
    ds = zc.read_collection(url).compute()
    assert ds is not None and ds["time"].values.size == 8
    assert col.partitions() == ["year=2024/month=01"]
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_time_range_unknown_after_map_partitions(gapped: str) -> None:
    lazy = zc.read_collection(gapped).map_partitions(_same).filter(time=slice("2024-03-02", None))
    assert repr(lazy).endswith("time range:   unknown")  # the map may change the rows
    assert "unknown" in _parse(lazy._repr_html_())
