"""Figures of the campaign tests (stateful, faults, kills), printed in pytest's terminal summary.

A test module calls :func:`report` from a module-scoped fixture; its figures are
printed at the end of the session, under ``-q`` too, with or without ``-s``.
Under pytest-xdist a worker prints nothing: it hands its figures to the
controller (``workeroutput``), which prints them (:func:`collect_from_worker`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

#: ``workeroutput`` key of a worker's figures: a list of ``(title, lines)``.
_KEY = "zc_figures"


def _write(terminalreporter: pytest.TerminalReporter, title: str, lines: list[str]) -> None:
    if lines:
        terminalreporter.write_sep("-", title)
        for line in lines:
            terminalreporter.write_line(line)


class _Summary:
    def __init__(self, title: str, lines: Callable[[], Iterable[str]]) -> None:
        self.title = title
        self.lines = lines

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        _write(terminalreporter, self.title, list(self.lines()))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        output = getattr(session.config, "workeroutput", None)
        if output is not None:  # an xdist worker: the controller prints
            output.setdefault(_KEY, []).append((self.title, list(self.lines())))


class _FromWorkers:
    """The figures the xdist workers handed over, by title (printed by the controller)."""

    def __init__(self) -> None:
        self.figures: dict[str, list[str]] = {}

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        for title, lines in self.figures.items():
            _write(terminalreporter, title, lines)


def report(config: pytest.Config, title: str, lines: Callable[[], Iterable[str]]) -> None:
    """Print ``lines()`` under ``title`` in the terminal summary (once per title)."""
    name = f"zc-figures-{title}"
    if config.pluginmanager.get_plugin(name) is None:
        config.pluginmanager.register(_Summary(title, lines), name)


def collect_from_worker(config: pytest.Config, workeroutput: dict[str, Any]) -> None:
    """On the xdist controller: keep the figures of a finished worker for the summary."""
    collected = config.pluginmanager.get_plugin("zc-figures-from-workers")
    if collected is None:
        collected = _FromWorkers()
        config.pluginmanager.register(collected, "zc-figures-from-workers")
    for title, lines in workeroutput.get(_KEY, []):
        collected.figures.setdefault(title, []).extend(lines)
