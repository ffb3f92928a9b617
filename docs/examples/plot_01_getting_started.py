"""
Getting started
===============

Create a collection partitioned by month, insert a year of hourly rows, and
read it back lazily with filters on the partition keys and on time.
"""

# %%
# A schema and a collection
# -------------------------
# A schema names the dimensions (with their chunks) and the variables. The
# collection is partitioned along one dimension, the *axis* (``time``), by a
# partitioning: here one partition per calendar month of the ``time``
# variable. ``x_ac`` does not depend on the axis: it is stored once, in the
# immutable group, and joined to every partition read.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy

import dask_zcollection as dzc

schema = (
    dzc.Schema()
    .with_dimension("time", chunks=2048)
    .with_dimension("x_ac", size=24, chunks=24)
    .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
    .with_variable(
        "ssh",
        dtype="float32",
        dimensions=("time", "x_ac"),
        fill_value=numpy.float32("nan"),
        attrs={"units": "m", "long_name": "sea surface height"},
    )
    .with_variable("x_ac", dtype="int16", dimensions=("x_ac",))
    .build()
)

root = Path(tempfile.mkdtemp(prefix="dzc-getting-started-"))
url = f"file://{root / 'altimetry'}"
col = dzc.create_collection(
    url,
    schema=schema,
    axis="time",
    partitioning=dzc.partitioning.Date(("time",), resolution="M"),
)
col

# %%
# Insert
# ------
# ``insert`` takes a mapping of arrays (numpy or dask), a
# :class:`dask_zcollection.Dataset` or an ``xarray.Dataset``. The rows are
# split by month; each partition is written aside and the whole insert is
# published by one atomic commit. It returns the partitions written.
n = 366 * 24
time = numpy.datetime64("2024-01-01", "ns") + numpy.arange(n) * numpy.timedelta64(1, "h")
rng = numpy.random.default_rng(0)
phase = numpy.linspace(0, 24 * numpy.pi, n, dtype="float32")[:, None]
ssh = numpy.sin(phase + numpy.linspace(-1, 1, 24, dtype="float32")) + rng.normal(
    0, 0.05, (n, 24)
).astype("float32")
written = col.insert({"time": time, "ssh": ssh, "x_ac": numpy.arange(24, dtype="int16")})
print(len(written), "partitions:", written[:3], "...")

# %%
# The partitions on disk are Zarr v3 groups named after their keys:
print(sorted(p.name for p in (root / "altimetry").iterdir()))
print(sorted(p.name for p in (root / "altimetry" / "year=2024").iterdir())[:4])

# %%
# Read lazily
# -----------
# :func:`~dask_zcollection.read_collection` reads the collection descriptor
# and its catalog, nothing else: the result is a Dask collection. Filters on
# the partition keys (``year``, ``month``) select partitions while the graph
# is planned; a time range selects rows; ``[...]`` selects variables.
lazy = dzc.read_collection(url)
lazy

# %%
# :meth:`~dask_zcollection.LazyCollection.plot_partitions` draws the selected
# partitions on a timeline from the catalog's statistics (nothing is read),
# coloured by rows or bytes; gaps in the data show as blank spans.
lazy.plot_partitions(by="rows")

# %%
spring = lazy.filter("month >= 3 and month <= 5")[["time", "ssh"]]
print(spring.npartitions, "partitions:", spring.partitions)
print(spring.explain())

# %%
# ``compute()`` runs the graph (one read task per partition) and returns a
# :class:`dask_zcollection.Dataset`; ``to_xarray()`` gives an
# ``xarray.Dataset`` backed by dask arrays instead.
ds = spring.compute()
ds

# %%
week = lazy.filter(time=slice("2024-06-01", "2024-06-07T23:59:59")).to_xarray()
week

# %%
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(week["time"].values, week["ssh"].mean("x_ac").values, lw=1)
ax.set_ylabel("mean ssh (m)")
ax.set_title("one week, read from 1 of 12 partitions")
fig.autofmt_xdate()
fig.tight_layout()

# %%
# Append, then read again
# -----------------------
# New acquisitions go in with a merge strategy; ``time_series`` keeps the
# stored rows outside the inserted time range and appends in place when the
# new rows come after them. A reader opened before the commit keeps its
# snapshot; a new one sees the new rows.
more = time[-1] + numpy.arange(1, 49) * numpy.timedelta64(1, "h")
col.insert({"time": more, "ssh": ssh[:48]}, merge="time_series")
print(dzc.read_collection(url).partitions[-2:], "(2025-01 is new)")
print("rows in the snapshot read before:", lazy.compute()["time"].size)
print("rows now:", dzc.read_collection(url).compute()["time"].size)

# %%
# The eager API
# -------------
# ``open_collection`` returns the same :class:`~dask_zcollection.Collection`
# as ``create_collection``: ``partitions``, ``query`` (an eager read),
# ``insert``, ``update``, ``map``, ``drop_partitions``, ``verify``,
# ``repair``, ``vacuum``.
col = dzc.open_collection(url, mode="rw")
print(col.partitions("month == 12"))
print(col.query(filters={"year": 2025}, variables=["time"])["time"].values[[0, -1]])
print("dropped:", col.drop_partitions("year == 2025"))
report = col.verify()  # reads every chunk and checks it against the record of chunks written
print("verify:", "ok" if report.ok else report.damaged, f"({report.checked} groups)")

# %%
import shutil

shutil.rmtree(root)
