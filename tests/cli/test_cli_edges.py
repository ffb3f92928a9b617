"""``dzc`` edges: a view's URL given to a collection command, vacuum's retention."""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import pytest
from conftest import Factory
from test_cli import run

import dask_zcollection as zc

TIMES = numpy.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]").astype("datetime64[ns]")
FLAG = [{"name": "flag", "dtype": "int8", "dimensions": ["time"], "fill_value": -1}]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def view_url(tmp_path: Path, factory: Factory) -> str:
    base = f"file://{tmp_path}/base"
    factory.create(base, nested=False).insert(factory.data(TIMES, nested=False))
    url = f"file://{tmp_path}/view"
    zc.create_view(url, base=base, variables=FLAG).update(
        lambda ds: {"flag": (ds["quality"].values % 100).astype("int8")}
    )
    return url


@pytest.mark.parametrize(
    "args",
    [
        ("ls",),
        ("info",),
        ("query", "--to", "x.csv"),
        ("verify",),
        ("history",),
        ("vacuum", "--yes"),
    ],
)
def test_a_collection_command_says_a_view_url_is_a_view(
    tmp_path: Path, view_url: str, args: tuple[str, ...]
) -> None:
    # Before: "no collection at ... (_zcollection.json not found)", no hint.
    before = _tree(tmp_path)
    out = run(args[0], view_url, *args[1:], cwd=tmp_path, check=1)
    assert f"{view_url} is a view, not a collection" in out.stderr
    assert "dzc view ls" in out.stderr and "dzc repair" in out.stderr
    assert _tree(tmp_path) == before  # nothing written
    # Not a view either: the message is unchanged.
    out = run(args[0], f"file://{tmp_path}/nothing", *args[1:], cwd=tmp_path, check=1)
    assert "no collection at" in out.stderr and "view" not in out.stderr


def test_repair_takes_a_view(tmp_path: Path, view_url: str) -> None:
    # Before: dzc repair could not open a view (View.repair had no command).
    before = _tree(tmp_path)
    out = run("repair", view_url, "--dry-run", "--json")
    doc = json.loads(out.stdout)
    assert doc["url"] == view_url and doc["dry_run"] is True and doc["changed"] is False
    assert doc["quarantined"] == [] and doc["catalog_version"] is None
    assert _tree(tmp_path) == before
    out = run("repair", view_url, "--yes", "--json")
    assert json.loads(out.stdout)["changed"] is False
    assert zc.open_view(view_url).stale_partitions() == []


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_vacuum_older_than_must_be_seconds(tmp_path: Path, view_url: str, value: str) -> None:
    # Before: --older-than nan was accepted and deleted nothing without a word.
    base = view_url.replace("/view", "/base")
    before = _tree(tmp_path)
    out = run("vacuum", base, "--older-than", value, "--yes", check=2)
    assert "--older-than" in out.stderr and "finite number of seconds >= 0" in out.stderr
    assert _tree(tmp_path) == before
    assert json.loads(run("vacuum", base, "--older-than", "0", "--yes", "--json").stdout) == {
        "url": base,
        "deleted": [],
    }
