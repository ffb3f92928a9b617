"""Benchmarks of dask_zcollection beside raw zarr-python and xarray.

Run ``python -m benchmarks --help``. Each measurement is a small function
with a name and a group, in the module of its group (:mod:`benchmarks.io`,
:mod:`benchmarks.partitions`...); :func:`benchmarks._suite.registry` lists
them in run order.
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
