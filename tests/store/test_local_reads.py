"""``LocalStore.get``: small objects read on the event loop, large ones on a thread, same bytes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from dask_zcollection.store import LocalStore, _local


@pytest.mark.parametrize("size", [0, 1, _local.INLINE_BYTES - 1, _local.INLINE_BYTES, 300_000])
def test_get_returns_the_file_bytes_inline_or_not(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(size)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "k").write_bytes(data)
    hops: list[Any] = []
    real = asyncio.to_thread

    async def to_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    spec = LocalStore(str(tmp_path))
    assert asyncio.run(spec.get("a/k")) == data
    # Below INLINE_BYTES no thread is involved; zarr's store reads the others.
    assert (hops == []) is (size < _local.INLINE_BYTES)


def test_get_of_a_missing_key_or_a_directory_is_none(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"x")
    spec = LocalStore(str(tmp_path))
    assert asyncio.run(spec.get("missing")) is None
    assert asyncio.run(spec.get("d")) is None  # a prefix, not an object
    assert asyncio.run(spec.get("f/below")) is None  # below a file
    assert asyncio.run(LocalStore(str(tmp_path / "nowhere")).get("f")) is None
    assert not (tmp_path / "nowhere").exists()
