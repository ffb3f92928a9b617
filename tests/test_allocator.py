"""glibc's allocator tuned on running workers (``dask_zcollection/allocator.py``).

A nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``, so every
buffer above 128 KiB is mapped and page-faulted afresh; after
``TuneAllocator`` the same buffers come from the heap without faults.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from typing import Any

import numpy
import pytest

from dask_zcollection import InvalidInputError
from dask_zcollection.allocator import TuneAllocator, _mallopt, tune_allocator

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.cluster


def faults_of_buffers(count: int = 40, nbytes: int = 1 << 20) -> int:
    """Page faults of ``count`` buffers of ``nbytes`` allocated, written and freed in turn."""
    numpy.ones(nbytes, dtype=numpy.uint8)  # warm the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(count):
        buf = numpy.empty(nbytes, dtype=numpy.uint8)
        buf.fill(1)
        del buf
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.fixture
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            processes=True, n_workers=1, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.mark.skipif(_mallopt() is None, reason="glibc only")
def test_tune_allocator_stops_the_page_faults_of_a_nanny_started_worker(client: Any) -> None:
    # The nanny's setting: each 1 MiB buffer is a fresh mapping (256 pages faulted).
    untuned = client.submit(faults_of_buffers, pure=False).result()
    assert untuned > 40 * 200
    client.register_plugin(TuneAllocator())
    tuned = client.submit(faults_of_buffers, pure=False).result()
    assert tuned < 40 * 10, (untuned, tuned)
    # A worker started after the registration is tuned too.
    client.cluster.scale(2)
    client.wait_for_workers(2)
    per_worker = client.run(faults_of_buffers)
    assert len(per_worker) == 2 and max(per_worker.values()) < 40 * 10, per_worker


@pytest.mark.parametrize("value", [-1, 1.5, True, "32MiB"])
def test_thresholds_are_numbers_of_bytes(value: Any) -> None:
    with pytest.raises(InvalidInputError, match="number of bytes"):
        TuneAllocator(mmap_threshold=value)
    with pytest.raises(InvalidInputError, match="number of bytes"):
        tune_allocator(trim_threshold=value)


def test_outside_glibc_tuning_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import dask_zcollection.allocator as allocator

    monkeypatch.setattr(allocator, "_mallopt", lambda: None)
    assert tune_allocator() is False
