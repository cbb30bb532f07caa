"""What an error's log line holds: the exception and a bounded traceback, never the frames' locals
(request payloads, credentials)."""

from __future__ import annotations

import json
import sys

import grpc
import pytest
import structlog

from qtmesh.runtime.telemetry import TRACEBACK_FRAMES, configure_logging
from qtmesh.testing import make_certificates
from tests.helpers.processes import service_process


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


@pytest.mark.skipif(sys.platform != "linux", reason="a service process")
async def test_a_failed_tls_handshake_is_an_event_of_the_services_log(tmp_path):
    certificates = make_certificates(tmp_path / "certificates")
    env = {
        "QTMESH_TLS_CERT_FILE": str(certificates.server_cert),
        "QTMESH_TLS_KEY_FILE": str(certificates.server_key),
        "QTMESH_LOG_FORMAT": "json",
        "QTMESH_MARKET_SYNTHETIC_DAYS": "2",
        "QTMESH_MARKET_DATA_DIR": str(tmp_path / "market"),
    }
    log = tmp_path / "market.log"
    async with service_process("market", env=env, log_path=log) as market:
        # Plaintext against TLS: the server's handshake fails.
        async with grpc.aio.insecure_channel(market.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/qtmesh.api.market.v1.MarketService/Snapshot")(
                    b"", timeout=5
                )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # Stopped: every line is written.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    failed = [e for e in lines if e["event"] == "tls handshake failed"]
    assert failed, "no handshake failure in the log"
    assert failed[0]["level"] == "warning"
    assert failed[0]["service"] == "market"
    assert "SSL" in failed[0]["error"]
