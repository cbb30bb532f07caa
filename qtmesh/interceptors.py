"""Server interceptor: request ids, token checks, one log line per call and MeshError -> status.

One interceptor does all four because each wrapping layer costs every call; the steps stay small
functions below.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog

from qtmesh.errors import MeshError
from qtmesh.security import TokenAuthenticator
from qtmesh.status import to_status

REQUEST_ID = "x-request-id"
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_log = structlog.get_logger("qtmesh.rpc")


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
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
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
        return _wrap(handler, None, fields, self._domain)


def _metadata_value(metadata: Any, key: str) -> str | None:
    for k, v in metadata:
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


def _rejecting(error: MeshError) -> Callable[..., Any]:
    async def reject(_request: Any, _context: grpc.aio.ServicerContext) -> Any:
        raise error

    return reject


def _wrap(
    handler: grpc.RpcMethodHandler,
    replacement: Callable[..., Any] | None,
    fields: dict[str, Any],
    domain: str,
) -> grpc.RpcMethodHandler:
    """A handler of the same kind whose behaviour runs inside :func:`_call_scope`."""
    if handler.unary_unary or handler.stream_unary:
        inner = replacement or handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _call_scope(context, fields, domain):
                return await inner(request, context)

        factory = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return factory(
            unary_response,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    inner = replacement or handler.unary_stream or handler.stream_stream
    if inspect.isasyncgenfunction(inner):

        async def streaming_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _call_scope(context, fields, domain):
                async for response in inner(request, context):
                    yield response

    else:
        # Handlers that write with context.write() are coroutines and must stay coroutines.
        async def streaming_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _call_scope(context, fields, domain):
                await inner(request, context)

    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return factory(
        streaming_response,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _call_scope:
    """Binds request fields for logging, maps errors to statuses and logs the outcome."""

    __slots__ = ("_context", "_domain", "_fields", "_start", "_tokens")

    def __init__(
        self, context: grpc.aio.ServicerContext, fields: dict[str, Any], domain: str
    ) -> None:
        self._context = context
        self._fields = fields
        self._domain = domain

    async def __aenter__(self) -> None:
        self._tokens = structlog.contextvars.bind_contextvars(**self._fields)
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
