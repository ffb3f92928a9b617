"""Lazy writes on a ``distributed`` cluster whose compute fails before their commit task.

A task failing upstream of a write's tasks (its input) leaves the write's
commit task never run and no task of the write to abort it; the scheduler
marks the commit task erred. :class:`LazyWriteWatch`, a scheduler plugin
registered once per client by the first lazy write planned under it, starts
the abort then (the local schedulers' twin is
``io._writer._FailedComputeWatch``).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..io._writer import COMMIT_PREFIX, WriteContext, abort_lazy
from ._dask import data_argument

__all__ = ["LazyWriteWatch", "watch_cluster"]

_log = logging.getLogger("dask_zcollection")

#: States of a task that has not run (and is not running); not ``released``: a task
#: that ran and whose result was freed is released too ...
_NOT_RUN = frozenset({"waiting", "queued", "no-worker"})
#: ... and those it leaves them for when it never will: an erred dependency, or
#: nobody wants it any more (its future cancelled or dropped, its client gone).
_GIVEN_UP = frozenset({"erred", "released", "forgotten"})
#: Clients whose scheduler has the watch.
_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()


class LazyWriteWatch(SchedulerPlugin):
    """Aborts a lazy write whose commit task the scheduler gives up before it ran.

    It leaves ``waiting`` for ``released`` when its compute is cancelled (the
    future dropped, the client gone) and when an input failed (then on to
    ``erred``: seen on distributed 2026.8). A lazy write so given up cannot be
    computed again: its tasks find the abort marker. A commit task that ran
    publishes or aborts by itself (``processing -> ...``: never aborted from
    here, it may be publishing).
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
        if start not in _NOT_RUN or finish not in _GIVEN_UP or self.scheduler is None:
            return
        if not (isinstance(key, tuple) and str(key[0]).startswith(COMMIT_PREFIX)):
            return
        task = self.scheduler.tasks.get(key)
        ctx = data_argument(getattr(task, "run_spec", None), 0)
        if isinstance(ctx, WriteContext):
            abort_lazy(ctx)


def watch_cluster(client: Any) -> None:
    """Register :class:`LazyWriteWatch` on ``client``'s scheduler (once per client).

    Best effort: an asynchronous client (it cannot be waited for here) or a
    scheduler refusing the plugin leaves such failures to recovery (logged).
    """
    if client in _WATCHED:
        return
    _WATCHED.add(client)
    if getattr(client, "asynchronous", False):
        _log.warning(
            "lazy writes planned under an asynchronous distributed client are not watched: "
            "one whose input fails keeps its locks until recovery"
        )
        return
    try:
        client.register_plugin(LazyWriteWatch())
    except Exception as err:
        _log.warning("cannot watch lazy writes on the scheduler of %s: %s", client, err)
