"""A stored index stays consistent with the data when its writers are SIGKILLed.

A child process loops over the three writes that touch an index: an update
through the index (``update(fn, index=...)``, which rewrites the index's entry
of each partition in its write task), a plain update that rewrites a
partition (its entry goes stale), and ``update_index``. It is killed at random
moments, several times. After each kill a reader either gets exactly the rows
a numpy reference selects in the same snapshot, or a ``StaleIndexError``; each
partition's selected rows were updated a whole number of times (never half an
update); and after ``update_index`` the index answers again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy

import dask_zcollection as zc
from dask_zcollection.errors import StaleIndexError

from .test_indexer import make
from .test_stored import blocks_of

_CHILD = textwrap.dedent(
    """
    import sys
    import numpy
    import dask_zcollection as zc
    from dask_zcollection.errors import StaleIndexError

    col = zc.open_collection(sys.argv[1], mode="rw")
    i = int(sys.argv[2])
    while True:
        i += 1
        if i % 3 == 0:
            col.update_index("six")
        elif i % 3 == 1:
            try:
                col.update(lambda ds: {"ssh": ds["ssh"].values + 1}, index="six", parity=1,
                           variables=["ssh"])
            except StaleIndexError:  # refused, nothing written: rebuild first
                col.update_index("six")
        else:  # two new rows ahead of a month's: its rows move, its entry goes stale
            m = 1 + (i // 3) % 2  # before the month's rows, in an odd 6-hour block
            minutes = (2 * i + numpy.arange(2)) * numpy.timedelta64(60, "s")
            t = numpy.datetime64(f"2024-0{m}-01T06", "ns") + minutes
            col.insert({
                "time": t,
                "ssh": numpy.full((2, 3), 1000 + i, dtype="float32"),
                "quality": numpy.zeros(2, dtype="uint8"),
                "x_ac": numpy.arange(3, dtype="int16") * 2 - 2,
                "data_01/ku/power": numpy.zeros((2, 2), dtype="float32"),
            }, merge="upsert")
        print(i, flush=True)
    """
)


def _check(url: str, original: dict[str, numpy.ndarray]) -> bool:
    """Values are whole updates; the index answers exactly or refuses. ``True``: answered."""
    lazy = zc.read_collection(url)
    whole = lazy.compute()
    times = whole["time"].values
    ssh = whole["ssh"].values
    # The original rows are all there; the others are whole inserts of two rows.
    kept = numpy.isin(times, original["time"])
    numpy.testing.assert_array_equal(times[kept], original["time"])
    assert (~kept).sum() % 2 == 0
    odd = blocks_of(times) % 2 == 1
    was = original["ssh"]
    odd_kept = odd[kept]
    # Original rows outside the index's selection are never touched.
    numpy.testing.assert_array_equal(ssh[kept][~odd_kept], was[~odd_kept])
    month = original["time"].astype("datetime64[M]")
    for m in numpy.unique(month):
        rows = odd_kept & (month == m)
        now = ssh[kept][rows]
        k = round(float(numpy.nanmean(now - was[rows])))
        expected = was[rows].copy()
        for _ in range(k):  # the same float32 increments the updates made
            expected = expected + numpy.float32(1)
        numpy.testing.assert_array_equal(now, expected, err_msg=f"month {m}: half an update")
    try:
        got = lazy.filter(index="six", parity=1).compute()
    except StaleIndexError:
        return False
    numpy.testing.assert_array_equal(got["time"].values, times[odd])
    numpy.testing.assert_array_equal(got["ssh"].values, ssh[odd])
    return True


def test_sigkilled_index_writers_never_make_it_lie(tmp_path: Path, factory: Any) -> None:
    url = f"file://{tmp_path}/col"
    col, data = make(url, factory)

    def six_hours(ds: zc.Dataset) -> dict[str, numpy.ndarray]:  # pickled by value
        block = ds["time"].values.astype("datetime64[h]").astype("int64") // 6  # type: ignore[union-attr]
        edges = numpy.flatnonzero(numpy.diff(block)) + 1
        starts = numpy.concatenate([[0], edges]).astype("int64")
        stops = numpy.concatenate([edges, [len(block)]]).astype("int64")
        return {
            "block": block[starts],
            "parity": block[starts] % 2,
            "_start": starts,
            "_stop": stops,
        }

    col.create_index("six", six_hours, variables=["time"])
    original = {k: v.copy() for k, v in data.items()}
    order = numpy.argsort(original["time"], kind="stable")
    original = {"time": original["time"][order], "ssh": original["ssh"][order]}
    assert _check(url, original)

    rng = numpy.random.default_rng(7)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = 0
    answered = 0
    for round_ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, url, str(done)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # the child runs: kill it during its next writes
        if not first.strip():
            raise AssertionError(f"round {round_}: the child failed: {child.communicate()[1]}")
        time.sleep(float(rng.uniform(0.05, 0.6)))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err
        steps = [int(s) for s in (first + out).split()]
        done = max(steps)
        answered += _check(url, original)
        # And a write of our own ahead of February's rows: the index must refuse.
        seconds = (4 * round_ + numpy.arange(2)) * numpy.timedelta64(60, "s") + numpy.timedelta64(
            30, "s"
        )
        zc.open_collection(url, mode="rw").insert(
            {
                "time": numpy.datetime64("2024-02-01T06", "ns") + seconds,
                "ssh": numpy.full((2, 3), -1, dtype="float32"),
                "quality": numpy.zeros(2, dtype="uint8"),
                "x_ac": numpy.arange(3, dtype="int16") * 2 - 2,
                "data_01/ku/power": numpy.zeros((2, 2), dtype="float32"),
            },
            merge="upsert",
        )
        assert not _check(url, original)
    assert done >= 4  # the writes did run between the kills
    # A writer's rebuild recovers the dead writers' locks and brings every entry up to date.
    writer = zc.open_collection(url, mode="rw")
    writer.update_index("six")
    assert _check(url, original)
    print(f"kills 4, steps {done}, answered after a kill {answered}")
