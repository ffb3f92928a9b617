"""The seam for ``dzc view create|update|ls``: registered once views exist.

Views (a read-only base collection plus variables of their own, see the
``view`` package when it lands) get their commands here, so ``_app.py`` does not
change: :func:`add_view_commands` adds a ``view`` group to the ``dzc`` group
when :mod:`dask_zcollection.view` can be imported, and nothing otherwise (the
commands are then absent from ``dzc --help`` rather than failing).

What the commands are to be (issue #17): ``dzc view create VIEW_URL BASE_URL
--var NAME:DTYPE:DIMS ...``, ``dzc view update VIEW_URL --func module:function
[--filter ...]`` (``load_function`` in ``_app.py`` turns ``module:function`` into
the callable) and ``dzc view ls VIEW_URL [--json]``; each opens the view
through the public API, as the other commands open collections.
"""

from __future__ import annotations

import importlib.util

import click

__all__ = ["add_view_commands"]


def views_available() -> bool:
    """Whether the package has views (``dask_zcollection.view``)."""
    return importlib.util.find_spec("dask_zcollection.view") is not None


def add_view_commands(group: click.Group) -> None:
    """Add ``view create|update|ls`` to ``group`` when views exist (see the module doc)."""
    if not views_available():
        return

    @group.group("view")
    def view() -> None:
        """Views over a read-only collection (commands to come with the view API)."""
