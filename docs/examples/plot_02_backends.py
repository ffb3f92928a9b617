"""
Backends, and time travel with Icechunk
=======================================

The same collection API over every store: ``memory://`` (one process),
``file://`` (a local directory), object stores (``s3://``, ``gs://``,
``az://`` through obstore, or fsspec with
``storage_options={"backend": "fsspec"}``) and Icechunk repositories, where
every write is one Icechunk commit and ``version=`` reads the past.
"""

# %%
# One helper to fill a collection
# -------------------------------
import tempfile
from pathlib import Path

import icechunk
import numpy

import dask_zcollection as dzc

schema = (
    dzc.Schema()
    .with_dimension("time", chunks=1024)
    .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
    .with_variable("value", dtype="float64", dimensions=("time",))
    .build()
)


def rows(first_day: str, days: int, value: float) -> dict[str, numpy.ndarray]:
    """Hourly rows from ``first_day``, every value set to ``value``."""
    time = numpy.datetime64(first_day, "ns") + numpy.arange(days * 24) * numpy.timedelta64(1, "h")
    return {"time": time, "value": numpy.full(time.size, value)}


def create(url: str) -> dzc.Collection:
    """A collection with one partition per day."""
    return dzc.create_collection(
        url,
        schema=schema,
        axis="time",
        partitioning=dzc.partitioning.Date(("time",), resolution="D"),
        overwrite=True,
    )


# %%
# ``memory://``: in this process only
# -----------------------------------
# Two openings of ``memory://name`` in one process see the same collection;
# worker processes do not (use ``file://`` or an object store on a cluster).
mem = create("memory://backends-demo")
mem.insert(rows("2024-01-01", 3, 1.0))
print(dzc.read_collection("memory://backends-demo").partitions)

# %%
# ``file://``: a directory of Zarr v3 groups
# ------------------------------------------
# A plain path works too. Any Zarr v3 reader can open a partition.
import zarr

tmp = Path(tempfile.mkdtemp(prefix="dzc-backends-"))
col = create(f"file://{tmp / 'daily'}")
col.insert(rows("2024-01-01", 3, 1.0))
group = zarr.open_group(tmp / "daily" / "year=2024" / "month=01" / "day=02", mode="r")
print(group["time"][:2], group["value"][:2])

# %%
# Object stores
# -------------
# ``s3://bucket/prefix`` with the usual options (not run here: it needs a
# server)::
#
#     dzc.read_collection(
#         "s3://bucket/altimetry",
#         storage_options={"endpoint_url": "http://127.0.0.1:9000", "region": "us-east-1"},
#     )
#
# obstore is the default client; ``storage_options={"backend": "fsspec", ...}``
# goes through s3fs/gcsfs/adlfs instead. Each commit is a conditional write
# (``put_if_absent``), so two writers racing on one bucket never lose rows.

# %%
# Icechunk: every write is a commit
# ---------------------------------
# ``icechunk:///path`` is a local repository (``icechunk+s3://bucket/prefix``
# one on S3). Each insert, update or drop is one Icechunk commit on the branch
# (``main`` unless ``storage_options={"branch": ...}``).
url = f"icechunk://{tmp / 'repo'}"
ice = create(url)
ice.insert(rows("2024-01-01", 2, 1.0))

repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(tmp / "repo")))
first = repo.lookup_branch("main")  # the snapshot after the first insert
repo.create_tag("v1", first)

ice.insert(rows("2024-01-02", 2, 2.0), merge="time_series")  # rewrites Jan 2, adds Jan 3
ice.drop_partitions("day == 1")
for snapshot in repo.ancestry(branch="main"):
    print(snapshot.id[:8], snapshot.message)


# %%
# Time travel
# -----------
# ``version=`` takes a snapshot id, a tag or a branch: the collection as it
# was then, lazily, with the same filters.
def summary(lazy: dzc.LazyCollection) -> str:
    ds = lazy.compute()
    days = numpy.unique(ds["time"].values.astype("M8[D]"))
    return f"days {[str(d) for d in days]}, values {sorted(set(ds['value'].values.tolist()))}"


print("now:     ", summary(dzc.read_collection(url)))
print("v1:      ", summary(dzc.read_collection(url, version="v1")))
print("snapshot:", summary(dzc.read_collection(url, version=first)))

# %%
# The eager API reads a version too (read-only):
old = dzc.open_collection(url, version="v1")
print(old.partitions(), old.mode)

# %%
import shutil

shutil.rmtree(tmp)
