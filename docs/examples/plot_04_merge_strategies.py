"""
Merge strategies
================

``insert(data, merge=...)`` decides how the inserted rows combine with the
rows already stored in each partition they fall in: ``replace`` (the
default), ``concat``, ``time_series``, ``upsert``, ``upsert_within(tol)``,
or a function of your own. Partitions the insert does not touch are never
read nor written.
"""

# %%
# The same insert, five ways
# --------------------------
# One daily partition holds ten rows, one per hour, ``value == 0``. We
# insert four rows with ``value == 1``: two on stored hours (03:00, 05:00),
# one ten seconds after a stored hour (07:00:10) and one after the last
# stored row (12:00).
import matplotlib.pyplot as plt
import numpy

import dask_zcollection as dzc

schema = (
    dzc.Schema()
    .with_dimension("time", chunks=64)
    .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
    .with_variable("value", dtype="float64", dimensions=("time",))
    .build()
)
day = numpy.datetime64("2024-05-01", "ns")
stored = {
    "time": day + numpy.arange(10) * numpy.timedelta64(1, "h"),
    "value": numpy.zeros(10),
}
inserted = {
    "time": day + numpy.array([3 * 3600, 5 * 3600, 7 * 3600 + 10, 12 * 3600]).astype("m8[s]"),
    "value": numpy.ones(4),
}


def after_insert(merge: object, name: str) -> dzc.Dataset:
    """A new collection with the stored rows, then the insert with ``merge``."""
    url = f"memory://merge-{name}"
    col = dzc.create_collection(
        url,
        schema=schema,
        axis="time",
        partitioning=dzc.partitioning.Date(("time",), resolution="D"),
        overwrite=True,
    )
    col.insert(stored)
    col.insert(inserted, merge=merge)
    return col.query()


strategies = {
    "replace": "replace",
    "concat": "concat",
    "time_series": "time_series",
    "upsert": "upsert",
    "upsert_within('30s')": dzc.merge.upsert_within("30s"),
}
results = {
    label: after_insert(merge, str(i)) for i, (label, merge) in enumerate(strategies.items())
}
for label, ds in results.items():
    hours = (ds["time"].values - day) / numpy.timedelta64(1, "h")
    print(
        f"{label:21} {ds['time'].size:2} rows: "
        + " ".join(
            f"{h:g}{'*' if v else ''}"
            for h, v in zip(hours.round(3), ds["value"].values, strict=True)
        )
    )

# %%
# Hours of the rows kept; ``*`` marks inserted rows:
#
# - ``replace``: the partition is the inserted rows, nothing else.
# - ``concat``: every row, duplicates included.
# - ``time_series``: stored rows *inside* the inserted time range
#   (03:00-12:00) are replaced; the rows before 03:00 stay.
# - ``upsert``: stored rows with *the same* time are replaced; 07:00 stays
#   beside 07:00:10.
# - ``upsert_within("30s")``: as ``upsert``, matching within 30 s: 07:00 goes.
fig, axes = plt.subplots(len(results), 1, figsize=(8, 4.5), sharex=True)
for ax, (label, ds) in zip(axes, results.items(), strict=True):
    hours = (ds["time"].values - day) / numpy.timedelta64(1, "h")
    new = ds["value"].values == 1
    ax.scatter(hours[~new], numpy.zeros((~new).sum()), marker="o", label="stored")
    ax.scatter(hours[new], numpy.zeros(new.sum()), marker="^", color="C3", label="inserted")
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center")
axes[0].legend(loc="upper right", ncols=2, fontsize="small")
axes[-1].set_xlabel("hour of 2024-05-01")
fig.tight_layout()

# %%
# Your own merge
# --------------
# A function ``fn(existing, inserted, *, axis) -> columns`` gets the stored
# and inserted rows of one partition (mappings of variable to numpy array,
# ``existing`` is ``None`` for a new partition) and returns the rows to store.
# Its result is checked against the schema before anything is written. Here:
# keep the stored rows, and add the inserted rows whose time is new.


def keep_first(existing, inserted, *, axis):
    """Insert only rows whose ``axis`` value is not stored yet."""
    if existing is None:
        return inserted
    new = ~numpy.isin(inserted[axis], existing[axis])
    rows = {name: numpy.concatenate([existing[name], inserted[name][new]]) for name in existing}
    order = numpy.argsort(rows[axis], kind="stable")
    return {name: values[order] for name, values in rows.items()}


ds = after_insert(keep_first, "custom")
print(ds["value"].values)

# %%
# A function that breaks the schema is refused, naming the partition, and
# nothing is written:


def bad(existing, inserted, *, axis):
    """Returns ``value`` as text."""
    return {axis: inserted[axis], "value": inserted["value"].astype(str)}


try:
    after_insert(bad, "bad")
except dzc.InvalidInputError as err:
    print(type(err).__name__, ":", err)
