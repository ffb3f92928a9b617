"""Child of the view-versus-base race test (run by path, never imported by pytest).

``python zc_view_race_worker.py ROLE BASE_URL VIEW_URL GO_FILE ROUNDS SEED`` waits for
``GO_FILE``, then for ``ROUNDS`` rounds either rewrites January of the base with new
values (``ROLE`` ``base``, same rows: only the version tells the views apart) or updates
the view's ``flag`` from the base and reads the view (``ROLE`` ``view``): every row read
must hold ``flag_of`` of the base rows read with it, or the fill value. Prints one JSON
line: the rounds done and the rows read that broke the rule (``wrong``).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy

import dask_zcollection as dzc

TIMES = numpy.arange("2024-01-01", "2024-01-11", dtype="datetime64[D]").astype("M8[ns]")


def flag_of(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    """The view's function: depends on every base value (a row count cannot stand in for it)."""
    days = ds["time"].values.astype("datetime64[D]").astype("int64")  # type: ignore[union-attr]
    quality = ds["quality"].values.astype("int64")  # type: ignore[union-attr]
    return {"flag": ((quality + days) % 100).astype("int8")}


def rows(seed: int) -> dict[str, numpy.ndarray]:
    rng = numpy.random.default_rng(seed)
    return {
        "time": TIMES,
        "quality": rng.integers(0, 255, len(TIMES), dtype="uint8"),
    }


def main() -> None:
    role, base_url, view_url, go, rounds, seed = sys.argv[1:7]
    while not os.path.exists(go):
        time.sleep(0.005)
    done = wrong = 0
    if role == "base":
        col = dzc.open_collection(base_url, mode="rw")
        for i in range(int(rounds)):
            col.insert(rows(int(seed) * 1000 + i), merge="replace")
            done += 1
    else:
        view = dzc.open_view(view_url, mode="rw")
        for _ in range(int(rounds)):
            try:
                view.update(flag_of)
                done += 1
            except (dzc.ConflictError, dzc.errors.PartitionNotFoundError):
                pass  # a lost race with the base writer: nothing committed
            try:
                ds = dzc.read_view(view_url, stale="fill").compute()
            except dzc.errors.PartitionNotFoundError:
                # The base version it planned with was collected (the tests' retention is
                # 0) and its path written again: refused, never read as other rows.
                continue
            flag = ds["flag"].values
            wrong += int(((flag != -1) & (flag != flag_of(ds)["flag"])).sum())
    print(json.dumps({"role": role, "done": done, "wrong": wrong}), flush=True)


if __name__ == "__main__":
    main()
