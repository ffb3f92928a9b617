"""S3 backends side by side on loopback SeaweedFS (``python -m benchmarks.s3_backends``).

Writes and reads the same two daily partitions (``ssh`` float32 x 240, blosc lz4,
16384-row chunks) through obstore (the default), fsspec/s3fs, Icechunk on S3 and
raw zarr-python's ``ObjectStore`` (one group per day, sequential). The server
is the one the tests start (``tests/store/s3_server.py``). A warm-up write goes
first for each backend, untimed (SeaweedFS creates its volumes on the first
write, which otherwise lands on whichever backend runs first); writes are the
median of 3 fresh collections, reads the best of 3. Prints MB/s: a first look, not a
regression gate.
"""

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy
import obstore.store
import zarr
import zarr.storage

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "store"))
from s3_server import s3_server

import dask_zcollection as zc


def main() -> None:
    """Run the comparison and print one line per backend."""
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=16384)
        .with_dimension("x", size=240, chunks=240)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("ssh", dtype="float32", dimensions=("time", "x"))
        .build()
    )
    n = 86400 * 2
    t = numpy.datetime64("2024-01-01", "ns") + numpy.arange(n) * numpy.timedelta64(1, "s")
    rng = numpy.random.default_rng(0)
    data = {
        "time": t,
        "ssh": (
            numpy.sin(numpy.arange(n) / 5000.0)[:, None] + 0.03 * rng.standard_normal((n, 240))
        ).astype("f4"),
    }
    mb = data["ssh"].nbytes / 1e6
    with s3_server(Path(tempfile.mkdtemp())) as s3:
        print("server", s3.kind)
        for backend, opts in [
            ("obstore", s3.obstore_options()),
            ("fsspec", {"backend": "fsspec", **s3.fsspec_options()}),
            ("icechunk", s3.fsspec_options()),
        ]:
            url = (
                f"icechunk+s3://test/{uuid.uuid4().hex}"
                if backend == "icechunk"
                else f"s3://test/{uuid.uuid4().hex}"
            )
            times = []
            for attempt in range(4):
                if attempt:
                    url = f"{url.rsplit('/', 1)[0]}/{uuid.uuid4().hex}"
                col = zc.create_collection(
                    url,
                    schema=schema,
                    axis="time",
                    partitioning=zc.partitioning.Date(("time",), resolution="D"),
                    storage_options=opts,
                )
                t0 = time.perf_counter()
                col.insert(data)
                times.append(time.perf_counter() - t0)
            w = statistics.median(times[1:])  # the first one warms the backend up
            best = 1e9
            for _ in range(3):
                t0 = time.perf_counter()
                zc.read_collection(url, storage_options=opts).compute()
                best = min(best, time.perf_counter() - t0)
            print(
                f"{backend:9s} write {mb / w:7.0f} MB/s  read {mb / best:7.0f} MB/s  "
                f"({mb:.0f} MB, 2 daily partitions)"
            )
        # raw zarr ObjectStore, same arrays, one group per day
        o = s3.obstore_options()
        st = obstore.store.S3Store(
            "test",
            prefix=f"raw-{uuid.uuid4().hex}",
            endpoint=o["endpoint"],
            access_key_id=o["access_key_id"],
            secret_access_key=o["secret_access_key"],
            region=o["region"],
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )
        zs = zarr.storage.ObjectStore(st)
        comp = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
        times = []
        for attempt in range(4):
            t0 = time.perf_counter()
            for d in range(2):
                sl = slice(d * 86400, (d + 1) * 86400)
                g = zarr.open_group(zs, path=f"{attempt}/day{d}", mode="w")
                g.create_array("time", data=data["time"][sl], chunks=(16384,), compressors=[comp])
                g.create_array("ssh", data=data["ssh"][sl], chunks=(16384, 240), compressors=[comp])
            times.append(time.perf_counter() - t0)
        w = statistics.median(times[1:])
        best = 1e9
        for _ in range(3):
            t0 = time.perf_counter()
            parts = [zarr.open_group(zs, path=f"3/day{d}", mode="r")["ssh"][:] for d in range(2)]
            numpy.concatenate(parts)
            best = min(best, time.perf_counter() - t0)
        print(
            f"raw zarr  write {mb / w:7.0f} MB/s  read {mb / best:7.0f} MB/s  "
            "(ObjectStore, sequential)"
        )


if __name__ == "__main__":
    main()
