"""Child process of the view concurrency and SIGKILL tests (run by path, never imported by pytest).

``python zc_view_worker.py VIEW_URL FILTER VARIABLE VALUE GO_FILE [SLOW_MARKER]``
waits for ``GO_FILE``, then updates ``VARIABLE`` of the partitions matching
``FILTER`` to ``VALUE`` everywhere (retrying on ``ConflictError``) and prints
``done``. With ``SLOW_MARKER``, the function of every partition but the first
creates that file and sleeps (the test kills the process meanwhile).
"""

from __future__ import annotations

import os
import sys
import time

import numpy

import dask_zcollection as dzc


def main() -> None:
    url, filters, variable, value, go = sys.argv[1:6]
    slow = sys.argv[6] if len(sys.argv) > 6 else None
    view = dzc.open_view(url, mode="rw")
    dtype = view.aio.config.schema[variable].dtype
    size = view.schema.all_dimensions()["x_ac"].size
    calls = []

    def fn(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
        n = len(ds["time"].values)
        tail = (size,) if variable == "ssh_anom" else ()
        calls.append(n)
        if slow is not None and len(calls) > 1:
            with open(slow, "w") as f:
                f.write("writing")
            time.sleep(120)
        return {variable: numpy.full((n, *tail), value, dtype=dtype)}

    while not os.path.exists(go):
        time.sleep(0.01)
    for _ in range(50):
        try:
            view.update(fn, filters=filters, variables=["time", "x_ac"])
            break
        except dzc.ConflictError:
            time.sleep(0.05 + numpy.random.default_rng().random() * 0.2)
    else:
        raise SystemExit("gave up after 50 conflicts")
    print("done", flush=True)


if __name__ == "__main__":
    main()
