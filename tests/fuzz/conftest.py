"""Prints the fuzz suite's per-service summary (tests/helpers/fuzz/report.py) at the end of the
run."""

from __future__ import annotations

import pytest

from tests.helpers.fuzz.report import REPORT_KEY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    report = terminalreporter.config.stash.get(REPORT_KEY, None)
    if report is None:
        return
    terminalreporter.section("fuzz: status codes per service")
    for line in report.summary():
        terminalreporter.write_line(line)
