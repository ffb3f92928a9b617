"""Benchmarks of dask_zcollection beside raw zarr-python and xarray.

Run ``python -m benchmarks --help``. Each measurement is a small function
registered in :func:`benchmarks._suite.registry` with a name and a group;
those that need the lazy read path (``dask_zcollection.read_collection``)
report ``n/a (not implemented)`` until it exists.
"""

from ._core import Config, Measurement, Result, Stat
from ._suite import GROUPS, expected_names, registry
from .cli import main, run

__all__ = [
    "GROUPS",
    "Config",
    "Measurement",
    "Result",
    "Stat",
    "expected_names",
    "main",
    "registry",
    "run",
]
