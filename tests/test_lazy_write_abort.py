"""A lazy (``compute=False``) write that fails releases its locks and lease at once.

A scheduler does not run the commit task of a graph whose task raised: the
failing task aborts its transaction itself, and so does a failing commit.
The next write of the same partitions then succeeds without waiting for
recovery (the lease timeout).
"""

from __future__ import annotations

from typing import Any

import dask
import numpy
import pytest
from conftest import Factory, unique_memory_name

import dask_zcollection as zc
from dask_zcollection.errors import ConflictError, InvalidInputError

MONTH = ["2024-03-01", "2024-03-02", "2024-03-03"]


def _leftovers(coll: zc.Collection) -> list[str]:
    """The locks and leases left in the store (none once every writer is over)."""
    import fsspec

    fs, _, (root,) = fsspec.get_fs_token_paths(coll.url)
    found: list[str] = []
    for sub in ("_locks", "_transactions"):
        if fs.exists(f"{root}/{sub}"):
            found += [
                p for p in fs.find(f"{root}/{sub}") if p.endswith((".lock", ".json", ".alive"))
            ]
    return found


def _check(coll: zc.Collection, expected: dict[str, Any]) -> None:
    ds = coll.query()
    assert ds is not None
    for name in ("time", "ssh", "quality"):
        numpy.testing.assert_array_equal(ds[name].values, expected[name])


@pytest.fixture(params=["file", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/coll"
    return f"memory://{unique_memory_name('lazyabort')}/coll"


def test_two_lazy_writes_of_one_month_computed_together(url: str, factory: Factory) -> None:
    """One ``ConflictError``; no lock or lease left; a third insert succeeds at once."""
    coll = factory.create(url)
    coll.insert(factory.data(factory.times(*MONTH), seed=0))
    a = coll.insert(factory.data(factory.times(*MONTH), seed=1), compute=False)
    b = coll.insert(factory.data(factory.times(*MONTH), seed=2), compute=False)
    with pytest.raises(ConflictError):
        dask.compute(a, b, scheduler="threads")
    assert _leftovers(coll) == []
    third = factory.data(factory.times(*MONTH), seed=3)
    assert coll.insert(third) == ["year=2024/month=03"]
    _check(coll, third)


def test_lazy_write_whose_merge_task_raises(url: str, factory: Factory) -> None:
    """Bad input caught only at compute: the error surfaces, the next write succeeds at once."""
    coll = factory.create(url)
    first = factory.data(factory.times(*MONTH), seed=0)
    coll.insert(first)

    def unsorted(existing: Any, inserted: dict[str, Any], *, axis: str) -> dict[str, Any]:
        raise InvalidInputError("quality out of range")

    lazy = coll.insert(factory.data(factory.times(*MONTH), seed=1), merge=unsorted, compute=False)
    with pytest.raises(InvalidInputError, match=r"month=03.*out of range"):
        lazy.compute(scheduler="threads")
    assert _leftovers(coll) == []
    _check(coll, first)  # nothing of the failed write is visible
    again = factory.data(factory.times(*MONTH), seed=2)
    assert coll.insert(again) == ["year=2024/month=03"]
    _check(coll, again)
