"""Lazy writes on a ``distributed`` cluster whose compute fails before their commit task.

A task failing upstream of a write's tasks (its input) leaves the write's
commit task never run and no task of the write to abort it; the scheduler
marks the commit task erred. :class:`LazyWriteWatch`, a scheduler plugin
registered once per client by the first lazy write planned under it, starts
the abort then (the local schedulers' twin is
``io._writer._FailedComputeWatch``).
"""

from __future__ import annotations

import weakref
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..io._writer import COMMIT_PREFIX, WriteContext, abort_lazy
from ._dask import data_argument

__all__ = ["LazyWriteWatch", "watch_cluster"]

#: Clients whose scheduler has the watch.
_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()


class LazyWriteWatch(SchedulerPlugin):
    """Aborts a lazy write when its commit task errs without having run (its input failed).

    A commit task that ran and failed aborted itself (``processing -> erred``);
    one erred from ``waiting`` (or ``queued``, ``no-worker``) never will run.
    The abort runs in the scheduler's process, beside its event loop.
    """

    name = "dask_zcollection-lazy-writes"
    idempotent = True

    def __init__(self) -> None:
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def transition(
        self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any
    ) -> None:
        if finish != "erred" or start == "processing" or self.scheduler is None:
            return
        if not (isinstance(key, tuple) and str(key[0]).startswith(COMMIT_PREFIX)):
            return
        task = self.scheduler.tasks.get(key)
        ctx = data_argument(getattr(task, "run_spec", None), 0)
        if isinstance(ctx, WriteContext):
            abort_lazy(ctx)


def watch_cluster(client: Any) -> None:
    """Register :class:`LazyWriteWatch` on ``client``'s scheduler (once per client)."""
    if client in _WATCHED:
        return
    client.register_plugin(LazyWriteWatch())
    _WATCHED.add(client)
