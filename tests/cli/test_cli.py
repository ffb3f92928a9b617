"""The ``dzc`` command line on real collections: ``file://``, Icechunk and the S3 test server.

Two ways to run it, both asserting what it prints, what it writes and its exit
code: :func:`dzc` runs ``python -m dask_zcollection ARGS`` in a subprocess, as a
user does (``PYTHONPATH`` set to this checkout, so the tree under test is
imported, not an installed copy); :func:`run` calls the same entry point,
:func:`dask_zcollection.cli.main`, in this process with stdout and stderr
captured, for the many cases where a new interpreter per call (1.5 s of CPU)
adds nothing. The subprocess runs cover help and usage errors, an error's one
line, ls (file, Icechunk at a tag, S3), query, insert, drop and history.
:func:`test_console_script_is_installed` runs the installed ``dzc`` script itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy
import pandas
import pytest

import dask_zcollection as zc
from dask_zcollection.cli import main
from dask_zcollection.store import IcechunkStore

ROOT = Path(__file__).resolve().parents[2]
#: Months of the test collection: January, March and April 2024 (February is a gap).
MONTHS = ("year=2024/month=01", "year=2024/month=03", "year=2024/month=04")


def dzc(
    *args: str, cwd: Path | None = None, check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dask_zcollection ARGS`` on this checkout; assert the exit code ``check``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("ICECHUNK_LOG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "dask_zcollection", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@dataclasses.dataclass
class Result:
    """What a command printed and its exit code."""

    returncode: int
    stdout: str
    stderr: str


def run(*args: str, cwd: Path | None = None, check: int | None = 0) -> Result:
    """``dzc ARGS`` in this process (``cli.main``); assert the exit code ``check``."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    path = list(sys.path)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(here)
        sys.path[:] = path
    result = Result(code, out.getvalue(), err.getvalue())
    if check is not None:
        assert code == check, result
    return result


def _times() -> numpy.ndarray:
    t = numpy.arange("2024-01-01", "2024-04-10", numpy.timedelta64(6, "h"), dtype="datetime64[ns]")
    return t[(t < numpy.datetime64("2024-02-01")) | (t >= numpy.datetime64("2024-03-01"))]


def populate(factory: Any, url: str, **kwargs: Any) -> dict[str, numpy.ndarray]:
    """Create the collection at ``url`` and insert Jan, Mar and Apr 2024 (every 6 h)."""
    col = factory.create(url, **kwargs)
    data = factory.data(_times(), seed=7)
    col.insert(data)
    return data


def _options(server: Any) -> tuple[dict[str, Any], list[str]]:
    """The S3 server's obstore options, as a dict and as ``-o k=v`` arguments."""
    opts = server.obstore_options()
    args: list[str] = []
    for key, value in opts.items():
        args += ["-o", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return opts, args


# -- reading commands ------------------------------------------------------------------------
def test_help_and_usage_errors_exit_2() -> None:
    out = dzc("--help").stdout
    commands = ("ls", "info", "query", "insert", "drop", "repair", "vacuum", "history", "view")
    for command in commands:
        assert f"  {command} " in out, command
    bad = dzc("ls", check=2)  # no URL
    assert "Missing argument 'URL'" in bad.stderr and bad.stdout == ""
    bad = run("frobnicate", check=2)
    assert "No such command 'frobnicate'" in bad.stderr


def test_ls_info_query_on_file(factory: Any, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/col"
    data = populate(factory, url)
    ls = json.loads(dzc("ls", url, "--json").stdout)
    assert [p["partition"] for p in ls] == list(MONTHS)
    assert [p["rows"] for p in ls] == [124, 124, 36]
    # 8 (time) + 3 * 4 (ssh) + 1 (quality) + 2 * 4 (power) bytes a row, uncompressed
    assert [p["bytes"] for p in ls] == [124 * 29, 124 * 29, 36 * 29]
    assert ls[0]["start"] == "2024-01-01T00:00:00" and ls[2]["end"] == "2024-04-09T18:00:00"
    assert ls[1]["keys"] == {"year": 2024, "month": 3}

    table = run("ls", url, "--filter", "month >= 3").stdout
    assert "year=2024/month=01" not in table
    assert "year=2024/month=03" in table and "2024-03-31T18:00:00" in table
    assert "2 partition(s) of 3, 160 rows" in table
    # --time keeps the partitions overlapping the range
    ranged = json.loads(run("ls", url, "--time", "2024-03-31..2024-04-01", "--json").stdout)
    assert [p["partition"] for p in ranged] == list(MONTHS[1:])

    info = json.loads(run("info", url, "--json").stdout)
    assert info["backend"] == "file" and info["url"] == url
    assert (info["partitions"], info["rows"], info["catalog_version"]) == (3, 284, 2)
    assert info["bytes"] == 284 * 29 + 3 * 2  # and the immutable x_ac (int16)
    assert info["partitioning"]["resolution"] == "M"
    assert info["variables"]["ssh"] == {
        "dimensions": ["time", "x_ac"],
        "dtype": "float32",
        "fill_value": None,  # NaN
        "immutable": False,
        "attrs": {"units": "m"},
    }
    assert info["variables"]["x_ac"]["immutable"] is True
    assert info["attrs"] == {"title": "test collection", "version": 3}
    assert info["groups"] == {"/data_01": {}, "/data_01/ku": {"band": "Ku"}}
    page = tmp_path / "repr.html"
    text = run("info", url, "--html", str(page)).stdout
    assert page.read_text().startswith("<!DOCTYPE html>") and "3 selected of 3" in page.read_text()
    assert "datetime64[ns]" in text and "data_01/ku/power" in text and "catalog:" in text

    # CSV: the long format (one row per time and x_ac), time range trimmed to rows
    out = tmp_path / "out.csv"
    summary = run(
        "query", url, "-f", "month == 4", "--vars", "time,ssh,quality,x_ac",
        "--time", "2024-04-09..", "--to", str(out), "--json",
    ).stdout  # fmt: skip
    doc = json.loads(summary)
    assert (doc["partitions"], doc["of"], doc["format"]) == (1, 3, "csv")
    assert (doc["rows"], doc["table_rows"]) == (4, 12)  # 4 times, 3 x_ac each
    frame = pandas.read_csv(out, parse_dates=["time"])
    assert list(frame.columns) == ["time", "x_ac", "ssh", "quality"]
    keep = data["time"] >= numpy.datetime64("2024-04-09")
    assert (frame["time"].to_numpy() == numpy.repeat(data["time"][keep], 3)).all()
    assert frame["x_ac"].tolist() == [-2, 0, 2] * 4
    numpy.testing.assert_array_equal(
        frame["ssh"].to_numpy("float32"), data["ssh"][keep].reshape(-1)
    )
    assert frame["quality"].tolist() == numpy.repeat(data["quality"][keep], 3).tolist()

    # a table cannot hold two second dimensions: a clear refusal, nothing written
    refused = run("query", url, "--to", str(tmp_path / "all.csv"), check=1)
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "x_ac: ssh; range: data_01/ku/power" in refused.stderr
    assert not (tmp_path / "all.csv").exists()
    # an existing output is kept unless --overwrite
    kept = run("query", url, "--vars", "time", "--to", str(out), check=1)
    assert "exists; pass --overwrite" in kept.stderr
    # Parquet of the 2-D nested variable
    pq = tmp_path / "power.parquet"
    run("query", url, "--vars", "time,data_01/ku/power", "--to", str(pq))
    table = pandas.read_parquet(pq)
    assert list(table.columns) == ["time", "range", "data_01/ku/power"]
    assert len(table) == 284 * 2
    numpy.testing.assert_array_equal(
        table["data_01/ku/power"].to_numpy(), data["data_01/ku/power"].reshape(-1)
    )


def test_errors_exit_1_in_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/missing"
    proc = dzc("info", url, check=1)
    assert proc.stdout == ""
    assert proc.stderr.startswith("dzc: error: CollectionNotFoundError: ")
    assert url.removeprefix("file://") in proc.stderr and proc.stderr.count("\n") == 1
    debug = run("info", url, "--debug", check=1)
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith(proc.stderr.rstrip())
    bad = run("ls", url, "-o", "novalue", check=2)
    assert "expected KEY=VALUE" in bad.stderr


# -- writing commands ------------------------------------------------------------------------
def test_query_to_netcdf_and_zarr_then_insert_round_trips(factory: Any, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/col"
    data = populate(factory, url)
    dzc("query", url, "--to", str(tmp_path / "all.nc"))
    april = run("query", url, "--time", "2024-04-01..", "--to", str(tmp_path / "april.zarr"))
    assert april.stdout.startswith("wrote 36 rows of 5 variable(s) from 1 of 3 partition(s)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.nc", "april.zarr", "col"]
    copy = f"file://{tmp_path}/copy"
    factory.create(copy)
    # an unreadable file stops the command before anything is written
    missing = run("insert", copy, str(tmp_path / "all.nc"), str(tmp_path / "nope.nc"), check=1)
    assert "nope.nc does not exist" in missing.stderr
    assert zc.open_collection(copy).partitions() == []
    proc = dzc(
        "insert", copy, str(tmp_path / "all.nc"), str(tmp_path / "april.zarr"),
        "--merge", "time_series", "--json",
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert doc["partitions"] == list(MONTHS)
    # progress on stderr: files, and the merge-write tasks (one per partition written)
    bars = run("insert", copy, str(tmp_path / "april.zarr"), "--merge", "upsert").stderr
    assert re.search(r"files +━+ 1/1", bars) and re.search(r"partitions written +━+ 1/1", bars)
    assert doc["files"][str(tmp_path / "april.zarr")] == [MONTHS[2]]
    factory.assert_dataset(zc.read_collection(copy).compute(), data)


def test_insert_with_a_custom_merge_function(factory: Any, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/col"
    populate(factory, url)
    run("query", url, "-f", "month == 1", "--to", str(tmp_path / "jan.zarr"))
    (tmp_path / "mymerge.py").write_text(
        "def keep_existing(existing, inserted, *, axis):\n"
        "    return existing if existing is not None else inserted\n"
    )
    before = zc.read_collection(url).filter(month=1).compute()
    assert before is not None
    run("insert", url, str(tmp_path / "jan.zarr"), "--func", "mymerge:keep_existing", cwd=tmp_path)
    after = zc.read_collection(url).filter(month=1).compute()
    factory.assert_dataset(after, {p: before[p].values for p, _ in before.walk()})
    bad = run("insert", url, str(tmp_path / "jan.zarr"), "--func", "nomodule:f", check=2)
    assert "cannot load 'nomodule:f'" in bad.stderr
    both = run(
        "insert", url, str(tmp_path / "jan.zarr"), "--func", "mymerge:keep_existing",
        "--merge", "concat", cwd=tmp_path, check=2,
    )  # fmt: skip
    assert "exclusive" in both.stderr


def test_destructive_commands_need_yes(factory: Any, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/col"
    populate(factory, url)
    for args in (["drop", url, "-f", "month == 1"], ["vacuum", url], ["repair", url]):
        proc = run(*args, check=2)
        assert "pass --yes" in proc.stderr, args
    assert zc.open_collection(url).partitions() == list(MONTHS)
    dry = json.loads(run("drop", url, "-f", "month == 1", "--dry-run", "--json").stdout)
    assert dry == {"url": url, "dry_run": True, "partitions": [MONTHS[0]]}
    assert zc.open_collection(url).partitions() == list(MONTHS)
    dropped = dzc("drop", url, "-f", "month == 1", "--yes").stdout
    assert dropped == f"dropped 1 partition(s)\n  {MONTHS[0]}\n"
    assert zc.open_collection(url).partitions() == list(MONTHS[1:])
    assert run("drop", url, "--yes", check=2).stderr.count("--filter EXPR or --all") == 1
    report = json.loads(run("repair", url, "--dry-run", "--json").stdout)
    assert report["dry_run"] is True and report["changed"] is False
    assert json.loads(run("vacuum", url, "--yes", "--older-than", "0", "--json").stdout) == {
        "url": url,
        "deleted": [],  # retention 0 in the tests: the drop's commit collected it
    }


def test_history_of_an_icechunk_collection(factory: Any, tmp_path: Path) -> None:
    url = f"icechunk://{tmp_path}/repo"
    populate(factory, url)
    zc.open_collection(url, mode="rw").drop_partitions("month == 1")
    spec = IcechunkStore.from_url(url, {})
    repo = spec.repository()
    first = [s.id for s in repo.ancestry(branch="main")]
    repo.create_tag("v1", first[1])
    doc = json.loads(dzc("history", url, "--json").stdout)
    assert doc["branch"] == "main"
    assert [s["id"] for s in doc["snapshots"]] == first
    assert doc["snapshots"][1]["tags"] == ["v1"]
    assert len(json.loads(run("history", url, "-n", "1", "--json").stdout)["snapshots"]) == 1
    # time travel: ls at the tag sees January again; opening prints no Icechunk log
    at = dzc("ls", url, "--at", "v1", "--json")
    assert [p["partition"] for p in json.loads(at.stdout)] == list(MONTHS)
    assert at.stderr == ""
    no = run("history", f"file://{tmp_path}/col", check=1)
    assert "CollectionNotFoundError" in no.stderr
    populate(factory, f"file://{tmp_path}/col")
    plain = run("history", f"file://{tmp_path}/col", check=1)
    assert "keeps no history" in plain.stderr and "icechunk://" in plain.stderr


@pytest.mark.s3
def test_on_the_s3_server(factory: Any, s3: Any, tmp_path: Path) -> None:
    opts, args = _options(s3)
    url = f"s3://test/cli-{tmp_path.name}/col"
    data = populate(factory, url, storage_options=opts)
    ls = json.loads(dzc("ls", url, *args, "--json").stdout)
    assert [(p["partition"], p["rows"]) for p in ls] == list(
        zip(MONTHS, [124, 124, 36], strict=True)
    )
    info = json.loads(run("info", url, *args, "--json").stdout)
    assert (info["backend"], info["rows"]) == ("obstore", 284)
    out = tmp_path / "q.csv"
    dzc("query", url, *args, "-f", "month == 3", "--vars", "time,quality", "--to", str(out))
    frame = pandas.read_csv(out)
    march = (data["time"] >= numpy.datetime64("2024-03")) & (
        data["time"] < numpy.datetime64("2024-04")
    )
    assert frame["quality"].tolist() == data["quality"][march].tolist()
    run("drop", url, *args, "-f", "month == 3", "--yes")
    assert zc.open_collection(url, storage_options=opts).partitions() == [MONTHS[0], MONTHS[2]]
    # a wrong secret: the server refuses, one line, exit 1 (the last -o wins)
    proc = run("ls", url, *args, "-o", "secret_access_key=wrong", check=1)
    assert proc.stderr.startswith("dzc: error: StorageError: ") and proc.stderr.count("\n") == 1
    assert url in proc.stderr


# -- the installed console script ------------------------------------------------------------
def _console_script() -> Path | None:
    """The ``dzc`` script: beside this Python (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "dzc"
    if beside.exists():
        return beside
    found = shutil.which("dzc")
    return Path(found) if found else None


def test_console_script_is_installed(factory: Any, tmp_path: Path) -> None:
    """``dzc`` exists after the README's set-up (``./run`` installs the package).

    Never skipped: a missing script means the package was installed without
    ``[project.scripts]`` (reinstall: ``pip install -e .``), and fails here.
    """
    script = _console_script()
    assert script is not None, (
        f"the dzc console script is neither beside {sys.executable} nor on PATH: "
        "reinstall the package (./run does, or .venv/bin/pip install -e '.[test]')"
    )
    url = f"file://{tmp_path}/col"
    populate(factory, url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(script), "ls", url, "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert [p["partition"] for p in json.loads(proc.stdout)] == list(MONTHS)
    usage = subprocess.run([str(script), "ls"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2


def test_verify_exits_1_on_damage(factory: Any, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/col"
    populate(factory, url)
    assert json.loads(run("verify", url, "--json").stdout)["ok"] is True
    chunk = next((tmp_path / "col" / "year=2024" / "month=03" / "ssh" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.unlink()
    damaged = run("verify", url, "--json", check=1)
    doc = json.loads(damaged.stdout)
    assert doc["ok"] is False
    assert [d[0] for d in doc["damaged"]] == [str(chunk.relative_to(tmp_path / "col"))]
    assert json.loads(run("verify", url, "-f", "month == 4", "--json").stdout)["ok"] is True


def test_a_reference_collection_without_catalog_statistics(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    url = str(fixtures_dir / "date_monthly")
    ls = json.loads(run("ls", url, "--json").stdout)
    assert len(ls) == 4 and {p["rows"] for p in ls} == {None}  # unknown, not 0
    assert "? (no statistics in the catalog)" in run("info", url).stdout
    out = tmp_path / "jan.csv"
    run("query", url, "-f", "month == 1", "--vars", "time,quality", "--to", str(out))
    expected = numpy.load(fixtures_dir / "date_monthly.expected.npz")
    jan = (expected["time"] >= numpy.datetime64("2024-01")) & (
        expected["time"] < numpy.datetime64("2024-02")
    )
    assert pandas.read_csv(out)["quality"].tolist() == expected["quality"][jan].tolist()


def test_view_create_update_ls(factory: Any, tmp_path: Path) -> None:
    base = f"file://{tmp_path}/col"
    data = populate(factory, base)
    view = f"file://{tmp_path}/view"
    (tmp_path / "viewfuncs.py").write_text(
        "def double(ds):\n    return {'ssh2': ds['ssh'].values * 2}\n"
    )
    bad = run("view", "create", view, "--base", base, "--var", "ssh2:float32", check=2)
    assert "expected NAME:DTYPE:DIM" in bad.stderr
    created = run(
        "view", "create", view, "--base", base, "--var", "ssh2:float32:time,x_ac:nan", "--json"
    )
    assert json.loads(created.stdout) == {"url": view, "base": base, "variables": ["ssh2"]}
    updated = run(
        "view", "update", view, "--func", "viewfuncs:double", "-f", "month == 3", cwd=tmp_path
    )
    assert updated.stdout == f"computed 1 partition(s)\n  {MONTHS[1]}\n"
    march = (data["time"] >= numpy.datetime64("2024-03")) & (
        data["time"] < numpy.datetime64("2024-04")
    )
    got = zc.read_view(view, filters="month == 3", variables=["ssh2"]).compute()
    numpy.testing.assert_array_equal(got["ssh2"].values, data["ssh"][march] * 2)
    # the base changes under the view: its computed partition is stale
    zc.open_collection(base, mode="rw").insert(
        factory.data(numpy.array(["2024-03-05"], dtype="datetime64[ns]"), seed=9), merge="upsert"
    )
    doc = json.loads(dzc("view", "ls", view, "--json").stdout)
    assert doc["partitions"] == [{"partition": MONTHS[1], "stale": True}]
    assert doc["not_computed"] == [MONTHS[0], MONTHS[2]]
    text = run("view", "ls", view).stdout
    assert f"  {MONTHS[1]}  (stale)" in text and "2 base partition(s) not computed" in text
