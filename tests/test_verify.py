"""``Collection.verify()``: every chunk read and checked, damage reported by store key."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import numpy
import pytest
from conftest import Factory
from test_fixtures import NAMES, assert_matches, expected, tree_digest

import dask_zcollection as zc

JAN, FEB = "year=2024/month=01", "year=2024/month=02"


def two_months(factory: Factory, url: str) -> dict[str, numpy.ndarray]:
    """January (10 rows: 3 chunks of 4) and February (5 rows: 2 chunks), immutable and nested."""
    col = factory.create(url, schema=factory.schema().with_checksums(True))
    t = numpy.concatenate(
        [
            numpy.datetime64("2024-01-01", "ns") + numpy.arange(10) * numpy.timedelta64(1, "h"),
            numpy.datetime64("2024-02-01", "ns") + numpy.arange(5) * numpy.timedelta64(1, "h"),
        ]
    )
    data = factory.data(t)
    col.insert(data)
    return data


def flip(path: Path, pos: int = 1) -> None:
    raw = bytearray(path.read_bytes())
    raw[pos] ^= 0x20
    path.write_bytes(bytes(raw))


def test_clean_collection(tmp_path: Path, factory: Factory) -> None:
    two_months(factory, f"file://{tmp_path}/c")
    report = zc.open_collection(f"file://{tmp_path}/c").verify()
    assert isinstance(report, zc.VerifyReport)
    assert report.ok
    # 2 partitions + the immutable group; chunks: 4 partitioned variables x (3 + 2), 1 for x_ac.
    assert report.checked == 3
    assert report.chunks == 4 * (3 + 2) + 1
    assert report.damaged == () and report.unverifiable == ()
    assert repr(report) == "VerifyReport(ok=True, checked=3, chunks=21, damaged=0, unverifiable=0)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.checked = 0  # type: ignore[misc]


def test_lists_every_damaged_chunk(tmp_path: Path, factory: Factory) -> None:
    url = f"file://{tmp_path}/c"
    data = two_months(factory, url)
    root = tmp_path / "c"
    flip(root / JAN / "time" / "c" / "1")
    flip(root / FEB / "data_01" / "ku" / "power" / "c" / "0" / "0")
    flip(root / "_immutable" / "x_ac" / "c" / "0")
    (root / FEB / "quality" / "c" / "1").unlink()
    (root / JAN / "ssh" / "zarr.json").unlink()
    col = zc.open_collection(url)
    report = col.verify()
    assert not report.ok
    assert sorted(k for k, _ in report.damaged) == [
        "_immutable/x_ac/c/0",
        f"{JAN}/ssh/zarr.json",
        f"{JAN}/time/c/1",
        f"{FEB}/data_01/ku/power/c/0/0",
        f"{FEB}/quality/c/1",
    ]
    reasons = dict(report.damaged)
    assert "crc32c" in reasons[f"{JAN}/time/c/1"]
    assert "missing" in reasons[f"{FEB}/quality/c/1"]
    text = repr(report)
    assert text.startswith("VerifyReport(ok=False, checked=3, ")
    assert f"damaged      {FEB}/quality/c/1: " in text
    # Filters select partitions (the immutable group is checked with every partition only).
    only_feb = col.verify(filters="month == 2")
    assert only_feb.checked == 1
    assert sorted(k for k, _ in only_feb.damaged) == [
        f"{FEB}/data_01/ku/power/c/0/0",
        f"{FEB}/quality/c/1",
    ]
    # Reads of the damaged variables fail, naming the object; the others still read.
    with pytest.raises(zc.CorruptedDataError, match=f"{FEB}/quality/c/1"):
        col.query(filters="month == 2", variables=["quality"])
    ok = col.query(filters="month == 1", variables=["quality"])
    assert ok is not None
    assert numpy.array_equal(ok["quality"].values, data["quality"][:10])


def test_only_committed_rows_are_checked(tmp_path: Path, factory: Factory) -> None:
    """Chunks past a partition's committed rows (a failed append) are not data, not damage."""
    url = f"file://{tmp_path}/c"
    two_months(factory, url)
    root = tmp_path / "c" / FEB / "time"
    # A leftover chunk of an uncommitted append beyond the 5 committed rows: garbage.
    (root / "c" / "7").write_bytes(b"not a chunk")
    assert zc.open_collection(url).verify().ok


def test_async_twin(memory_url: str, factory: Factory) -> None:
    two_months(factory, memory_url)

    async def main() -> zc.VerifyReport:
        col = await zc.aio.open_collection(memory_url)
        return await col.verify(concurrency=1)

    report = asyncio.run(main())
    assert report.ok and report.checked == 3


@pytest.mark.parametrize("name", NAMES)
def test_reference_fixtures_are_unverifiable_not_damaged(
    fixtures_dir: Path, tmp_path: Path, name: str
) -> None:
    before = tree_digest(fixtures_dir / name)
    col = zc.open_collection(fixtures_dir / name)
    report = col.verify()
    assert report.ok
    paths = list(col.catalog().paths)
    immutable = ["_immutable"] if col.aio.io.immutable else []
    assert report.checked == len(paths) + len(immutable)
    assert [p for p, _ in report.unverifiable] == paths + immutable
    assert all("no record of written chunks" in why for _, why in report.unverifiable)
    assert_matches(col.query(), expected(fixtures_dir, name))
    assert tree_digest(fixtures_dir / name) == before  # verify wrote nothing
    # A codec failure in a reference chunk is still damage (zstd cannot decode it).
    copy = tmp_path / name
    shutil.copytree(fixtures_dir / name, copy)
    shard = next(p for p in sorted((copy / paths[0]).rglob("c/*")) if p.is_file())
    shard.write_bytes(b"\x00" * shard.stat().st_size)
    damaged = zc.open_collection(copy).verify()
    assert not damaged.ok
    assert all(k.startswith(paths[0]) for k, _ in damaged.damaged)
