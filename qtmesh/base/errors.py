"""The one exception root of the mesh; servers map each class to a gRPC status with an ErrorInfo.

Domain code raises these without importing grpc. The server interceptor turns them into a
``google.rpc.Status`` carrying an ``ErrorInfo`` (reason, domain, metadata); clients turn such a
status back into the same class, so a remote call fails exactly like the in-process one would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class MeshError(Exception):
    """Root of every error the mesh reports to callers.

    ``code`` is the name of a ``grpc.StatusCode``; ``reason`` is the stable, UPPER_SNAKE_CASE
    ErrorInfo reason clients may switch on; ``metadata`` carries structured details.
    """

    code: ClassVar[str] = "INTERNAL"
    reason: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidArgument(MeshError):
    """A request field is wrong. ``field`` names it (a path such as ``series[0].high[12]``)."""

    code = "INVALID_ARGUMENT"
    reason = "INVALID_FIELD"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", metadata={"field": field})
        self.field = field
        self.problem = problem


class NotFound(MeshError):
    code = "NOT_FOUND"
    reason = "NOT_FOUND"


class AlreadyExists(MeshError):
    code = "ALREADY_EXISTS"
    reason = "ALREADY_EXISTS"


class FailedPrecondition(MeshError):
    """The request is valid but the system is not in a state to serve it."""

    code = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(MeshError):
    code = "RESOURCE_EXHAUSTED"
    reason = "RESOURCE_EXHAUSTED"


class Unauthenticated(MeshError):
    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class Unavailable(MeshError):
    """A dependency cannot be reached; retrying later may succeed."""

    code = "UNAVAILABLE"
    reason = "UNAVAILABLE"


class Unimplemented(MeshError):
    """The server does not offer this method (an older build, or a service in the wrong place)."""

    code = "UNIMPLEMENTED"
    reason = "UNIMPLEMENTED"


class DeadlineExceeded(MeshError):
    """The call's deadline passed before the work finished."""

    code = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"


class DataIntegrityError(MeshError):
    """Stored data failed verification (a tampered record, a broken hash chain)."""

    code = "DATA_LOSS"
    reason = "INTEGRITY_CHECK_FAILED"


ERRORS_BY_REASON: Mapping[str, type[MeshError]] = {
    cls.reason: cls
    for cls in (
        MeshError,
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unauthenticated,
        Unavailable,
        Unimplemented,
        DeadlineExceeded,
        DataIntegrityError,
    )
}
