"""A second hostile campaign on Icechunk: branches that do not exist, versions that are
not strings, and two writers on two branches of one repository."""

from __future__ import annotations

from pathlib import Path

import icechunk
import pytest
from conftest import Factory

import dask_zcollection as zc
from dask_zcollection.errors import CollectionNotFoundError, InvalidInputError

pytestmark = pytest.mark.icechunk


def test_a_branch_that_does_not_exist_is_named(tmp_path: Path, factory: Factory) -> None:
    """``storage_options={"branch": "nope"}`` let icechunk's ``RefNotFoundError`` escape on a
    read, and said "no collection (_zcollection.json not found)" on a write (the missing
    branch, a ``KeyError``, was taken for a missing key)."""
    url = f"icechunk://{tmp_path}/repo"
    factory.create(url).insert(factory.data(factory.times("2024-01-05")))
    for mode in ("r", "rw"):
        with pytest.raises(CollectionNotFoundError, match=r"no branch 'nope'"):
            zc.open_collection(url, mode=mode, storage_options={"branch": "nope"})  # type: ignore[arg-type]
    with pytest.raises(CollectionNotFoundError, match=r"no branch 'nope'"):
        zc.read_collection(url, storage_options={"branch": "nope"})


@pytest.mark.parametrize("version", [1, 1.5, b"main", ["main"]])
def test_a_version_that_is_not_a_string_is_invalid_input(
    tmp_path: Path, factory: Factory, version: object
) -> None:
    """``version=1`` let icechunk's ``TypeError`` escape."""
    url = f"icechunk://{tmp_path}/repo"
    factory.create(url).insert(factory.data(factory.times("2024-01-05")))
    with pytest.raises(InvalidInputError, match="version must be a str"):
        zc.read_collection(url, version=version)  # type: ignore[arg-type]


def test_writers_on_two_branches_see_only_their_own_commits(
    tmp_path: Path, factory: Factory
) -> None:
    """Held: a branch is a collection of its own, and the base snapshot stays readable."""
    url = f"icechunk://{tmp_path}/repo"
    main = factory.create(url)
    base = factory.data(factory.times("2024-01-05"))
    main.insert(base)
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(f"{tmp_path}/repo"))
    snapshot = repo.lookup_branch("main")
    repo.create_branch("dev", snapshot)
    dev = zc.open_collection(url, mode="rw", storage_options={"branch": "dev"})
    on_dev = factory.data(factory.times("2024-01-07", "2024-02-05"), seed=1)
    on_main = factory.data(factory.times("2024-01-08", "2024-03-05"), seed=2)
    dev.insert(on_dev, merge="concat")
    main.insert(on_main, merge="concat")
    assert dev.partitions() == ["year=2024/month=01", "year=2024/month=02"]
    assert main.partitions() == ["year=2024/month=01", "year=2024/month=03"]
    got = zc.read_collection(url, storage_options={"branch": "dev"}).compute()["time"].values
    assert got.tolist() == sorted([*base["time"].tolist(), *on_dev["time"].tolist()])
    got = zc.read_collection(url).compute()["time"].values
    assert got.tolist() == sorted([*base["time"].tolist(), *on_main["time"].tolist()])
    assert zc.read_collection(url, version=snapshot).compute()["time"].values.tolist() == (
        base["time"].tolist()
    )
