"""What an error's log line holds: the exception and a bounded traceback, never the frames' locals
(request payloads, credentials)."""

from __future__ import annotations

import json

import pytest
import structlog

from qtmesh.runtime.telemetry import TRACEBACK_FRAMES, configure_logging


def _fail(depth: int, payload: str) -> None:
    if depth:
        _fail(depth - 1, payload)
    raise ValueError("the request was bad")


def _log_a_deep_failure(payload: str) -> None:
    log = structlog.get_logger("qtmesh.rpc")
    try:
        _fail(3 * TRACEBACK_FRAMES, payload)
    except ValueError as exc:
        log.error("rpc", code="INTERNAL", exc_info=exc)


def test_json_errors_carry_a_bounded_traceback_without_locals(capsys: pytest.CaptureFixture[str]):
    configure_logging(fmt="json", service="risk")
    _log_a_deep_failure("card=4111-1111-1111-1111")
    [line] = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    [exception] = entry["exception"]
    assert exception["exc_type"] == "ValueError"
    assert exception["exc_value"] == "the request was bad"
    assert len(exception["frames"]) <= TRACEBACK_FRAMES + 1  # rich adds one for what it skipped
    assert all(not frame.get("locals") for frame in exception["frames"])
    assert "4111" not in line


def test_console_errors_carry_a_bounded_traceback_without_locals(
    capsys: pytest.CaptureFixture[str],
):
    configure_logging(fmt="console", service="risk")
    _log_a_deep_failure("card=4111-1111-1111-1111")
    output = capsys.readouterr().err
    assert "ValueError" in output
    assert "the request was bad" in output
    assert "4111" not in output
    assert output.count("in _fail") <= TRACEBACK_FRAMES
