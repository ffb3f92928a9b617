"""
Distributed reads and writes
============================

A collection is a Dask collection: on a ``distributed`` cluster the read
tasks and the merge-write tasks run on the workers, and an insert is still
one atomic commit. This example starts a small :class:`~distributed.LocalCluster`
(two worker processes), writes dask arrays computed by the workers, and reads
back in parallel.

Run as a script, code that starts worker processes goes under
``if __name__ == "__main__":`` (Python's rule for ``multiprocessing``: each
worker imports the main module).
"""

# %%
# A cluster and a collection on disk
# ----------------------------------
# Worker processes cannot see a ``memory://`` collection: use ``file://``, an
# object store, or Icechunk (on a cluster each worker writes to a fork of the
# writer's Icechunk session, merged by the one commit).
import tempfile
from collections import Counter
from pathlib import Path

import dask.array as da
import distributed
import matplotlib.pyplot as plt
import numpy

import dask_zcollection as dzc

cluster = distributed.LocalCluster(
    n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
)
client = distributed.Client(cluster)

schema = (
    dzc.Schema()
    .with_dimension("time", chunks=4096)
    .with_dimension("x_ac", size=32, chunks=32)
    .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
    .with_variable("ssh", dtype="float32", dimensions=("time", "x_ac"))
    .build()
)
root = Path(tempfile.mkdtemp(prefix="dzc-distributed-"))
url = f"file://{root / 'col'}"
col = dzc.create_collection(
    url, schema=schema, axis="time", partitioning=dzc.partitioning.Date(("time",), resolution="D")
)

# %%
# A distributed insert
# --------------------
# The input is dask arrays: each block (here one day of rows) is computed on
# a worker. ``insert(..., compute=False)`` returns the insert as one
# ``Delayed`` (plan, one merge-write task per destination partition, one
# commit), which you can compute with the pipeline that produces the data.
rows_per_day = 24 * 60  # one row a minute
days = 8
start = numpy.datetime64("2024-01-01", "ns")
time = da.arange(days * rows_per_day, chunks=rows_per_day) * numpy.timedelta64(1, "m") + start


def field(block: numpy.ndarray) -> numpy.ndarray:
    """Rows of ``ssh`` for a block of minutes (seeded by the block's first minute)."""
    rng = numpy.random.default_rng(int(block[0]))
    return rng.normal(0, 0.1, (block.size, 32)).astype("float32")


minutes = da.arange(days * rows_per_day, chunks=rows_per_day)
ssh = minutes.map_blocks(field, chunks=(rows_per_day, 32), new_axis=1, dtype="float32")

insert = col.insert({"time": time, "ssh": ssh}, compute=False)
with distributed.get_task_stream(client) as stream:
    written = insert.compute()
print(f"{len(written)} partitions written, one commit:", written[0], "...", written[-1])

# %%
# Who did what: the tasks of the insert by worker (the plan and the commit
# are one task each).
workers = {addr: f"worker {i}" for i, addr in enumerate(sorted(client.scheduler_info()["workers"]))}
tasks = Counter(workers[t["worker"]] for t in stream.data)
print(dict(sorted(tasks.items())))


def plot_stream(data: list[dict], title: str) -> None:
    """A task stream: one bar per task, one row per worker."""
    t0 = min(s["start"] for t in data for s in t["startstops"])
    fig, ax = plt.subplots(figsize=(8, 2))
    for t in data:
        row = sorted(workers).index(t["worker"])
        for s in t["startstops"]:
            if s["action"] == "compute":
                ax.barh(row, s["stop"] - s["start"], left=s["start"] - t0, height=0.6)
    ax.set_yticks(range(len(workers)), [workers[w] for w in sorted(workers)])
    ax.set_xlabel("seconds")
    ax.set_title(title)
    fig.tight_layout()


plot_stream(stream.data, "insert: merge-write tasks on two workers")

# %%
# A distributed read
# ------------------
# Filters are folded into the graph while it is planned: the workers only
# get the read tasks of the selected partitions.
lazy = dzc.read_collection(url).filter("day >= 3 and day <= 6")
print(lazy.npartitions, "read tasks")
with distributed.get_task_stream(client) as stream:
    ds = lazy.compute()
print(ds["ssh"].shape, "rows x columns read")
plot_stream(stream.data, "read: 4 partitions")

# %%
# ``to_xarray()`` keeps the data on the cluster as dask arrays, for
# reductions that never bring the whole collection to the client:
mean = dzc.read_collection(url).to_xarray()["ssh"].mean("x_ac").resample(time="1D").mean()
print(mean.compute().values.round(4))

# %%
client.close()
cluster.close()

import shutil

shutil.rmtree(root)
