"""Figures of the campaign tests (stateful, faults, kills), printed in pytest's terminal summary.

A test module calls :func:`report` from a module-scoped fixture; its figures are
printed at the end of the session, under ``-q`` too, with or without ``-s``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest


class _Summary:
    def __init__(self, title: str, lines: Callable[[], Iterable[str]]) -> None:
        self.title = title
        self.lines = lines

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        lines = list(self.lines())
        if lines:
            terminalreporter.write_sep("-", self.title)
            for line in lines:
                terminalreporter.write_line(line)


def report(config: pytest.Config, title: str, lines: Callable[[], Iterable[str]]) -> None:
    """Print ``lines()`` under ``title`` in the terminal summary (once per title)."""
    name = f"zc-figures-{title}"
    if config.pluginmanager.get_plugin(name) is None:
        config.pluginmanager.register(_Summary(title, lines), name)
