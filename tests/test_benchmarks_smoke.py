"""Smoke test of the benchmark harness: ``python -m benchmarks --quick`` runs and writes JSON.

No timing assertions: only that every measurement produced a row, that no row
failed, and that the figures are positive numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import benchmarks  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "quick.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--quiet",
            "--json",
            str(out),
            "--dir",
            str(tmp),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.exists(), proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    doc["_stdout"] = proc.stdout
    doc["_returncode"] = proc.returncode
    return doc


def test_every_measurement_has_a_row(quick_run: dict) -> None:
    names = [r["name"] for r in quick_run["results"]]
    expected = benchmarks.expected_names(benchmarks.Config.quick_config())
    assert set(expected) <= set(names), sorted(set(expected) - set(names))
    for required in (
        "io.write",
        "io.full_read",
        "io.one_partition",
        "io.range_3day",
        "io.open",
        "memory.reduction",
        "ceiling.page_cache_read",
        "ceiling.memcpy",
    ):
        assert required in names


def test_no_errors_and_positive_figures(quick_run: dict) -> None:
    errors = [(r["name"], r["note"]) for r in quick_run["results"] if r["status"] == "error"]
    assert not errors
    assert quick_run["_returncode"] == 0
    for r in quick_run["results"]:
        assert r["status"] == "ok", r["name"]
        assert r["values"], r["name"]
        for column, stat in r["values"].items():
            for key in ("median", "min", "max"):
                value = stat[key]
                assert math.isfinite(value) and value > 0, (r["name"], column, key, value)
            assert stat["min"] <= stat["median"] <= stat["max"]
        for ratio in r["ratios"].values():
            assert ratio is None or ratio > 0


def test_topic_modules_register_their_group() -> None:
    """Each group's measurements come from the module named after it."""
    import importlib

    for m in benchmarks.registry(benchmarks.Config.quick_config()):
        module = importlib.import_module(f"benchmarks.{m.group}")
        assert m.fn.__module__ == module.__name__, (m.name, m.fn.__module__)
    names = benchmarks.expected_names(benchmarks.Config.quick_config())
    assert len(names) == len(set(names))
    assert "sim.latency[10ms,N=5].read" in names and "codec[lz4,4096].write" in names


def test_table_and_compare(quick_run: dict, tmp_path: Path) -> None:
    from benchmarks._core import Result
    from benchmarks._report import compare, format_table

    assert "dzc/zarr" in quick_run["_stdout"] and "io.full_read" in quick_run["_stdout"]
    results = [Result.from_dict(d) for d in quick_run["results"]]
    assert "io.write" in format_table(results, benchmarks.GROUPS)
    text = compare(results, results)
    assert "new/old" in text and "1.00" in text


def _allocator_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")}


@pytest.mark.cluster
def test_tuned_allocator_tunes_workers_after_a_default_cluster() -> None:
    # Regression: a nanny copies MALLOC_TRIM_THRESHOLD_=65536 into this process's
    # os.environ, which then overrode the config of every later cluster (the
    # cluster_malloc rows measured half-tuned workers).
    from benchmarks.cluster import tuned_allocator

    distributed = pytest.importorskip("distributed")

    def one_worker_env() -> dict[str, str | None]:
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            (env,) = client.run(_allocator_env).values()
            return env  # type: ignore[no-any-return]

    before = _allocator_env()
    try:
        assert one_worker_env()["MALLOC_TRIM_THRESHOLD_"] == "65536"  # the nanny's default
        left = _allocator_env()
        with tuned_allocator():
            tuned = one_worker_env()
        assert tuned == {
            "MALLOC_TRIM_THRESHOLD_": str(128 << 20),
            "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
        }
        assert _allocator_env() == left  # restored
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
