"""The fuzz suite's own machinery: how a call's end is classified (tests/helpers/fuzz/calls.py),
the minimization of a failing request, and properties of the strategies
(tests/helpers/fuzz/strategies.py). A fake server answers on the paths of real methods, so no
mesh is needed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings

from qtmesh.api.agent.v1 import agent_pb2
from qtmesh.api.alpha.v1 import alpha_reporting_pb2
from qtmesh.api.ceo.v1 import ceo_pb2
from qtmesh.api.federation.v1 import federation_pb2
from tests.helpers.fuzz import calls, strategies
from tests.helpers.fuzz.calls import OPEN, Rpc, call, minimize

UNARY = Rpc(ceo_pb2.DESCRIPTOR.services_by_name["CeoService"].methods_by_name["GetMode"])
STREAM = Rpc(
    alpha_reporting_pb2.DESCRIPTOR.services_by_name["AlphaReportingService"].methods_by_name[
        "WatchReports"
    ]
)
SETTINGS = settings(max_examples=200, database=None, suppress_health_check=list(HealthCheck))


def _wait_until_cancelled(context: grpc.ServicerContext) -> None:
    while context.is_active():
        time.sleep(0.02)


# What the fake server does, chosen by the request body's first byte.
def _unary(body: bytes, context: grpc.ServicerContext) -> bytes:
    if body == b"\x01":
        raise RuntimeError("a bug")
    if body == b"\x02":
        _wait_until_cancelled(context)
    return ceo_pb2.GetModeResponse().SerializeToString()


def _stream(body: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    response = alpha_reporting_pb2.WatchReportsResponse().SerializeToString()
    if body == b"\x01":  # one message, then an error
        yield response
        context.abort(grpc.StatusCode.INTERNAL, "broke")
    if body == b"\x02":  # one message, then nothing more for now
        yield response
        _wait_until_cancelled(context)
    if body == b"\x03":  # nothing yet
        _wait_until_cancelled(context)
    # Otherwise: the stream ends at once.


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(8))
    identity: Callable[[bytes], bytes] = lambda body: body  # noqa: E731
    handlers: dict[str, Any] = {
        UNARY.method.name: grpc.unary_unary_rpc_method_handler(_unary, identity, identity),
    }
    stream_handlers: dict[str, Any] = {
        STREAM.method.name: grpc.unary_stream_rpc_method_handler(_stream, identity, identity),
    }
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(UNARY.service, handlers),
            grpc.method_handlers_generic_handler(STREAM.service, stream_handlers),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    server.stop(0)


def test_a_call_with_one_response_ends_with_its_status(
    channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert call(channel, UNARY, b"").code == "OK"
    assert call(channel, UNARY, b"\x01").code == "UNKNOWN"
    monkeypatch.setattr(calls, "UNARY_DEADLINE_S", 0.3)
    assert call(channel, UNARY, b"\x02").code == "DEADLINE_EXCEEDED"


def test_a_stream_still_open_is_open_but_an_error_it_ends_with_counts(
    channel: grpc.Channel,
) -> None:
    ended = call(channel, STREAM, b"")
    assert (ended.code, ended.received) == ("OK", 0)
    broke = call(channel, STREAM, b"\x01")
    assert (broke.code, broke.received) == ("INTERNAL", 1)
    waiting = call(channel, STREAM, b"\x02")
    assert (waiting.code, waiting.received) == (OPEN, 1)
    quiet = call(channel, STREAM, b"\x03")
    assert (quiet.code, quiet.received) == (OPEN, 0)
    assert quiet.seconds < calls.STREAM_WAIT_S + 2


def test_minimize_keeps_only_what_the_failure_needs() -> None:
    request = agent_pb2.ExecuteActionRequest()
    request.action.id = "a"
    request.action.rationale = "long " * 50
    request.action.parameters.halt_trading.scope = "x"
    request.action.execute_by_time.seconds = 10**15
    request.action.outcome["k"] = "v"

    def fails(message: Message) -> bool:
        assert isinstance(message, agent_pb2.ExecuteActionRequest)
        return message.action.execute_by_time.seconds > 253_402_300_799

    smallest = minimize(request, fails, budget=100)
    expected = agent_pb2.ExecuteActionRequest()
    expected.action.execute_by_time.seconds = 10**15
    assert smallest == expected


def test_timestamps_are_drawn_valid_and_out_of_range() -> None:
    seen: set[bool] = set()

    @SETTINGS
    @given(strategies.timestamps())
    def draw(timestamp: Timestamp) -> None:
        low, high = strategies.TIMESTAMP_SECONDS
        seen.add(low <= timestamp.seconds <= high and 0 <= timestamp.nanos <= 999_999_999)

    draw()
    assert seen == {True, False}


@pytest.mark.parametrize(
    "descriptor",
    [
        federation_pb2.GeneratePlanRequest.DESCRIPTOR,
        agent_pb2.ExecuteActionRequest.DESCRIPTOR,
        alpha_reporting_pb2.SubmitReportRequest.DESCRIPTOR,
    ],
    ids=lambda d: d.name,
)
def test_generated_messages_round_trip_and_bodies_are_bytes(descriptor: Descriptor) -> None:
    @settings(SETTINGS, max_examples=50)
    @given(
        strategies.messages(descriptor, strings=["ORBT"], times=[1_800_000_000]),
        strategies.malformed_bodies(descriptor),
    )
    def draw(message: Message, raw: bytes) -> None:
        body = message.SerializeToString(deterministic=True)
        assert type(message).FromString(body).SerializeToString(deterministic=True) == body
        assert isinstance(raw, bytes)

    draw()
