"""Indexes below the partition: row ranges keyed by computed columns.

:class:`Indexer` builds one over a collection (a builder per partition, as a
Dask graph), reads and writes it as parquet on any backend, and answers
lookups as row ranges per partition; ``LazyCollection.filter(index=...)``
reads only those rows.
"""

from ._indexer import Indexer
from ._selection import RowSelection

__all__ = ["Indexer", "RowSelection"]
