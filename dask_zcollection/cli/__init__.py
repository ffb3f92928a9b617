"""The ``dzc`` command line: look at, query and maintain a collection from a shell.

``dzc --help`` lists the commands; ``python -m dask_zcollection`` is the same
program. Exit codes: 0 success, 1 a library error (one line on stderr; the
traceback with ``--debug``), 2 a usage error. See ``docs/cli.md``.
"""

from __future__ import annotations

from ._app import cli, main

__all__ = ["cli", "main"]
