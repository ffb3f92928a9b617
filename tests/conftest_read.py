"""Shared helpers of the read-path tests (imported with ``pytest_plugins = ["conftest_read"]``).

- :class:`CountingMemoryStore` / :class:`CountingLocalStore` /
  :class:`CountingIcechunkStore`: store specs whose zarr store is a
  :class:`dask_zcollection.testing.CountingStore` recording the key of every
  read (``get``, ranged gets) under a tag, so a test can assert which objects a
  query touched.
- Builders of small collections for every partitioning kind (``date_M``,
  ``date_D``, ``sequence``, ``grouped``) with unique axis values, and the
  numpy reference of a read: rows ordered by partition key, then axis.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy
import pytest
from dask.callbacks import Callback
from zarr.abc.store import Store

import dask_zcollection as zc
from dask_zcollection.store import IcechunkStore, LocalStore, MemoryStore
from dask_zcollection.testing import CountingStore, RequestCounter

# -- counting stores ---------------------------------------------------------------------------

_COUNTERS: dict[str, RequestCounter] = {}
_COUNTERS_LOCK = threading.Lock()


def _counter(tag: str) -> RequestCounter:
    with _COUNTERS_LOCK:
        return _COUNTERS.setdefault(tag, RequestCounter())


def reads(tag: str) -> list[str]:
    """Keys read through the counting stores tagged ``tag`` (in order)."""
    return _counter(tag).reads()


def reset_reads(tag: str) -> None:
    """Forget the reads recorded under ``tag``."""
    _counter(tag).reset()


@dataclasses.dataclass(frozen=True, slots=True)
class CountingMemoryStore(MemoryStore):
    """``memory://name`` whose reads are recorded under ``tag``."""

    tag: str = ""
    multiprocess_safe: ClassVar[bool] = False

    def _cache_key(self) -> tuple[Any, ...]:
        return (type(self).__name__, self.url, self.tag)

    def _open_store(self) -> Store:
        return CountingStore(MemoryStore._open_store(self), counter=_counter(self.tag))


@dataclasses.dataclass(frozen=True, slots=True)
class CountingLocalStore(LocalStore):
    """``file://root`` whose reads are recorded under ``tag``."""

    tag: str = ""

    def _cache_key(self) -> tuple[Any, ...]:
        return (type(self).__name__, self.url, self.tag)

    def _open_store(self) -> Store:
        return CountingStore(LocalStore._open_store(self), counter=_counter(self.tag))


@dataclasses.dataclass(frozen=True)
class CountingIcechunkStore(IcechunkStore):
    """``icechunk://path`` whose reads (of pinned snapshots) are recorded under ``tag``."""

    tag: str = ""

    def _cache_key(self) -> tuple[Any, ...]:
        return (*IcechunkStore._cache_key(self), self.tag)

    def _open_store(self) -> Store:
        return CountingStore(IcechunkStore._open_store(self), counter=_counter(self.tag))


def counting_spec(url: str) -> CountingMemoryStore | CountingLocalStore | CountingIcechunkStore:
    """A counting spec over the collection at ``url`` (``memory://``, ``file://``, Icechunk)."""
    tag = uuid.uuid4().hex
    reset_reads(tag)
    if url.startswith("icechunk"):
        spec = IcechunkStore.from_url(url, {})
        return CountingIcechunkStore(spec.location, spec.options, spec.branch, tag=tag)
    if url.startswith("memory://"):
        return CountingMemoryStore(url[len("memory://") :], tag)
    return CountingLocalStore(url[len("file://") :] if url.startswith("file://") else url, tag)


def variable_of_key(key: str, variables: Iterable[str]) -> str | None:
    """The variable path a store key belongs to (``year=2024/month=01/ssh/c/0/0`` -> ``ssh``)."""
    parts = key.split("/")
    # Drop the partition path (``name=value`` components) or the immutable group.
    while parts and ("=" in parts[0] or parts[0].startswith("_immutable")):
        parts = parts[1:]
    rest = "/".join(parts)
    for v in sorted(variables, key=len, reverse=True):
        if rest == v or rest.startswith(v + "/"):
            return v
    return None


def is_chunk_key(key: str) -> bool:
    """Whether a store key holds array data (not metadata)."""
    return not key.endswith(("zarr.json", ".json", ".zcat")) and "/c/" in f"/{key}"


# -- collections for every partitioning kind ---------------------------------------------------

KINDS = ("date_M", "date_D", "sequence", "grouped")
N_X = 2


def _key_names(kind: str) -> tuple[str, ...]:
    return {
        "date_M": ("year", "month"),
        "date_D": ("year", "month", "day"),
        "sequence": ("cycle_number", "pass_number"),
        "grouped": ("cycle_number", "pass_number"),
    }[kind]


def axis_of(kind: str) -> str:
    """The partitioned dimension of ``kind``."""
    return "time" if kind.startswith("date") else "num_lines"


def schema_of(kind: str, chunks: int = 3) -> zc.Schema:
    """``time`` (axis variable), ``ssh`` (2-D), ``quality``; sequences add their key variables."""
    dim = axis_of(kind)
    schema = (
        zc.Schema()
        .with_dimension(dim, chunks=chunks)
        .with_dimension("x", size=N_X, chunks=N_X)
        .with_variable("time", dtype="datetime64[ns]", dimensions=(dim,))
        .with_variable("ssh", dtype="float64", dimensions=(dim, "x"), fill_value=numpy.nan)
        .with_variable("quality", dtype="uint8", dimensions=(dim,), fill_value=255)
    )
    if not kind.startswith("date"):
        schema = schema.with_variable("cycle_number", dtype="int16", dimensions=(dim,))
        schema = schema.with_variable("pass_number", dtype="int32", dimensions=(dim,))
    return schema.build()


def partitioning_of(kind: str) -> Any:
    """The partitioning of ``kind``."""
    if kind == "date_M":
        return zc.partitioning.Date(("time",), resolution="M")
    if kind == "date_D":
        return zc.partitioning.Date(("time",), resolution="D")
    if kind == "sequence":
        return zc.partitioning.Sequence(("cycle_number", "pass_number"), dimension="num_lines")
    return zc.partitioning.GroupedSequence(
        ("cycle_number", "pass_number"), dimension="num_lines", size=10, start=1
    )


def make_rows(kind: str, n: int, seed: int) -> dict[str, numpy.ndarray]:
    """``n`` rows in random order with unique ``time`` values."""
    rng = numpy.random.default_rng(seed)
    span_hours = {"date_M": 24 * 150, "date_D": 24 * 9}.get(kind, 24 * 400)
    hours = rng.choice(span_hours * 4, size=n, replace=False)  # quarter-hour steps, unique
    time = numpy.datetime64("2024-01-01", "ns") + hours.astype("int64") * numpy.timedelta64(15, "m")
    data = {
        "time": time.astype("datetime64[ns]"),
        "ssh": rng.standard_normal((n, N_X)),
        "quality": rng.integers(0, 255, n, dtype="uint8"),
    }
    if not kind.startswith("date"):
        data["cycle_number"] = rng.choice(numpy.array([1, 2, 10, 11], dtype="int16"), n)
        data["pass_number"] = rng.integers(1, 40, n).astype("int32")
    return data


def key_columns(kind: str, data: Mapping[str, numpy.ndarray]) -> dict[str, numpy.ndarray]:
    """Partition key components of every row, computed here with numpy (the reference)."""
    if kind.startswith("date"):
        t = data["time"]
        years = t.astype("datetime64[Y]")
        months = t.astype("datetime64[M]")
        out = {
            "year": years.astype("int64") + 1970,
            "month": (months - years.astype("datetime64[M]")).astype("int64") + 1,
        }
        if kind == "date_D":
            out["day"] = (t.astype("datetime64[D]") - months.astype("datetime64[D]")).astype(
                "int64"
            ) + 1
        return out
    cycles = data["cycle_number"].astype("int64")
    passes = data["pass_number"].astype("int64")
    if kind == "grouped":
        passes = 1 + ((passes - 1) // 10) * 10
    return {"cycle_number": cycles, "pass_number": passes}


def reference_order(kind: str, data: Mapping[str, numpy.ndarray]) -> numpy.ndarray:
    """Row order of a full read: partition key order (numeric), then axis order."""
    keys = key_columns(kind, data)
    columns = [data["time"]] + [keys[k] for k in reversed(_key_names(kind))]
    return numpy.lexsort(columns)


def take_rows(data: Mapping[str, numpy.ndarray], index: numpy.ndarray) -> dict[str, numpy.ndarray]:
    """Rows ``index`` of every variable."""
    return {k: v[index] for k, v in data.items()}


def create(url: Any, kind: str, chunks: int = 3) -> zc.Collection:
    """An empty collection of ``kind`` at ``url``."""
    return zc.create_collection(
        url, schema=schema_of(kind, chunks), axis=axis_of(kind), partitioning=partitioning_of(kind)
    )


def populate(
    url: Any, kind: str, data: Mapping[str, numpy.ndarray], batches: int = 1, chunks: int = 3
) -> zc.Collection:
    """Create a collection of ``kind`` and insert ``data`` in ``batches`` (``concat`` merges)."""
    col = create(url, kind, chunks)
    n = len(data["time"])
    bounds = numpy.linspace(0, n, batches + 1).astype(int)
    for a, b in itertools.pairwise(bounds):
        if b > a:
            col.insert({k: v[a:b] for k, v in data.items()}, merge="concat")
    return col


def assert_columns(ds: Any, expected: Mapping[str, numpy.ndarray], what: str = "") -> None:
    """``ds`` (a Dataset) holds exactly ``expected`` (values, dtypes, shapes; NaN == NaN)."""
    assert ds is not None, f"{what}: got None"
    got = {p: v.values for p, v in ds.walk()}
    assert sorted(got) == sorted(expected), f"{what}: variables {sorted(got)} != {sorted(expected)}"
    for path, value in expected.items():
        g = numpy.asarray(got[path])
        assert g.dtype == value.dtype, f"{what}/{path}: dtype {g.dtype} != {value.dtype}"
        assert g.shape == value.shape, f"{what}/{path}: shape {g.shape} != {value.shape}"
        assert numpy.array_equal(g, value, equal_nan=value.dtype.kind in "fcmM"), f"{what}/{path}"


@pytest.fixture
def memory_name() -> Iterator[str]:
    """A fresh in-memory collection name (forgotten afterwards)."""
    name = f"read-{uuid.uuid4().hex}"
    yield name
    MemoryStore.forget(name)


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    """URL of a collection that does not exist yet on the local filesystem."""
    return f"file://{tmp_path}/col"


class TaskLog(Callback):
    """Keys of the tasks run by the local scheduler."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[Any] = []

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        self.keys.append(key)

    def names(self) -> list[str]:
        return [k[0] if isinstance(k, tuple) else str(k) for k in self.keys]

    def reads(self) -> list[Any]:
        """Partition read tasks (the immutable read excluded)."""
        return [
            k
            for k in self.keys
            if isinstance(k, tuple)
            and k[0].startswith("zc-read-")
            and not k[0].endswith("-immutable")
        ]

    def immutable_reads(self) -> list[Any]:
        return [k for k in self.keys if isinstance(k, tuple) and k[0].endswith("-immutable")]
