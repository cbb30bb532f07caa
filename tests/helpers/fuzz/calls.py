"""Synchronous generic calls to the mesh: one RPC of any method, given its raw request body.

Every call sends a body through a bytes-passthrough serializer (a generated message is sent as
its serialization), so generated and malformed requests take the same path, and carries its own
``x-request-id`` so the server's log of it can be found. A call with one response gets
:data:`UNARY_DEADLINE_S`; a server stream is read for at most :data:`STREAM_MESSAGES` messages or
:data:`STREAM_WAIT_S` seconds, then cancelled: a stream still open then is :data:`OPEN` (no
error), only a status the server ended it with counts.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.helpers.fuzz.strategies import is_map

UNARY_DEADLINE_S = 20.0
STREAM_WAIT_S = 0.3
STREAM_MESSAGES = 2
CHECK_DEADLINE_S = 5.0
OPEN = "OPEN"  # a server stream that was still open, without error, when the client cancelled it
REQUEST_ID = "x-request-id"


def _passthrough(body: bytes) -> bytes:
    return body


@dataclasses.dataclass(frozen=True)
class Rpc:
    """One unary-unary or unary-stream method of a service, from its descriptor."""

    method: MethodDescriptor

    @property
    def service(self) -> str:
        return self.method.containing_service.full_name

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return self.method.server_streaming

    @property
    def request_class(self) -> type[Message]:
        return GetMessageClass(self.method.input_type)

    @property
    def response_class(self) -> type[Message]:
        return GetMessageClass(self.method.output_type)

    def __str__(self) -> str:
        return f"{self.method.containing_service.name}.{self.method.name}"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one call ended: ``code`` is a status code name, or :data:`OPEN`."""

    code: str
    details: str
    request_id: str
    started: float  # time.monotonic()
    seconds: float
    received: int = 0  # messages of a server stream


def call(channel: grpc.Channel, rpc: Rpc, body: bytes) -> Outcome:
    """Calls ``rpc`` with the raw request ``body`` and waits for how it ended."""
    request_id = uuid.uuid4().hex
    metadata = ((REQUEST_ID, request_id),)
    started = time.monotonic()
    if not rpc.streaming:
        unary = channel.unary_unary(
            rpc.path,
            request_serializer=_passthrough,
            response_deserializer=rpc.response_class.FromString,
        )
        try:
            unary(body, timeout=UNARY_DEADLINE_S, metadata=metadata)
            code, details = "OK", ""
        except grpc.RpcError as error:
            code, details = _status(error)
        return Outcome(code, details, request_id, started, time.monotonic() - started)

    stream = channel.unary_stream(
        rpc.path,
        request_serializer=_passthrough,
        response_deserializer=rpc.response_class.FromString,
    )
    responses: Any = stream(body, timeout=UNARY_DEADLINE_S, metadata=metadata)
    we_cancelled = threading.Event()

    def cancel() -> None:
        we_cancelled.set()
        responses.cancel()

    timer = threading.Timer(STREAM_WAIT_S, cancel)
    timer.start()
    received = 0
    try:
        for _response in responses:
            received += 1
            if received >= STREAM_MESSAGES:
                cancel()
                break
        code, details = responses.code().name, responses.details() or ""
    except grpc.RpcError as error:
        code, details = _status(error)
    finally:
        timer.cancel()
    if code == "CANCELLED" and we_cancelled.is_set():
        code = OPEN
    return Outcome(code, details, request_id, started, time.monotonic() - started, received)


def _status(error: grpc.RpcError) -> tuple[str, str]:
    # A grpc.RpcError raised by a call is also a grpc.Call.
    failed: Any = error
    return failed.code().name, failed.details() or ""


def health_status(channel: grpc.Channel, service: str = "") -> str:
    """SERVING, NOT_SERVING, ... or the status code of a failed check."""
    stub: Any = health_pb2_grpc.HealthStub(channel)
    try:
        response = stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=CHECK_DEADLINE_S
        )
    except grpc.RpcError as error:
        return f"check failed: {_status(error)[0]}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def reflected_services(channel: grpc.Channel) -> list[str]:
    """The services the server lists through reflection."""
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = stub.ServerReflectionInfo(iter([request]), timeout=CHECK_DEADLINE_S)
    for response in responses:
        return sorted(s.name for s in response.list_services_response.service)
    return []


# -- minimizing a failing request -----------------------------------------------------------


def _copy(message: Message) -> Message:
    duplicate = type(message)()
    duplicate.CopyFrom(message)
    return duplicate


def reductions(message: Message) -> Iterator[Message]:
    """Smaller variants of ``message``: each set field cleared, then each element of a repeated
    field or entry of a map dropped, then the same inside each nested message."""
    fields = message.ListFields()
    for field, _value in fields:
        smaller = _copy(message)
        smaller.ClearField(field.name)
        yield smaller
    for field, value in fields:
        if is_map(field):
            for key in list(value):
                smaller = _copy(message)
                del getattr(smaller, field.name)[key]
                yield smaller
        elif field.is_repeated:
            for index in range(len(value)):
                smaller = _copy(message)
                del getattr(smaller, field.name)[index]
                yield smaller
    for field, value in fields:
        if field.type != FieldDescriptor.TYPE_MESSAGE or is_map(field):
            continue
        if field.is_repeated:
            for index, item in enumerate(value):
                for inner in reductions(item):
                    smaller = _copy(message)
                    getattr(smaller, field.name)[index].CopyFrom(inner)
                    yield smaller
        else:
            for inner in reductions(value):
                smaller = _copy(message)
                getattr(smaller, field.name).CopyFrom(inner)
                yield smaller


def minimize(message: Message, fails: Callable[[Message], bool], *, budget: int) -> Message:
    """Greedily takes reductions of ``message`` that still ``fails``, until none does or
    ``budget`` calls of ``fails`` were made. After a reduction it goes on from the same place
    (the reductions before it failed already), and passes over all of them again at the end."""
    current = message
    spent = 0
    start = 0
    while spent < budget:
        candidates = list(reductions(current))
        for index in range(start, len(candidates)):
            if spent >= budget:
                break
            spent += 1
            if fails(candidates[index]):
                current, start = candidates[index], index
                break
        else:
            if start == 0:
                break  # a whole pass without a reduction: done
            start = 0
    return current


_VOLATILE = re.compile(r"\b[0-9a-f]{32}\b|\d+(\.\d+)?")


def normalized(details: str) -> str:
    """``details`` without request ids and numbers, to group failures that differ only there."""
    return _VOLATILE.sub("#", details)[:160]
