"""A view's drop committed in a damaged catalog version stays a drop after ``View.repair()``.

Before: repair set the damaged version aside and the view fell back to the version
below, which still names the dropped partition (garbage collection is halted while
the newest version is damaged, so its data is there): the dropped partition came
back. Now repair reads the garbage records and commits the drop again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import numpy
import pytest
from conftest import Factory

import dask_zcollection as dzc
from dask_zcollection._sync import sync
from dask_zcollection.catalog import CatalogLog
from tests.view.test_view import TIMES, VARIABLES, anomalies, month_rows


@pytest.fixture
def base(tmp_path: Path, factory: Factory) -> tuple[str, dict[str, numpy.ndarray]]:
    """A file:// base collection over three months, and its data."""
    url = f"file://{tmp_path}/base"
    data = factory.data(TIMES, nested=False)
    factory.create(url, nested=False).insert(data)
    return url, data


def test_a_view_drop_in_a_damaged_version_stays_dropped(tmp_path: Path, base: Any) -> None:
    url, data = base
    view_url = f"file://{tmp_path}/view"
    with dask.config.set({"zcollection.retention": 3600}):  # readers in flight keep it
        view = dzc.create_view(view_url, base=url, variables=VARIABLES)
        view.update(anomalies, filters="month <= 2", variables=["ssh", "quality"])
        assert view.drop_partitions("month == 2") == ["year=2024/month=02"]
        newest = sorted((tmp_path / "view" / "_catalog").glob("v*.zcat"))[-1]
        newest.write_bytes(newest.read_bytes()[:20])
        report = view.repair()
    assert [a.path for a in report.quarantined] == [f"_catalog/{newest.name}"]
    assert [a.path for a in report.dropped] == ["year=2024/month=02"]
    assert "garbage record" in report.dropped[0].reason
    # Numbered past the damaged version: a number is never taken twice.
    assert report.catalog is not None
    assert report.catalog.version > int(newest.stem[1:])
    assert sync(CatalogLog(view.aio.spec).latest()).version == report.catalog.version
    assert dzc.open_view(view_url).partitions() == ["year=2024/month=01"]
    got = dzc.read_view(view_url).compute()
    jan = month_rows(1)
    numpy.testing.assert_array_equal(
        got["ssh_anom"].values[jan], (data["ssh"] - numpy.float32(1.5)).astype("float32")[jan]
    )
    assert (got["flag"].values[~jan] == -1).all()


def test_a_view_rewrite_in_a_damaged_version_is_not_dropped(tmp_path: Path, base: Any) -> None:
    """A second update of January (a new path beside the first, which it retires) in the
    damaged version is a rewrite, not a drop: repair keeps the version below's January
    (the next update computes it again), and drops nothing."""
    url, data = base
    view_url = f"file://{tmp_path}/view"
    with dask.config.set({"zcollection.retention": 3600}):
        view = dzc.create_view(view_url, base=url, variables=VARIABLES)
        view.update(anomalies, filters="month == 1", variables=["ssh", "quality"])
        view.update(
            lambda ds: {"flag": numpy.full(len(ds["time"].values), 3, "int8")},
            filters="month == 1",
            variables=["time"],
        )
        newest = sorted((tmp_path / "view" / "_catalog").glob("v*.zcat"))[-1]
        newest.write_bytes(newest.read_bytes()[:20])
        report = view.repair()
    assert report.dropped == ()
    assert dzc.open_view(view_url).partitions() == ["year=2024/month=01"]
    got = dzc.read_view(view_url).compute()
    jan = month_rows(1)
    numpy.testing.assert_array_equal(
        got["flag"].values[jan], (data["quality"] > 100).astype("int8")[jan]
    )


def test_a_view_repair_whose_commit_fails_keeps_the_damage_for_the_next_repair(
    tmp_path: Path, base: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The damaged object goes only once the repair's commit has landed.

    Before: ``View.repair()`` deleted the damaged version, then committed the drop it
    held; a failed commit left no trace of the damage, and the next repair let
    February (dropped in the damaged version) come back.
    """
    from dask_zcollection.catalog._transaction import Transaction

    url, _ = base
    view_url = f"file://{tmp_path}/view"
    commit = Transaction.commit

    async def failing(self: Transaction, *args: Any, **kwargs: Any) -> Any:
        raise OSError("the machine went away at the commit")

    with dask.config.set({"zcollection.retention": 3600}):
        view = dzc.create_view(view_url, base=url, variables=VARIABLES)
        view.update(anomalies, filters="month <= 2", variables=["ssh", "quality"])
        assert view.drop_partitions("month == 2") == ["year=2024/month=02"]
        newest = sorted((tmp_path / "view" / "_catalog").glob("v*.zcat"))[-1]
        newest.write_bytes(newest.read_bytes()[:20])
        monkeypatch.setattr(Transaction, "commit", failing)
        with pytest.raises(OSError, match="went away"):
            view.repair()
        monkeypatch.setattr(Transaction, "commit", commit)
        assert newest.exists()  # still there: the next repair sees it
        assert len(newest.read_bytes()) == 20  # untouched
        report = view.repair()
    assert not newest.exists()
    assert [a.path for a in report.quarantined] == [f"_catalog/{newest.name}"]
    assert [a.path for a in report.dropped] == ["year=2024/month=02"]
    assert report.catalog is not None
    assert report.catalog.version > int(newest.stem[1:])
    assert dzc.open_view(view_url).partitions() == ["year=2024/month=01"]


def test_a_view_repair_with_nothing_to_drop_numbers_past_the_damage(
    tmp_path: Path, base: Any
) -> None:
    """With no drop to commit again, repair still commits (the version below, unchanged)
    past the damaged one before deleting it: its number is never taken twice."""
    url, _ = base
    view_url = f"file://{tmp_path}/view"
    view = dzc.create_view(view_url, base=url, variables=VARIABLES)
    view.update(anomalies, filters="month == 1", variables=["ssh", "quality"])
    view.update(anomalies, filters="month == 2", variables=["ssh", "quality"])
    newest = sorted((tmp_path / "view" / "_catalog").glob("v*.zcat"))[-1]
    newest.write_bytes(b"\0" * 7)
    report = view.repair()
    assert report.dropped == ()
    assert [a.path for a in report.quarantined] == [f"_catalog/{newest.name}"]
    assert report.catalog is not None
    assert report.catalog.version == int(newest.stem[1:]) + 1
    assert not newest.exists()
    assert report.catalog.paths == ("year=2024/month=01",)
    assert dzc.open_view(view_url).partitions() == ["year=2024/month=01"]


def test_a_view_drop_killed_before_its_record_stays_dropped(
    tmp_path: Path, base: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view's drop killed between its catalog put and its garbage record, whose version
    is then damaged in its body (its header still names the drop's transaction):
    ``View.repair()`` recovers the dead writer first, which records what its lease says
    the commit retired, then commits the drop again. Before: February came back."""
    from dask_zcollection.catalog._transaction import Transaction

    url, _ = base
    view_url = f"file://{tmp_path}/view"

    async def dies(*args: object, **kwargs: object) -> None:
        return None

    with dask.config.set({"zcollection.retention": 3600}):
        view = dzc.create_view(view_url, base=url, variables=VARIABLES)
        view.update(anomalies, filters="month <= 2", variables=["ssh", "quality"])
        with monkeypatch.context() as patch:
            patch.setattr(Transaction, "_clean_up", dies)  # killed after its put
            assert view.drop_partitions("month == 2") == ["year=2024/month=02"]
        newest = sorted((tmp_path / "view" / "_catalog").glob("v*.zcat"))[-1]
        raw = newest.read_bytes()
        newest.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))  # the body's CRC fails
        report = view.repair(force=True)  # no writer runs: the dead one is recovered now
    assert len(report.recovered) == 1
    assert [a.path for a in report.quarantined] == [f"_catalog/{newest.name}"]
    assert [a.path for a in report.dropped] == ["year=2024/month=02"]
    assert dzc.open_view(view_url).partitions() == ["year=2024/month=01"]
