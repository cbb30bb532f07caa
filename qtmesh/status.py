"""Mapping between MeshError and gRPC status with a google.rpc ErrorInfo, in both directions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from qtmesh.errors import ERRORS_BY_REASON, InvalidArgument, MeshError

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
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
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
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    message: str = error.details() or code.name  # type: ignore[attr-defined]
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
