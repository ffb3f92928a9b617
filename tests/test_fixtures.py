"""Collections written by the reference implementation read back exactly (and stay writable)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy
import pytest
from conftest import assert_arrays_identical

import dask_zcollection as zc

NAMES = ["date_monthly", "sequence"]

SEQUENCE_ORDER = [f"cycle_number={c}/pass_number={p}" for c in (1, 2, 10) for p in (1, 2, 3)]
MONTHS = [f"year=2024/month={m:02d}" for m in (1, 2, 3, 4)]


def expected(fixtures_dir: Path, name: str) -> dict[str, numpy.ndarray]:
    with numpy.load(fixtures_dir / f"{name}.expected.npz") as npz:
        return {key.replace("__", "/"): npz[key] for key in npz.files}


def assert_matches(ds: zc.Dataset, want: dict[str, numpy.ndarray]) -> None:
    assert ds is not None
    assert sorted(p for p, _ in ds.walk()) == sorted(want)
    for path, value in want.items():
        assert_arrays_identical(ds[path].values, value, path)


def tree_digest(root: Path) -> str:
    """A digest of every file (path and content) below ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def copy_of(fixtures_dir: Path, tmp_path: Path):
    """Copy a fixture collection to a temporary folder (the originals stay read-only)."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(fixtures_dir / name, dst)
        return dst

    return copy


@pytest.mark.parametrize("name", NAMES)
def test_query_equals_npz(fixtures_dir: Path, name: str) -> None:
    before = tree_digest(fixtures_dir / name)
    want = expected(fixtures_dir, name)
    for url in (str(fixtures_dir / name), f"file://{fixtures_dir / name}"):
        col = zc.open_collection(url)
        assert_matches(col.query(), want)
    assert tree_digest(fixtures_dir / name) == before  # reading wrote nothing


def test_date_monthly_details(fixtures_dir: Path) -> None:
    col = zc.open_collection(fixtures_dir / "date_monthly")
    assert col.partitions() == MONTHS
    assert col.axis == "time"
    assert col.partitioning == zc.partitioning.Date(("time",), resolution="M")
    catalog = col.catalog()
    assert catalog.version == 0 and not catalog.has_stats  # listed from _catalog/state.json
    assert catalog.paths == tuple(MONTHS)

    ds = col.query()
    assert ds.attrs == {"title": "fixture written by upstream zcollection v3"}
    assert ds["ssh"].attrs == {"units": "m", "long_name": "sea surface height"}
    assert numpy.isnan(ds["ssh"].fill_value)
    assert ds["quality"].fill_value == 255 and ds["quality"].fill_value.dtype == numpy.uint8
    assert ds["data_01/ku"].attrs == {"band": "Ku"}
    assert ds["data_01/ku/power"].dimensions == ("time", "range")
    assert ds["x_ac"].dimensions == ("x_ac",)
    assert col.schema["x_ac"].immutable
    assert numpy.isnan(ds["ssh"].values).any()  # the NaNs of the fixture survive


def test_date_monthly_filters(fixtures_dir: Path) -> None:
    col = zc.open_collection(fixtures_dir / "date_monthly")
    want = expected(fixtures_dir, "date_monthly")
    months = want["time"].astype("datetime64[M]").astype("int64") % 12 + 1
    ds = col.query(filters="month in (2, 3)")
    keep = numpy.isin(months, [2, 3])
    assert_matches(ds, {k: (v if k == "x_ac" else v[keep]) for k, v in want.items()})
    only = col.query(filters={"month": 4}, variables=["ssh", "data_01/ku/power"])
    assert sorted(p for p, _ in only.walk()) == ["data_01/ku/power", "ssh"]
    assert_arrays_identical(only["ssh"].values, want["ssh"][months == 4], "ssh")
    assert col.partitions({"year": 2024, "month": 1}) == ["year=2024/month=01"]
    assert col.query(filters="year == 2023") is None


def test_sequence_order_is_numeric(fixtures_dir: Path) -> None:
    col = zc.open_collection(fixtures_dir / "sequence")
    assert col.partitions() == SEQUENCE_ORDER  # 1, 2, 10: not text order
    catalog = col.catalog()
    assert catalog.version == 0 and not catalog.has_stats  # no catalog: listed by a walk
    ds = col.query()
    cycles = ds["cycle_number"].values
    assert cycles.tolist() == sorted(cycles.tolist())
    assert numpy.unique(cycles).tolist() == [1, 2, 10]
    want = expected(fixtures_dir, "sequence")
    ten = col.query(filters="cycle_number == 10 and pass_number >= 2")
    keep = (want["cycle_number"] == 10) & (want["pass_number"] >= 2)
    assert_matches(ten, {k: v[keep] for k, v in want.items()})
    assert col.partitions("cycle_number > 1") == SEQUENCE_ORDER[3:]


@pytest.mark.parametrize("name", NAMES)
def test_fixture_is_read_only_through_mode_r(fixtures_dir: Path, copy_of, name: str) -> None:
    path = copy_of(name)
    before = tree_digest(path)
    col = zc.open_collection(path, mode="r")
    ds = col.query()
    data = {p: v.values[:1] for p, v in ds.walk() if p != "x_ac"}
    with pytest.raises(zc.ReadOnlyError):
        col.insert(data)
    with pytest.raises(PermissionError):
        col.drop_partitions()
    assert tree_digest(path) == before


def _rows_per_partition(col: zc.Collection) -> list[int]:
    return [
        len(col.query(filters=_key_filter(p))[col.aio.axis_variable].values)
        for p in col.partitions()
    ]


def _key_filter(path: str) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=") for part in path.split("/"))}


def _assert_repaired_equals_walk(col: zc.Collection, root: Path) -> None:
    repaired = col.repair().catalog
    depth = len(col.partitioning.keys)
    found = [
        p.parent.relative_to(root).as_posix()
        for p in root.glob("/".join(["*"] * depth) + "/zarr.json")
    ]
    found = [p for p in found if all("=" in x and not x.startswith("_") for x in p.split("/"))]

    def key(path: str) -> tuple[int, ...]:
        return tuple(int(x.split("=")[1].partition("@")[0]) for x in path.split("/"))

    walked = sorted(found, key=key)
    assert list(repaired.paths) == walked
    assert repaired.has_stats
    assert [col.partitioning.encode(repaired.key_tuple(i)) for i in range(len(repaired))] == [
        p.partition("@")[0] for p in walked
    ]
    assert repaired.rows.tolist() == _rows_per_partition(col)
    reopened = zc.open_collection(root).catalog()
    assert reopened.version == repaired.version
    assert reopened.paths == repaired.paths
    assert reopened.rows.tolist() == repaired.rows.tolist()
    assert reopened.axis_min.tolist() == repaired.axis_min.tolist()


def test_insert_into_reference_date_collection(fixtures_dir: Path, copy_of) -> None:
    path = copy_of("date_monthly")
    want = expected(fixtures_dir, "date_monthly")
    col = zc.open_collection(path, mode="rw")
    n = 5
    new = {
        "time": numpy.array(
            ["2024-05-03", "2024-05-01", "2024-01-31T23:00", "2024-05-02", "2024-05-01T12:00"],
            "datetime64[ns]",
        ),
        "ssh": numpy.arange(n * 8, dtype="float32").reshape(n, 8),
        "quality": numpy.arange(n, dtype="uint8"),
        "x_ac": want["x_ac"],  # the stored immutable value: accepted
        "data_01/ku/power": numpy.ones((n, 4), "float32"),
    }
    assert col.insert(new, merge="concat") == ["year=2024/month=01", "year=2024/month=05"]
    assert col.partitions() == [*MONTHS, "year=2024/month=05"]

    ds = zc.open_collection(path).query()
    rows = {k: numpy.concatenate([want[k], new[k]]) for k in want if k != "x_ac"}
    order = numpy.argsort(rows["time"], kind="stable")
    assert_matches(ds, {**{k: v[order] for k, v in rows.items()}, "x_ac": want["x_ac"]})
    # The reference immutable group is kept as is, not rewritten.
    assert (path / "_immutable" / "x_ac" / "zarr.json").exists()
    assert not [p for p in path.iterdir() if p.name.startswith("_immutable@")]

    bad = {**new, "x_ac": want["x_ac"] + 1}
    with pytest.raises(zc.SchemaError, match="x_ac"):
        col.insert(bad)

    _assert_repaired_equals_walk(col, path)
    assert_matches(
        zc.open_collection(path).query(),
        {**{k: v[order] for k, v in rows.items()}, "x_ac": want["x_ac"]},
    )


def test_insert_into_reference_sequence_collection(fixtures_dir: Path, copy_of) -> None:
    path = copy_of("sequence")
    want = expected(fixtures_dir, "sequence")
    col = zc.open_collection(f"file://{path}", mode="rw")
    new = {
        "cycle_number": numpy.array([3, 3, 2], "int16"),
        "pass_number": numpy.array([1, 1, 3], "int16"),
        "time": numpy.array(["2025-07-01T00:00:02", "2025-07-01", "2025-06-02"], "datetime64[ns]"),
        "swh": numpy.full((3, 6), 7.5),
    }
    written = col.insert(new, merge="concat")
    assert written == ["cycle_number=2/pass_number=3", "cycle_number=3/pass_number=1"]
    order = [*SEQUENCE_ORDER[:6], "cycle_number=3/pass_number=1", *SEQUENCE_ORDER[6:]]
    assert col.partitions() == order

    ds = zc.open_collection(path).query()
    assert ds["cycle_number"].values.tolist() == sorted(ds["cycle_number"].values.tolist())
    assert len(ds["time"].values) == len(want["time"]) + 3
    part = col.query(filters={"cycle_number": 2, "pass_number": 3})
    stored = (want["cycle_number"] == 2) & (want["pass_number"] == 3)
    times = numpy.concatenate([want["time"][stored], new["time"][2:]])
    assert_arrays_identical(part["time"].values, numpy.sort(times, kind="stable"), "time")
    three = col.query(filters={"cycle_number": 3})
    assert three["time"].values.tolist() == sorted(new["time"][:2].tolist())
    assert (three["swh"].values == 7.5).all()

    _assert_repaired_equals_walk(col, path)

    dropped = col.drop_partitions("cycle_number == 10")
    assert dropped == SEQUENCE_ORDER[6:]
    assert not (path / "cycle_number=10" / "pass_number=1").exists()
    assert zc.open_collection(path).partitions() == order[:7]


def test_repair_of_an_untouched_copy(fixtures_dir: Path, copy_of) -> None:
    path = copy_of("date_monthly")
    col = zc.open_collection(path, mode="rw")
    repaired = col.repair().catalog
    assert repaired.version >= 1
    assert zc.open_collection(path).catalog().version == repaired.version
    assert repaired.paths == tuple(MONTHS)
    assert repaired.immutable == "_immutable"
    want = expected(fixtures_dir, "date_monthly")
    months = want["time"].astype("datetime64[M]").astype("int64") % 12 + 1
    assert repaired.rows.tolist() == [int((months == m).sum()) for m in (1, 2, 3, 4)]
    for i, m in enumerate((1, 2, 3, 4)):
        assert repaired.axis_min[i] == want["time"][months == m].min()
        assert repaired.axis_max[i] == want["time"][months == m].max()
    assert_matches(zc.open_collection(path).query(), want)
