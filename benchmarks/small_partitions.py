"""One small partition of 10,000 vs raw zarr by path (``python -m benchmarks.small_partitions``).

Inserts 10,000 daily partitions of 16 rows (``ssh`` float32 x 240) into a
``file://`` collection (about a minute), then times (median of 15, warm page
cache) ``read_collection(url).filter(year=, month=, day=).compute()`` against
``zarr.open_group(path)`` + reading its two arrays, and a lazy read of the 366
partitions of one year (the fixed cost per partition read).
"""

import statistics
import tempfile
import time

import numpy
import zarr

import dask_zcollection as zc


def main() -> None:
    """Build the collection, time the reads, print the figures."""
    d = tempfile.mkdtemp()
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=4096)
        .with_dimension("x", size=240, chunks=240)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("ssh", dtype="float32", dimensions=("time", "x"))
        .build()
    )
    url = f"file://{d}/c"
    col = zc.create_collection(
        url,
        schema=schema,
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="D"),
    )
    n = 10000
    t = numpy.datetime64("2000-01-01", "ns") + numpy.arange(n * 16) * numpy.timedelta64(5400, "s")
    col.insert({"time": t, "ssh": numpy.random.rand(len(t), 240).astype("f4")})

    def med(f, k=15):
        xs = []
        for _ in range(k):
            t0 = time.perf_counter()
            f()
            xs.append(time.perf_counter() - t0)
        return statistics.median(xs) * 1000

    one = med(lambda: zc.read_collection(url).filter(year=2010, month=6, day=15).compute())
    path = f"{d}/c/year=2010/month=06/day=15"

    def raw():
        g = zarr.open_group(path, mode="r")
        g["time"][:]
        g["ssh"][:]

    rawms = med(raw)
    print(
        f"one of 10,000: dzc {one:.1f} ms, raw zarr by path {rawms:.1f} ms, ratio {one / rawms:.2f}"
    )
    full = med(lambda: zc.read_collection(url).filter("year == 2000 and month <= 12").compute(), 3)
    k = len(zc.read_collection(url).filter("year == 2000 and month <= 12").partitions)
    print(f"read of {k} tiny partitions: {full:.0f} ms ({full / k:.2f} ms per partition)")


if __name__ == "__main__":
    main()
