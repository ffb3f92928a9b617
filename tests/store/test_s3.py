"""``s3://`` collections against a real S3 server on loopback (SeaweedFS, else moto).

The server is started once per session by the ``s3`` fixture of ``tests/conftest.py``;
every test works under its own ``s3://test/<uuid>`` prefix. Collections on S3 are
also tested by the ``store_url`` tests (``tests/test_api.py``...), the multi-process
races of ``tests/test_write_concurrency.py`` and the crash tests of
``tests/test_write_invariants.py``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import pickle
import threading
import uuid
from typing import Any, ClassVar

import numpy
import pytest
import zarr.storage
from conftest import Factory, s3_options, s3_prefix
from s3_server import S3Server

import dask_zcollection as zc
from dask_zcollection.store import FsspecStore, ObjectStore, StoreSpec, resolve_store
from dask_zcollection.testing import CountingStore, RequestCounter, StoreTests, run

pytestmark = pytest.mark.s3


@pytest.fixture(params=["obstore", "fsspec"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the adapter contract ----------------------------------------------------------------------
class _S3StoreTests(StoreTests):
    backend: ClassVar[str]
    scheme = "s3"

    # The URL alone lacks the endpoint and credentials: it resolves with its options.
    @pytest.fixture
    def storage_options(self, s3: S3Server) -> dict[str, Any]:
        return s3_options(s3, self.backend)

    @pytest.fixture
    def store(self, storage_options: dict[str, Any]) -> StoreSpec:
        return resolve_store(s3_prefix(), storage_options)

    @pytest.fixture
    def other(self, storage_options: dict[str, Any]) -> StoreSpec:
        return resolve_store(s3_prefix(), storage_options)

    def test_repr_hides_secrets(self, store: StoreSpec) -> None:
        assert "zc-test-secret" not in repr(store)
        assert store.url in repr(store)

    def test_put_if_absent_race_between_clients(self, store: StoreSpec, s3: S3Server) -> None:
        """Eight threads, each with its own client: the server picks exactly one winner."""
        results: list[bool] = []
        barrier = threading.Barrier(8)

        def writer(i: int) -> None:
            # A distinct spec (an extra option) is a distinct live client.
            opts = s3_options(s3, self.backend)
            if self.backend == "fsspec":
                opts["config_kwargs"] = {"connect_timeout": 5 + i}
            else:
                opts["client_options"] = {"connect_timeout": f"{5 + i}s"}
            spec = resolve_store(store.url, opts)
            barrier.wait()
            results.append(asyncio.run(spec.put_if_absent("race2/obj", f"w{i}".encode())))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 1


class TestObstoreS3(_S3StoreTests):
    store_cls = ObjectStore
    backend = "obstore"


class TestFsspecS3(_S3StoreTests):
    store_cls = FsspecStore
    backend = "fsspec"


# -- options and pre-built stores (no server needed) -------------------------------------------
def test_fsspec_style_options_map_to_obstore() -> None:
    spec = resolve_store(
        "s3://bucket/a/b/",
        {
            "key": "AK",
            "secret": "SK",
            "token": "ST",
            "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-3"},
        },
    )
    assert isinstance(spec, ObjectStore)
    assert spec.url == "s3://bucket/a/b"
    kwargs = dict(spec.options)
    assert kwargs["access_key_id"] == "AK"
    assert kwargs["secret_access_key"] == "SK"
    assert kwargs["session_token"] == "ST"
    assert kwargs["endpoint"] == "http://127.0.0.1:9"
    assert kwargs["region"] == "eu-west-3"
    store = spec.obstore()
    assert store.config["endpoint"] == "http://127.0.0.1:9"
    assert store.client_options["allow_http"] in (True, "true")
    assert store.prefix == "a/b"
    assert "SK" not in repr(spec) and "AK" not in repr(spec)


def test_obstore_style_options_and_other_schemes() -> None:
    spec = resolve_store("s3://bucket", {"aws_endpoint": "http://h:1", "allow_http": True})
    assert spec.obstore().config["endpoint"] == "http://h:1"
    gs = resolve_store("gs://bucket/p", {"token": "anon"})
    assert isinstance(gs, ObjectStore) and type(gs.obstore()).__name__ == "GCSStore"
    az = resolve_store("az://container/p", {"account_name": "acct", "anon": True})
    assert type(az.obstore()).__name__ == "AzureStore"
    assert resolve_store("gcs://bucket/p", {"token": "anon"}).url == "gs://bucket/p"
    assert isinstance(resolve_store("gs://b/p", {"backend": "fsspec"}), FsspecStore)
    with pytest.raises(zc.InvalidInputError, match="backend"):
        resolve_store("s3://b", {"backend": "boto"})
    with pytest.raises(zc.InvalidInputError, match="no obstore equivalent"):
        resolve_store("s3://b", {"client_kwargs": {"config": 1}})
    with pytest.raises(zc.InvalidInputError, match="cannot configure obstore"):
        resolve_store("s3://b", {"no_such_option": 1}).obstore()


def test_prebuilt_stores(s3: S3Server) -> None:
    from obstore.store import S3Store

    raw = S3Store(
        "test",
        prefix=uuid.uuid4().hex,
        endpoint=s3.endpoint,
        access_key_id="zc-test-key",
        secret_access_key="zc-test-secret",
        region="us-east-1",
        client_options={"allow_http": True},
    )
    spec = resolve_store(raw)
    assert isinstance(spec, ObjectStore) and spec.url == f"s3://test/{raw.prefix}"
    run(spec.put("k", b"v"))
    assert run(resolve_store(zarr.storage.ObjectStore(raw)).get("k")) == b"v"
    # It pickles (obstore stores pickle with their configuration) and tokenizes by value.
    clone = pickle.loads(pickle.dumps(spec))
    assert run(clone.get("k")) == b"v"
    import dask.base

    assert dask.base.tokenize(clone) == dask.base.tokenize(spec)
    fs_store = zarr.storage.FsspecStore.from_url(
        f"s3://test/{raw.prefix}", storage_options=s3.fsspec_options()
    )
    fspec = resolve_store(fs_store)
    assert isinstance(fspec, FsspecStore)
    assert run(fspec.get("k")) == b"v"
    with pytest.raises(zc.InvalidInputError):
        resolve_store(raw, {"key": "x"})
    with pytest.raises(zc.InvalidInputError, match="cannot use"):
        resolve_store(object())


def test_credentials_from_environment(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in storage_options: obstore reads ``AWS_*`` like the AWS SDKs."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "zc-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "zc-test-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    spec = resolve_store(s3_prefix())
    assert run(spec.put_if_absent("a", b"1"))
    assert run(spec.get("a")) == b"1"


# -- collections end to end --------------------------------------------------------------------
def _small_schema() -> zc.Schema:
    return (
        zc.Schema()
        .with_dimension("time", chunks=64)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("value", dtype="float32", dimensions=("time",))
        .build()
    )


def _months(n: int, start: str = "2000-01") -> dict[str, numpy.ndarray]:
    """Two rows in each of ``n`` consecutive months."""
    first = numpy.datetime64(start, "M")
    months = numpy.arange(first, first + numpy.timedelta64(n, "M"))
    days = months.astype("datetime64[D]")
    times = numpy.concatenate([days, days + numpy.timedelta64(1, "D")]).astype("datetime64[ns]")
    return {"time": times, "value": numpy.arange(len(times), dtype="float32")}


def test_round_trip(s3: S3Server, backend: str, factory: Factory) -> None:
    url, opts = s3_prefix(), s3_options(s3, backend)
    col = factory.create(url, storage_options=opts)
    first = factory.data(factory.times("2024-01-03", "2024-02-10", "2024-01-01"), seed=1)
    assert col.insert(first) == ["year=2024/month=01", "year=2024/month=02"]
    second = factory.data(factory.times("2024-03-05", "2024-02-11"), seed=2)
    col.insert(second, merge="time_series")

    lazy = zc.read_collection(url, storage_options=opts)
    assert lazy.npartitions == 3
    got = lazy.filter("month >= 2").compute()
    assert (
        got["time"].values.tolist()
        == factory.times("2024-02-10", "2024-02-11", "2024-03-05").tolist()
    )
    both = {k: numpy.concatenate([first[k], second[k]]) if k != "x_ac" else first[k] for k in first}
    factory.assert_dataset(
        zc.open_collection(url, storage_options=opts).query(), factory.sorted_rows(both)
    )
    assert col.drop_partitions("month == 1") == ["year=2024/month=01"]
    assert zc.open_collection(url, storage_options=opts).partitions() == [
        "year=2024/month=02",
        "year=2024/month=03",
    ]
    with pytest.raises(zc.AlreadyExistsError):
        factory.create(url, storage_options=opts)


# -- request counts: opening and filtering is O(1) ---------------------------------------------
_COUNTS: dict[str, RequestCounter] = collections.defaultdict(RequestCounter)


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class CountingObjectStore(ObjectStore):
    """An ``s3://`` spec whose zarr store counts its requests."""

    def _open_store(self) -> Any:
        return CountingStore(ObjectStore._open_store(self), counter=_COUNTS[self.location])


def _open_and_filter(spec: StoreSpec) -> tuple[int, collections.Counter[str]]:
    counter = _COUNTS[spec.url]
    counter.reset()
    lazy = zc.read_collection(spec).filter("year == 2000 and month <= 3")
    n = lazy.npartitions
    lazy.explain()
    return n, counter.take()


def test_open_and_filter_cost_constant_requests(s3: S3Server) -> None:
    measured = {}
    for n in (10, 200):
        location = s3_prefix()
        spec = CountingObjectStore.from_url(location, s3.obstore_options())
        col = zc.create_collection(
            spec,
            schema=_small_schema(),
            axis="time",
            partitioning=zc.partitioning.Date(("time",), resolution="M"),
        )
        col.insert(_months(n))
        assert len(col.partitions()) == n
        selected, counts = _open_and_filter(spec)
        assert selected == 3
        measured[n] = counts
    assert measured[10] == measured[200], measured
    assert sum(measured[200].values()) <= 5, measured  # config + listing + catalog + probe
    print(f"requests to open + filter + npartitions: {dict(measured[200])}")


def test_fsspec_reads_each_object_with_one_request(
    s3: S3Server, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read through fsspec sends one GET per object and no HEAD before it (s3fs does,
    to split large objects, unless ``max_concurrency`` is 1: the adapter's default)."""
    import s3fs

    url, opts = s3_prefix(), s3_options(s3, "fsspec")
    col = factory.create(url, storage_options=opts)
    data = factory.data(factory.times("2024-01-03", "2024-02-10", "2024-02-11"), seed=3)
    col.insert(data)
    calls: collections.Counter[str] = collections.Counter()
    call_s3 = s3fs.S3FileSystem._call_s3

    async def counted(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        calls[method] += 1
        return await call_s3(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    got = zc.read_collection(url, storage_options=opts).compute()
    factory.assert_dataset(got, factory.sorted_rows(data))
    assert calls["head_object"] == 0, calls
    assert calls["get_object"] > 0, calls
    # A user's own setting is kept.
    spec = resolve_store(url, {**opts, "max_concurrency": 4})
    assert run(_fs_max_concurrency(spec)) == 4


async def _fs_max_concurrency(spec: StoreSpec) -> int:
    assert isinstance(spec, FsspecStore)
    fs, _ = spec._fs_root()
    return int(fs.max_concurrency)
