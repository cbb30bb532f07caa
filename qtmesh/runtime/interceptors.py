"""The interceptors every server and every channel of the mesh install.

Server side, one interceptor does request ids, token checks, malformed bodies (INVALID_ARGUMENT,
logged like any refused call), the RPC metrics, one log line per call and MeshError -> status,
because each wrapping layer costs every call; the steps stay small functions below.

Every call is logged once, at its end, with its method, code, duration, request id and (when
the process traces) trace id: a call that failed at warning or error level, always; a call that
succeeded at info level, for the share ``log_sample_ratio`` of request ids. The sample is drawn
from the request id, not per process, so a request that is logged is logged at every hop.
Health checks (probes, every few seconds) are logged at debug level.

Client side, :func:`client_interceptors` (installed by ``open_channel``) gives every outgoing call
the caller's request id (so a call made while serving one carries its id on to the next hop), the
channel's bearer token, and the channel's default deadline when the call sets none and expects
one response; given the process's metrics, it records the client-side RPC metrics too. Work
that starts hops of its own, outside any call (a timer's planning cycle), runs inside
:func:`request_scope` to give its hops one id. The mesh's own clients map errors in
:func:`qtmesh.runtime.status.mesh_stub`, so a generated stub over the same channel keeps seeing
the plain gRPC status.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from opentelemetry import trace

from qtmesh.base.config import Secret
from qtmesh.base.errors import InvalidArgument, MeshError
from qtmesh.runtime import tracing
from qtmesh.runtime.metrics import RpcMetrics, RpcType, rpc_type
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


@contextlib.contextmanager
def request_scope() -> Iterator[str]:
    """Binds a new request id for the block, unless one is bound already (the block runs while
    serving a call): every call made inside carries it, and every log line shows it."""
    current = _request_id.get()
    if current is not None:
        yield current
        return
    request_id = uuid.uuid4().hex
    token = _request_id.set(request_id)
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            yield request_id
        finally:
            _request_id.reset(token)


def sampled(request_id: str, ratio: float) -> bool:
    """Whether a successful call of ``request_id`` is logged: the same answer at every hop."""
    if ratio >= 1.0:
        return True
    return zlib.crc32(request_id.encode()) < ratio * 2**32


class _Policy:
    """What every call of one server shares: how errors map, what is recorded and logged."""

    __slots__ = ("domain", "log_sample_ratio", "metrics", "traced")

    def __init__(
        self, domain: str, metrics: RpcMetrics | None, log_sample_ratio: float, traced: bool
    ) -> None:
        self.domain = domain
        self.metrics = metrics
        self.log_sample_ratio = log_sample_ratio
        self.traced = traced


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler of a server.

    ``domain`` is the ErrorInfo domain of mapped errors. With ``authenticator`` set, every call
    except health checks must carry a known bearer token (probes carry none). ``metrics``
    receives the server-side RPC metrics; ``log_sample_ratio`` is the share of successful calls
    logged (module docstring). ``traced``: the server runs OpenTelemetry's interceptor before
    this one, and log lines carry the call's trace id.
    """

    def __init__(
        self,
        *,
        domain: str,
        authenticator: TokenAuthenticator | None = None,
        metrics: RpcMetrics | None = None,
        log_sample_ratio: float = 1.0,
        traced: bool = False,
    ) -> None:
        self._policy = _Policy(domain, metrics, log_sample_ratio, traced)
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
        policy = self._policy
        if self._authenticator is not None and not method.startswith(_HEALTH_PREFIX):
            try:
                fields["client"] = self._authenticator.authenticate(metadata)
            except MeshError as error:
                return _wrap(handler, _rejecting(error), fields, policy)
            if self._authenticator.bound_to_certificates:
                # The peer's certificate is known only to the call's context.
                return _wrap(handler, None, fields, policy, _certificate_check(fields))
        return _wrap(handler, None, fields, policy)


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
    policy: _Policy,
    check: Callable[[Context], None] | None = None,
) -> Handler:
    """A handler of the same kind whose behaviour runs inside a :class:`_Scope`'s call, and which
    answers a request body that does not parse with INVALID_ARGUMENT. ``check`` (of the call's
    context) runs first and refuses the call by raising."""
    # The stubs type a handler's behaviour as a synchronous one; on an aio server it is async.
    inner: Callable[..., Any]
    deserializer = _tolerant(handler.request_deserializer)
    kind = rpc_type(
        request_streaming=handler.request_streaming, response_streaming=handler.response_streaming
    )
    scope = _Scope(fields, policy, kind)
    if handler.unary_unary or handler.stream_unary:
        inner = replacement or handler.unary_unary or handler.stream_unary  # type: ignore[assignment]
        parse: Callable[[Any], Any] = _parsed if handler.unary_unary else _parsed_stream
        if replacement is not None:  # a refused call is refused whatever it sent
            parse = _as_sent

        async def unary_response(request: Any, context: Context) -> Any:
            async with scope.call(context):
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
            async with scope.call(context):
                if check is not None:
                    check(context)
                async for response in inner(parse(request), context):
                    yield response

        streaming_response = yielding
    else:
        # Handlers that write with context.write() are coroutines and must stay coroutines.
        async def writing(request: Any, context: Context) -> None:
            async with scope.call(context):
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


class _Scope:
    """One call's log fields, its server's policy, and its method's metric series."""

    __slots__ = ("fields", "log_ok", "policy", "rpc")

    def __init__(self, fields: dict[str, Any], policy: _Policy, kind: RpcType) -> None:
        self.fields = fields
        self.policy = policy
        method: str = fields["method"]
        self.rpc = policy.metrics.rpc(method, kind) if policy.metrics is not None else None
        if method.startswith(_HEALTH_PREFIX):
            self.log_ok = _log.debug
        elif sampled(fields["request_id"], policy.log_sample_ratio):
            self.log_ok = _log.info
        else:
            self.log_ok = None

    def call(self, context: Context) -> _call_scope:
        return _call_scope(context, self)


class _call_scope:
    """Binds request fields for logging, maps errors to statuses, records and logs the outcome."""

    __slots__ = ("_context", "_id_token", "_scope", "_start", "_tokens")

    def __init__(self, context: Context, scope: _Scope) -> None:
        self._context = context
        self._scope = scope

    async def __aenter__(self) -> None:
        fields = self._scope.fields
        if self._scope.policy.traced:
            span = trace.get_current_span().get_span_context()
            if span.is_valid:
                fields = {**fields, "trace_id": trace.format_trace_id(span.trace_id)}
        self._tokens = structlog.contextvars.bind_contextvars(**fields)
        self._id_token = _request_id.set(fields["request_id"])
        if self._scope.rpc is not None:
            self._scope.rpc.started.inc()
        self._start = time.perf_counter()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> bool:
        elapsed = time.perf_counter() - self._start
        elapsed_ms = round(elapsed * 1000, 3)
        code = "OK"
        try:
            if exc is None:
                if self._scope.log_ok is not None:
                    self._scope.log_ok("rpc", code=code, elapsed_ms=elapsed_ms)
                return False
            if isinstance(exc, MeshError):
                code = exc.code
                _log.warning("rpc", code=code, error=exc.message, elapsed_ms=elapsed_ms)
                await self._context.abort_with_status(
                    to_status(
                        exc,
                        domain=self._scope.policy.domain,
                        metadata={"request_id": self._scope.fields["request_id"]},
                    )
                )
            if isinstance(exc, asyncio.CancelledError | GeneratorExit):
                code = "CANCELLED"
                _log.info("rpc", code=code, elapsed_ms=elapsed_ms)
                return False
            if isinstance(exc, grpc.aio.AbortError):
                aborted = self._context.code()
                code = getattr(aborted, "name", str(aborted))
                _log.info("rpc", code=code, elapsed_ms=elapsed_ms)
                return False
            code = "INTERNAL"
            _log.error("rpc", code=code, elapsed_ms=elapsed_ms, exc_info=exc)
            await self._context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error; request id {self._scope.fields['request_id']}",
            )
            return False
        finally:
            if self._scope.rpc is not None:
                self._scope.rpc.handled(code, elapsed)
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

    __slots__ = ("_authorization", "_recording", "_timeout", "metrics")

    def __init__(self, *, timeout: float, token: Secret | None, metrics: RpcMetrics | None) -> None:
        self._timeout = timeout
        self._authorization = f"Bearer {token.reveal()}" if token is not None else None
        self.metrics = metrics
        self._recording: set[asyncio.Task[None]] = set()

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

    async def one_response(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any, kind: RpcType
    ) -> Any:
        details = self.details(details, one_response=True)
        if self.metrics is None:
            return await continuation(details, request)
        rpc = self.metrics.rpc(_method_name(details.method), kind)
        rpc.started.inc()
        start = time.perf_counter()
        code = "UNKNOWN"
        try:
            call = await continuation(details, request)
            code = (await call.code()).name
            return call
        except grpc.aio.AioRpcError as error:
            code = error.code().name
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            rpc.handled(code, time.perf_counter() - start)

    async def responses(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any, kind: RpcType
    ) -> Any:
        details = self.details(details, one_response=False)
        if self.metrics is None:
            return await continuation(details, request)
        rpc = self.metrics.rpc(_method_name(details.method), kind)
        rpc.started.inc()
        start = time.perf_counter()
        call = await continuation(details, request)

        def ended(done: Any) -> None:
            # A done call's code() completes at once, but only as a coroutine.
            task = asyncio.ensure_future(_record(done, rpc, start))
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)

        call.add_done_callback(ended)
        return call


async def _record(call: Any, rpc: Any, start: float) -> None:
    code: grpc.StatusCode = await call.code()
    rpc.handled(code.name, time.perf_counter() - start)


def _method_name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, outgoing: _Outgoing) -> None:
        self._outgoing = outgoing

    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await self._outgoing.one_response(continuation, details, request, "UNARY")


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, outgoing: _Outgoing) -> None:
        self._outgoing = outgoing

    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await self._outgoing.responses(continuation, details, request, "SERVER_STREAM")


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, outgoing: _Outgoing) -> None:
        self._outgoing = outgoing

    async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await self._outgoing.one_response(
            continuation, details, request_iterator, "CLIENT_STREAM"
        )


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, outgoing: _Outgoing) -> None:
        self._outgoing = outgoing

    async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await self._outgoing.responses(
            continuation, details, request_iterator, "BIDI_STREAM"
        )


def client_interceptors(
    *,
    timeout: float,
    token: Secret | None,
    metrics: RpcMetrics | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors of a mesh channel: one per call arity (gRPC files each under one),
    sharing what the calls carry, then, with ``tracer_provider``, OpenTelemetry's, which
    start each call's client span and send its trace context on."""
    outgoing = _Outgoing(timeout=timeout, token=token, metrics=metrics)
    interceptors: list[grpc.aio.ClientInterceptor] = [
        _UnaryUnary(outgoing),
        _UnaryStream(outgoing),
        _StreamUnary(outgoing),
        _StreamStream(outgoing),
    ]
    if tracer_provider is not None:
        interceptors += tracing.client_interceptors(tracer_provider)
    return interceptors
