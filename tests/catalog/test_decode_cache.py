"""The cache of decoded catalog objects: bytes decoded once, never a wrong hit."""

from __future__ import annotations

import zlib

import numpy
import pytest

from dask_zcollection.catalog._catalog import DecodeCache


def test_the_same_bytes_are_decoded_once_and_shared() -> None:
    cache = DecodeCache(entries=2)
    calls: list[bytes] = []

    def decode(raw: bytes) -> numpy.ndarray:
        calls.append(raw)
        return numpy.frombuffer(raw, dtype="uint8")

    first = cache.get(b"abcd", decode)
    again = cache.get(bytes(bytearray(b"abcd")), decode)  # equal bytes, another object
    assert again is first and len(calls) == 1
    assert not first.flags.writeable  # shared: nobody can change it in place
    assert cache.get(b"abce", decode).tolist() == list(b"abce")
    assert len(calls) == 2
    # Least recently used goes first: "abcd" was used before "abce".
    cache.get(b"xyz", decode)
    cache.get(b"abcd", decode)
    assert len(calls) == 4


def test_a_crc_collision_is_not_a_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = DecodeCache()
    monkeypatch.setattr(zlib, "crc32", lambda data: 7)  # every object collides
    assert cache.get(b"one", bytes.upper) == b"ONE"
    assert cache.get(b"two", bytes.upper) == b"TWO"  # same size and CRC, other bytes


def test_failures_and_large_objects_are_not_kept() -> None:
    cache = DecodeCache(largest=4)
    calls = []

    def failing(raw: bytes) -> bytes:
        calls.append(raw)
        raise ValueError("damaged")

    for _ in range(2):
        with pytest.raises(ValueError, match="damaged"):
            cache.get(b"bad", failing)
    assert len(calls) == 2
    big: list[bytes] = []
    for _ in range(2):
        cache.get(b"large!", lambda raw: big.append(raw) or raw)
    assert len(big) == 2
