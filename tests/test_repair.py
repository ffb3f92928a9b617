"""``repair()`` never loses a commit, never drops or relabels readable data, and says what it did.

Issue 12: items 1 (repair racing writers lost 8 committed inserts), 6 (repair
retired an intact partition missing its group ``zarr.json``, retired every
partition after the configuration was edited, published a copied directory
under its new name) and 7 (a damaged catalog object blocked reads and repair;
a restored one made every insert spin forever; now reads fall back, writers
refuse until repair, and nothing the damaged version committed is lost).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection.catalog._log import version_key
from dask_zcollection.errors import CorruptedDataError, ZCollectionWarning


def _schema() -> zc.Schema:
    return (
        zc.Schema()
        .with_dimension("time", chunks=16)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="float64", dimensions=("time",))
        .build()
    )


def _create(path: Path) -> zc.Collection:
    return zc.create_collection(
        f"file://{path}",
        schema=_schema(),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), "M"),
    )


def _rows(month: int, n: int, start: float, offset_s: int = 0) -> dict[str, numpy.ndarray]:
    t0 = numpy.datetime64(f"2024-{month:02d}-01", "ns") + numpy.timedelta64(offset_s, "s")
    return {
        "time": t0 + numpy.arange(n) * numpy.timedelta64(1, "h"),
        "v": start + numpy.arange(n, dtype="float64"),
    }


def _values(path: Path) -> dict[str, list[float]]:
    ds = zc.open_collection(f"file://{path}").query()
    assert ds is not None
    return {"v": ds["v"].values.tolist(), "time": ds["time"].values.tolist()}


@pytest.fixture
def three_months(tmp_path: Path) -> Path:
    path = tmp_path / "col"
    col = _create(path)
    for m in (1, 2, 3):
        col.insert(_rows(m, 5, 10.0 * m))
    return path


# -- item 6: repair that destroys ----------------------------------------------------------------
def test_an_intact_partition_missing_its_group_metadata_is_rebuilt(three_months: Path) -> None:
    path = three_months
    before = _values(path)
    (path / "year=2024" / "month=02" / "zarr.json").unlink()
    col = zc.open_collection(f"file://{path}", mode="rw")
    dry = col.repair(dry_run=True)
    assert dry.dry_run and [a.path for a in dry.rebuilt] == ["year=2024/month=02"]
    assert not (path / "year=2024" / "month=02" / "zarr.json").exists()  # dry: nothing changed
    report = col.repair()
    assert [a.path for a in report.rebuilt] == ["year=2024/month=02"]
    assert "zarr.json missing" in report.rebuilt[0].reason
    assert not report.dropped and not report.quarantined and not report.adopted
    meta = json.loads((path / "year=2024" / "month=02" / "zarr.json").read_text())
    assert meta["attributes"]["_zc_partition_key"] == [["year", 2024], ["month", 2]]
    col.vacuum(older_than=0)
    assert _values(path) == before  # 5 intact rows kept (they were retired, then vacuumed)
    assert col.repair().changed is False  # a second repair finds nothing to do


def test_a_copied_directory_is_quarantined_not_published(three_months: Path) -> None:
    path = three_months
    before = _values(path)
    shutil.copytree(path / "year=2024" / "month=03", path / "year=2024" / "month=07")
    col = zc.open_collection(f"file://{path}", mode="rw")
    report = col.repair()
    assert [a.path for a in report.quarantined] == ["year=2024/month=07"]
    assert "year=2024/month=03" in report.quarantined[0].reason
    assert col.partitions() == [f"year=2024/month={m:02d}" for m in (1, 2, 3)]
    assert _values(path) == before
    col.vacuum(older_than=0)
    kept = list((path / "_quarantine").glob("*/year=2024/month=07/v/zarr.json"))
    assert len(kept) == 1  # vacuum never deletes the quarantine
    assert not (path / "year=2024" / "month=07").exists()  # the original was retired


def test_a_renamed_directory_is_never_published_under_its_new_name(three_months: Path) -> None:
    path = three_months
    (path / "year=2024" / "month=03").rename(path / "year=2024" / "month=09")
    col = zc.open_collection(f"file://{path}", mode="rw")
    report = col.repair()
    assert [a.path for a in report.dropped] == ["year=2024/month=03"]
    assert [a.path for a in report.quarantined] == ["year=2024/month=09"]
    assert "month=09" not in " ".join(col.partitions())
    # The data is kept, under the quarantine, with its own key.
    (copy,) = (path / "_quarantine").glob("*/year=2024/month=09")
    meta = json.loads((copy / "zarr.json").read_text())
    assert meta["attributes"]["_zc_partition_key"] == [["year", 2024], ["month", 3]]


def test_an_edited_configuration_is_refused_and_nothing_changes(three_months: Path) -> None:
    path = three_months
    before = _values(path)
    config = json.loads((path / "_zcollection.json").read_text())
    text = json.dumps(config)
    assert '"M"' in text
    (path / "_zcollection.json").write_text(text.replace('"M"', '"D"'))
    catalogs = sorted(p.name for p in (path / "_catalog").iterdir())
    col = zc.open_collection(f"file://{path}", mode="rw")
    with pytest.raises(CorruptedDataError, match="edited"):
        col.repair()
    assert sorted(p.name for p in (path / "_catalog").iterdir()) == catalogs
    (path / "_zcollection.json").write_text(text)
    assert _values(path) == before


def test_an_uncommitted_version_is_quarantined(three_months: Path) -> None:
    path = three_months
    before = _values(path)
    src = path / "year=2024" / "month=01"
    stray = path / "year=2024" / "month=01@ffffffffffffffffffff"
    shutil.copytree(src, stray)
    meta = json.loads((stray / "zarr.json").read_text())
    meta["attributes"]["_zc_txn"] = "ffffffffffffffffffff"  # newer than the catalog
    (stray / "zarr.json").write_text(json.dumps(meta))
    report = zc.open_collection(f"file://{path}", mode="rw").repair()
    assert [a.path for a in report.quarantined] == [stray.relative_to(path).as_posix()]
    assert "unnamed version" in report.quarantined[0].reason
    assert _values(path) == before


# -- item 7: corrupt metadata ---------------------------------------------------------------------
def _newest(path: Path) -> Path:
    return sorted((path / "_catalog").glob("v*.zcat"))[-1]


def _objects(path: Path) -> list[str]:
    """Every file of the collection (what a refused write must leave unchanged)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("damage", ["truncated", "bad-magic", "zero-bytes", "bit-flip", "v999"])
def test_a_damaged_catalog_version_falls_back_for_reads_refuses_writes_until_repair(
    three_months: Path, damage: str
) -> None:
    path = three_months
    before = _values(path)
    newest = _newest(path)
    data = newest.read_bytes()
    if damage == "v999":
        damaged = path / "_catalog" / "v000000000999.zcat"
        damaged.write_bytes(b"garbage")
    else:
        damaged = newest
        newest.write_bytes(
            {
                "truncated": data[: len(data) // 2],
                "bad-magic": b"XXXXXX" + data[6:],
                "zero-bytes": b"",
                "bit-flip": data[:-5] + bytes([data[-5] ^ 0x10]) + data[-4:],
            }[damage]
        )
    with pytest.warns(ZCollectionWarning, match="damaged"):
        got = _values(path)
    if damage == "v999":
        assert got == before
    else:  # the previous version: the third month's insert is not visible
        assert got["v"] == before["v"][:10]
    col = zc.open_collection(f"file://{path}", mode="rw")
    # A commit on the version below would lose the third month: refused, nothing written.
    objects = _objects(path)
    with pytest.raises(CorruptedDataError, match=rf"{damaged.name}.*Run repair\(\)"):
        col.insert(_rows(4, 2, 40.0))
    assert _objects(path) == objects
    report = col.repair()
    assert [a.path for a in report.quarantined] == [version_key(int(damaged.name[1:13]))]
    if damage != "v999":
        # The third month's partition, whose commit was in the damaged version, is adopted.
        assert [a.path for a in report.adopted] == ["year=2024/month=03"]
    assert not damaged.exists()
    assert list((path / "_quarantine").glob(f"*/_catalog/{damaged.name}"))
    col.insert(_rows(4, 2, 40.0))
    assert _values(path)["v"] == before["v"] + [40.0, 41.0]


def test_a_repair_whose_commit_fails_keeps_the_damage_for_the_next_repair(
    three_months: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The damaged object goes only once repair's commit has landed.

    Deleted before, a failed commit left no trace of the damage: the next
    repair quarantined the third month (a group no catalog names) instead of
    adopting it.
    """
    from dask_zcollection.catalog._transaction import Transaction

    path = three_months
    before = _values(path)
    damaged = _newest(path)
    damaged.write_bytes(b"")
    col = zc.open_collection(f"file://{path}", mode="rw")
    commit = Transaction.commit

    async def failing(self: Transaction, *args: Any, **kwargs: Any) -> Any:
        raise OSError("the machine went away at the commit")

    monkeypatch.setattr(Transaction, "commit", failing)
    with pytest.raises(OSError, match="went away"):
        col.repair()
    monkeypatch.setattr(Transaction, "commit", commit)
    assert damaged.exists()  # still there: the next repair sees it
    with pytest.warns(ZCollectionWarning, match="damaged"):
        assert _values(path)["v"] == before["v"][:10]
    report = col.repair()
    assert [a.path for a in report.adopted] == ["year=2024/month=03"]
    assert [a.path for a in report.quarantined] == [version_key(int(damaged.name[1:13]))]
    assert not damaged.exists()
    assert _values(path) == before


def test_a_restored_catalog_version_never_makes_writers_spin(three_months: Path) -> None:
    path = three_months
    versions = sorted((path / "_catalog").glob("v*.zcat"))
    # A restore from a backup: an older version's bytes under the newest name.
    versions[-1].write_bytes(versions[-2].read_bytes())
    col = zc.open_collection(f"file://{path}", mode="rw")
    t0 = time.monotonic()
    with pytest.raises(CorruptedDataError, match="holds version"):
        col.insert(_rows(5, 1, 50.0))
    assert time.monotonic() - t0 < 30
    report = col.repair()
    assert [a.path for a in report.quarantined] == [f"_catalog/{versions[-1].name}"]
    assert [a.path for a in report.adopted] == ["year=2024/month=03"]
    col.insert(_rows(5, 1, 50.0))
    assert len(_values(path)["v"]) == 16


def test_every_catalog_version_damaged_repair_rebuilds_from_the_tree(three_months: Path) -> None:
    path = three_months
    before = _values(path)
    for p in (path / "_catalog").glob("v*.zcat"):
        p.write_bytes(b"\0" * 10)
    with pytest.warns(ZCollectionWarning, match="damaged"):
        assert _values(path) == before  # listed by a walk
    col = zc.open_collection(f"file://{path}", mode="rw")
    report = col.repair()
    assert sorted(a.path for a in report.adopted) == [f"year=2024/month={m:02d}" for m in (1, 2, 3)]
    assert report.catalog is not None and report.catalog.rows.tolist() == [5, 5, 5]
    assert report.catalog.version == 5  # past the 4 damaged ones: never a number twice
    assert _values(path) == before  # no warning: the damaged versions are quarantined


# -- item 1: repair racing writers ----------------------------------------------------------------
_WRITER = """
import sys, time, numpy
import dask_zcollection as zc
from dask_zcollection.errors import ConflictError
url, wid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
col = zc.open_collection(url, mode="rw")
for b in range(n):
    # Two partitions per batch (months 1 and 2), distinct times per writer and batch.
    t = numpy.array(
        [numpy.datetime64(f"2024-0{m}-01", "ns") + numpy.timedelta64(60 * (100 * wid + b), "s")
         for m in (1, 2)]
    )
    data = {"time": t, "v": numpy.array([1000.0 * wid + b] * 2)}
    while True:
        try:
            col.insert(data, merge="concat")
            break
        except ConflictError:
            time.sleep(0.01)
    print(b, flush=True)
"""

_REPAIRER = """
import sys, time
import dask_zcollection as zc
from dask_zcollection.errors import ConflictError
col = zc.open_collection(sys.argv[1], mode="rw")
deadline = time.monotonic() + float(sys.argv[2])
n = conflicts = 0
while time.monotonic() < deadline:
    try:
        col.repair()
        n += 1
    except ConflictError:
        conflicts += 1
print(n, conflicts, flush=True)
"""


def test_repair_racing_writers_loses_no_commit(tmp_path: Path) -> None:
    path = tmp_path / "col"
    _create(path).insert(_rows(1, 1, -1.0, offset_s=-3600))
    url = f"file://{path}"
    batches = 8
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, str(w), str(batches)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(2)
    ]
    repairer = subprocess.run(
        [sys.executable, "-c", _REPAIRER, url, "6"], capture_output=True, text=True, timeout=300
    )
    outs = [w.communicate(timeout=300) for w in writers]
    for w, (out, err) in zip(writers, outs, strict=True):
        assert w.returncode == 0, err
        assert out.split() == [str(b) for b in range(batches)]  # every insert returned
    assert repairer.returncode == 0, repairer.stderr
    repairs = int(repairer.stdout.split()[0])
    assert repairs >= 3, repairer.stdout
    got = _values(path)["v"]
    expected = sorted([-1.0] + [1000.0 * w + b for w in range(2) for b in range(batches)] * 2)
    assert sorted(got) == expected  # every committed row, once
    report = zc.open_collection(url, mode="rw").repair()
    assert not report.changed, report
    print(f"repairs: {repairer.stdout.strip()} (done, conflicts) during 2 x {batches} inserts")
