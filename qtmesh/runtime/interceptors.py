"""The interceptors every server and every channel of the mesh install.

Server side, one interceptor does request ids, token checks, malformed bodies (INVALID_ARGUMENT,
logged like any refused call), one log line per call and MeshError -> status, because each
wrapping layer costs every call; the steps stay small functions below.

Client side, :func:`client_interceptors` (installed by ``open_channel``) gives every outgoing call
the caller's request id (so a call made while serving one carries its id on to the next hop), the
channel's bearer token, and the channel's default deadline when the call sets none and expects
one response. The mesh's own clients map errors in :func:`qtmesh.runtime.status.mesh_stub`, so a
generated stub over the same channel keeps seeing the plain gRPC status.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from qtmesh.base.config import Secret
from qtmesh.base.errors import InvalidArgument, MeshError
from qtmesh.runtime.security import AUTHORIZATION, TokenAuthenticator
from qtmesh.runtime.status import to_status

REQUEST_ID = "x-request-id"
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_log = structlog.get_logger("qtmesh.rpc")
if TYPE_CHECKING:  # generic only in the stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]
# The id of the call being served, if any: outgoing calls carry it on.
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "qtmesh_request_id", default=None
)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler of a server.

    ``domain`` is the ErrorInfo domain of mapped errors. With ``authenticator`` set, every call
    except health checks must carry a known bearer token (probes carry none).
    """

    def __init__(self, *, domain: str, authenticator: TokenAuthenticator | None = None) -> None:
        self._domain = domain
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        metadata = handler_call_details.invocation_metadata or ()
        request_id = _metadata_value(metadata, REQUEST_ID) or uuid.uuid4().hex
        fields: dict[str, Any] = {"request_id": request_id, "method": method}
        if self._authenticator is not None and not method.startswith(_HEALTH_PREFIX):
            try:
                fields["client"] = self._authenticator.authenticate(metadata)
            except MeshError as error:
                return _wrap(handler, _rejecting(error), fields, self._domain)
            if self._authenticator.bound_to_certificates:
                # The peer's certificate is known only to the call's context.
                return _wrap(handler, None, fields, self._domain, _certificate_check(fields))
        return _wrap(handler, None, fields, self._domain)


def _metadata_value(metadata: Any, key: str) -> str | None:
    for k, v in metadata:
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


def _certificate_check(fields: dict[str, Any]) -> Callable[[Context], None]:
    def check(context: Context) -> None:
        TokenAuthenticator.check_certificate(fields["client"], context.auth_context())

    return check


def _rejecting(error: MeshError) -> Callable[..., Any]:
    async def reject(_request: Any, _context: Context) -> Any:
        raise error

    return reject


class _Malformed:
    """What the deserializer hands on for a body that does not parse, so the call itself can
    answer INVALID_ARGUMENT inside its scope (a deserializer that raises is answered UNKNOWN,
    with nothing logged)."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(body: bytes) -> Any:
        try:
            return deserializer(body)
        except Exception as exc:  # DecodeError, or anything a custom deserializer raises
            return _Malformed(f"malformed {len(body)}-byte request body ({exc})")

    return deserialize


def _parsed(request: Any) -> Any:
    if isinstance(request, _Malformed):
        raise InvalidArgument("request", request.problem)
    return request


def _as_sent(request: Any) -> Any:
    return request


async def _parsed_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _parsed(request)


def _wrap(
    handler: Handler,
    replacement: Callable[..., Any] | None,
    fields: dict[str, Any],
    domain: str,
    check: Callable[[Context], None] | None = None,
) -> Handler:
    """A handler of the same kind whose behaviour runs inside :func:`_call_scope`, and which
    answers a request body that does not parse with INVALID_ARGUMENT. ``check`` (of the call's
    context) runs first and refuses the call by raising."""
    # The stubs type a handler's behaviour as a synchronous one; on an aio server it is async.
    inner: Callable[..., Any]
    deserializer = _tolerant(handler.request_deserializer)
    if handler.unary_unary or handler.stream_unary:
        inner = replacement or handler.unary_unary or handler.stream_unary  # type: ignore[assignment]
        parse: Callable[[Any], Any] = _parsed if handler.unary_unary else _parsed_stream
        if replacement is not None:  # a refused call is refused whatever it sent
            parse = _as_sent

        async def unary_response(request: Any, context: Context) -> Any:
            async with _call_scope(context, fields, domain):
                if check is not None:
                    check(context)
                return await inner(parse(request), context)

        factory = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return factory(
            unary_response,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )

    inner = replacement or handler.unary_stream or handler.stream_stream  # type: ignore[assignment]
    parse = _parsed if handler.unary_stream else _parsed_stream
    if replacement is not None:
        parse = _as_sent
    streaming_response: Callable[[Any, Context], Any]
    if inspect.isasyncgenfunction(inner):

        async def yielding(request: Any, context: Context) -> AsyncIterator[Any]:
            async with _call_scope(context, fields, domain):
                if check is not None:
                    check(context)
                async for response in inner(parse(request), context):
                    yield response

        streaming_response = yielding
    else:
        # Handlers that write with context.write() are coroutines and must stay coroutines.
        async def writing(request: Any, context: Context) -> None:
            async with _call_scope(context, fields, domain):
                if check is not None:
                    check(context)
                await inner(parse(request), context)

        streaming_response = writing

    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return factory(
        streaming_response,
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )


class _call_scope:
    """Binds request fields for logging, maps errors to statuses and logs the outcome."""

    __slots__ = ("_context", "_domain", "_fields", "_id_token", "_start", "_tokens")

    def __init__(self, context: Context, fields: dict[str, Any], domain: str) -> None:
        self._context = context
        self._fields = fields
        self._domain = domain

    async def __aenter__(self) -> None:
        self._tokens = structlog.contextvars.bind_contextvars(**self._fields)
        self._id_token = _request_id.set(self._fields["request_id"])
        self._start = time.perf_counter()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> bool:
        elapsed_ms = round((time.perf_counter() - self._start) * 1000, 3)
        try:
            if exc is None:
                _log.debug("rpc", code="OK", elapsed_ms=elapsed_ms)
                return False
            if isinstance(exc, MeshError):
                _log.warning("rpc", code=exc.code, error=exc.message, elapsed_ms=elapsed_ms)
                await self._context.abort_with_status(
                    to_status(
                        exc,
                        domain=self._domain,
                        metadata={"request_id": self._fields["request_id"]},
                    )
                )
            if isinstance(exc, asyncio.CancelledError | GeneratorExit):
                _log.info("rpc", code="CANCELLED", elapsed_ms=elapsed_ms)
                return False
            if isinstance(exc, grpc.aio.AbortError):
                code = self._context.code()
                _log.info("rpc", code=getattr(code, "name", str(code)), elapsed_ms=elapsed_ms)
                return False
            _log.error("rpc", code="INTERNAL", elapsed_ms=elapsed_ms, exc_info=exc)
            await self._context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error; request id {self._fields['request_id']}",
            )
            return False
        finally:
            # A stream closed by the event loop's async-generator finaliser runs in another
            # context, where these tokens cannot be reset (nor need to be).
            with contextlib.suppress(ValueError):
                structlog.contextvars.reset_contextvars(**self._tokens)
            with contextlib.suppress(ValueError):
                _request_id.reset(self._id_token)


# -- client side --------------------------------------------------------------------------------


class _Outgoing:
    """What every call of one channel carries. ``timeout`` is the default deadline in seconds of
    calls with one response; streams of responses run until they end."""

    __slots__ = ("_authorization", "_timeout")

    def __init__(self, *, timeout: float, token: Secret | None) -> None:
        self._timeout = timeout
        self._authorization = f"Bearer {token.reveal()}" if token is not None else None

    def details(
        self, details: grpc.aio.ClientCallDetails, *, one_response: bool
    ) -> grpc.aio.ClientCallDetails:
        timeout = details.timeout
        if timeout is None and one_response:
            timeout = self._timeout
        request_id = _request_id.get()
        if request_id is None and self._authorization is None and timeout is details.timeout:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if request_id is not None and metadata.get(REQUEST_ID) is None:
            metadata.add(REQUEST_ID, request_id)
        if self._authorization is not None:
            metadata.add(AUTHORIZATION, self._authorization)
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, outgoing: _Outgoing) -> None:
        self._outgoing = outgoing

    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._outgoing.details(details, one_response=True), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, outgoing: _Outgoing) -> None:
        self._outgoing = outgoing

    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._outgoing.details(details, one_response=False), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, outgoing: _Outgoing) -> None:
        self._outgoing = outgoing

    async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(
            self._outgoing.details(details, one_response=True), request_iterator
        )


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, outgoing: _Outgoing) -> None:
        self._outgoing = outgoing

    async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(
            self._outgoing.details(details, one_response=False), request_iterator
        )


def client_interceptors(
    *, timeout: float, token: Secret | None
) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors of a mesh channel: one per call arity (gRPC files each under one),
    sharing what the calls carry."""
    outgoing = _Outgoing(timeout=timeout, token=token)
    return [
        _UnaryUnary(outgoing),
        _UnaryStream(outgoing),
        _StreamUnary(outgoing),
        _StreamStream(outgoing),
    ]
