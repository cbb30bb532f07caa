"""Mapping between MeshError and gRPC status with a google.rpc ErrorInfo, in both directions.

Servers map a raised MeshError to its status (the server interceptor calls :func:`to_status`).
The mesh's clients build their stubs with :func:`mesh_stub`, so every call they make fails with
the MeshError its status stands for, in one place instead of in each client method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from qtmesh.base.errors import ERRORS_BY_REASON, InvalidArgument, MeshError

S = TypeVar("S")
_DETAILS_KEY = "grpc-status-details-bin"
_ERRORS_BY_CODE: dict[str, type[MeshError]] = {}
for _cls in ERRORS_BY_REASON.values():
    _ERRORS_BY_CODE.setdefault(_cls.code, _cls)


def to_status(
    error: MeshError, *, domain: str, metadata: dict[str, str] | None = None
) -> grpc.Status:
    """The gRPC status for ``error``, with an ErrorInfo detail (reason, domain, metadata)."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=domain, metadata={**error.metadata, **(metadata or {})}
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    code = grpc.StatusCode[error.code]
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=error.message, details=[detail])
    )


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo carried by a failed call, if any."""
    # A sync or an aio error: either way trailing metadata is (key, value) pairs.
    trailing: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key != _DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info
    return None


def from_rpc_error(error: grpc.RpcError) -> MeshError:
    """The MeshError a failed call stands for: by ErrorInfo reason, else by status code."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or code.name
    info = error_info(error)
    metadata = dict(info.metadata) if info is not None else {}
    cls = (ERRORS_BY_REASON.get(info.reason) if info is not None else None) or _ERRORS_BY_CODE.get(
        code.name, MeshError
    )
    if cls is InvalidArgument:
        field = metadata.get("field", "request")
        return InvalidArgument(field, message.removeprefix(f"{field}: "))
    return cls(message, metadata=metadata)


@contextmanager
def raising_mesh_errors() -> Iterator[None]:
    """Turns a failed call inside the block into the MeshError it stands for."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error


def mesh_stub(stub: Callable[[Any], S], channel: grpc.aio.Channel) -> S:
    """``stub(channel)`` whose calls raise MeshError instead of grpc.RpcError. Response streams
    map the errors they end with too; ``cancel()`` still cancels the call."""
    return stub(_MappingChannel(channel))


class _MappingChannel:
    """The part of a channel a generated stub uses, with every multicallable wrapped."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def unary_unary(self, *args: Any, **kwargs: Any) -> _OneResponse:
        return _OneResponse(self._channel.unary_unary(*args, **kwargs))

    def stream_unary(self, *args: Any, **kwargs: Any) -> _OneResponse:
        return _OneResponse(self._channel.stream_unary(*args, **kwargs))

    def unary_stream(self, *args: Any, **kwargs: Any) -> _Responses:
        return _Responses(self._channel.unary_stream(*args, **kwargs))

    def stream_stream(self, *args: Any, **kwargs: Any) -> _Responses:
        return _Responses(self._channel.stream_stream(*args, **kwargs))


class _OneResponse:
    __slots__ = ("_method",)

    def __init__(self, method: Any) -> None:
        self._method = method

    async def __call__(self, request: Any, **kwargs: Any) -> Any:
        try:
            return await self._method(request, **kwargs)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error


class _Responses:
    __slots__ = ("_method",)

    def __init__(self, method: Any) -> None:
        self._method = method

    def __call__(self, request: Any, **kwargs: Any) -> _ResponseStream:
        return _ResponseStream(self._method(request, **kwargs))


class _ResponseStream:
    """A call's responses; iterating raises the MeshError the call failed with."""

    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        self._call = call

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[Any]:
        try:
            async for response in self._call:
                yield response
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
