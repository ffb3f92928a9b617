"""Row selections below the partition: sorted, disjoint half-open ranges per partition.

A :class:`RowSelection` is what an index lookup hands the planner: for each
selected partition (by canonical path, ``year=2024/month=03``), the rows
``[start, stop)`` to read. It is an immutable value (hashable, tokenised by
value) so it can be an operand of a read expression.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy

__all__ = ["Ranges", "RowSelection", "intersect", "merge_ranges"]

#: Half-open row ranges ``((start, stop), ...)``, sorted and disjoint.
Ranges = tuple[tuple[int, int], ...]


def merge_ranges(ranges: Iterable[Sequence[int]]) -> Ranges:
    """Sort ``ranges`` and merge those that overlap or touch (empty ones dropped)."""
    out: list[list[int]] = []
    for a, b in sorted((int(r[0]), int(r[1])) for r in ranges):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


def intersect(a: Ranges, b: Ranges) -> Ranges:
    """Rows in both ``a`` and ``b`` (both sorted and disjoint)."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def clip(ranges: Ranges, start: int, stop: int) -> Ranges:
    """``ranges`` restricted to ``[start, stop)``."""
    return intersect(ranges, ((start, stop),)) if start < stop else ()


@dataclasses.dataclass(frozen=True, slots=True)
class RowSelection:
    """Rows to read of each selected partition.

    Attributes
    ----------
    paths : tuple of str
        Canonical partition paths (``year=2024/month=03``).
    ranges : tuple of Ranges
        The sorted, disjoint ``[start, stop)`` row ranges of each path.
    label : str
        What selected them (for :meth:`~dask_zcollection.LazyCollection.explain`).
    """

    paths: tuple[str, ...]
    ranges: tuple[Ranges, ...]
    label: str = ""

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Iterable[Sequence[int]]], label: str = ""
    ) -> RowSelection:
        """Build from ``{path: [(start, stop), ...]}`` (ranges merged; empty partitions dropped)."""
        items = [(p, merge_ranges(r)) for p, r in mapping.items()]
        items = [(p, r) for p, r in items if r]
        return cls(tuple(p for p, _ in items), tuple(r for _, r in items), label)

    def get(self, path: str) -> Ranges | None:
        """The ranges of ``path`` (``None``: the partition is not selected)."""
        try:
            return self.ranges[self.paths.index(path)]
        except ValueError:
            return None

    def __and__(self, other: RowSelection) -> RowSelection:
        theirs = dict(zip(other.paths, other.ranges, strict=True))
        items = [
            (p, intersect(r, theirs[p]))
            for p, r in zip(self.paths, self.ranges, strict=True)
            if p in theirs
        ]
        items = [(p, r) for p, r in items if r]
        label = " & ".join(x for x in (self.label, other.label) if x)
        return RowSelection(tuple(p for p, _ in items), tuple(r for _, r in items), label)

    @property
    def rows(self) -> int:
        """Rows selected in all."""
        return sum(b - a for r in self.ranges for a, b in r)

    def mask(self, canonical: Sequence[str]) -> numpy.ndarray:
        """Which of the partitions ``canonical`` are selected (boolean)."""
        chosen = set(self.paths)
        return numpy.fromiter((p in chosen for p in canonical), dtype=bool, count=len(canonical))

    def __dask_tokenize__(self) -> Any:
        return ("RowSelection", self.paths, self.ranges)

    def __repr__(self) -> str:
        return f"<RowSelection {len(self.paths)} partition(s), {self.rows} row(s) {self.label}>"
