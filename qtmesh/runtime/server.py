"""One way to build, serve and stop every server: health, reflection, interceptors, limits, TLS,
metrics (:mod:`qtmesh.runtime.metrics`) and traces (:mod:`qtmesh.runtime.tracing`).

A :class:`MeshServer` hosts one or more gRPC services. ``stop`` is the shutdown sequence of
docs/operations.md: health goes NOT_SERVING for every service, an optional drain period lets load
balancers notice, then ``server.stop(grace)`` lets in-flight calls finish and cancels the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import trace

from qtmesh.base.config import ConfigError, Secret, require, setting
from qtmesh.runtime import reflection, tracing
from qtmesh.runtime.interceptors import ServerInterceptor
from qtmesh.runtime.metrics import Metrics
from qtmesh.runtime.security import TokenAuthenticator, parse_tokens, server_credentials
from qtmesh.runtime.telemetry import LOG_FORMATS, LOG_LEVELS, LogFormat

ENV_PREFIX = "QTMESH_"
_log = structlog.get_logger("qtmesh.server")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Settings every server shares. Environment variables are QTMESH_<NAME>."""

    host: str = setting("127.0.0.1", help="interface to listen on (0.0.0.0 in containers)")
    port: int | None = setting(
        None, help="port to listen on; 0 picks a free one; unset: the service's default port"
    )
    health_port: int | None = setting(
        None,
        help="also serve grpc.health.v1 alone, in plaintext, on this port (for probes that "
        "cannot speak TLS); 0 picks a free one; unset: no second port",
    )
    max_message_bytes: int = setting(
        16 * 1024 * 1024, help="largest message received or sent, in bytes"
    )
    grace_seconds: float = setting(
        5.0, help="on shutdown, how long in-flight calls may finish before they are cancelled"
    )
    drain_seconds: float = setting(
        0.0, help="on shutdown, how long to report NOT_SERVING before refusing new calls"
    )
    keepalive_time_seconds: float = setting(30.0, help="interval of keepalive pings")
    keepalive_timeout_seconds: float = setting(10.0, help="how long to wait for a ping ack")
    max_connection_age_seconds: float = setting(
        0.0, help="close connections after this age so clients re-resolve DNS (0: never)"
    )
    tls_cert_file: Path | None = setting(None, help="PEM server certificate; enables TLS")
    tls_key_file: Path | None = setting(None, help="PEM private key of the server certificate")
    tls_client_ca_file: Path | None = setting(
        None, help="PEM CA that signs client certificates; enables mutual TLS"
    )
    auth_tokens: Secret | None = setting(
        None, help="client:token pairs; when set, every call but health needs a bearer token"
    )
    bind_tokens_to_certificates: bool = setting(
        False,
        help="a token works only over a client certificate naming its client (SAN or CN); "
        "needs tls_client_ca_file and auth_tokens",
    )
    log_format: LogFormat = setting(
        "auto", help="auto (console on a terminal, else json), json, console"
    )
    log_level: str = setting("info", help="debug, info, warning or error")
    log_sample_ratio: float = setting(
        1.0,
        help="share of successful calls logged at info level, drawn from the request id so a "
        "request is logged at every hop or at none (failed calls are always logged)",
    )
    metrics_port: int | None = setting(
        None,
        help="serve Prometheus metrics (GET /metrics, plain HTTP) on this port of host; "
        "0 picks a free one; unset: no metrics endpoint",
    )
    otlp_endpoint: str | None = setting(
        None,
        help="export traces to this OpenTelemetry collector (OTLP over gRPC, e.g. "
        "http://otel-collector:4317); unset: no traces are exported",
    )
    trace_sample_ratio: float = setting(
        1.0, help="share of the traces this server starts that are recorded (callers decide theirs)"
    )

    def __post_init__(self) -> None:
        require(self.port is None or 0 <= self.port <= 65535, "port", "must be in 0..65535")
        require(
            self.health_port is None or 0 <= self.health_port <= 65535,
            "health_port",
            "must be in 0..65535",
        )
        require(
            self.health_port is None or self.health_port == 0 or self.health_port != self.port,
            "health_port",
            "must differ from port",
        )
        require(self.max_message_bytes >= 1024, "max_message_bytes", "must be at least 1024")
        for name in ("grace_seconds", "drain_seconds", "max_connection_age_seconds"):
            require(getattr(self, name) >= 0, name, "must not be negative")
        for name in ("keepalive_time_seconds", "keepalive_timeout_seconds"):
            require(getattr(self, name) > 0, name, "must be positive")
        require(
            (self.tls_cert_file is None) == (self.tls_key_file is None),
            "tls_key_file" if self.tls_cert_file else "tls_cert_file",
            "TLS needs both tls_cert_file and tls_key_file",
        )
        require(
            self.tls_client_ca_file is None or self.tls_cert_file is not None,
            "tls_client_ca_file",
            "mutual TLS needs the server's own tls_cert_file and tls_key_file",
        )
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            require(path is None or path.is_file(), name, f"no such file: {path}")
        if self.auth_tokens is not None:
            parse_tokens(self.auth_tokens, setting="auth_tokens")
        require(
            not self.bind_tokens_to_certificates
            or (self.tls_client_ca_file is not None and self.auth_tokens is not None),
            "bind_tokens_to_certificates",
            "binding tokens to certificates needs mutual TLS (tls_client_ca_file) and auth_tokens",
        )
        require(self.log_format in LOG_FORMATS, "log_format", f"must be one of {LOG_FORMATS}")
        require(self.log_level in LOG_LEVELS, "log_level", f"must be one of {LOG_LEVELS}")
        for name in ("log_sample_ratio", "trace_sample_ratio"):
            require(0.0 <= getattr(self, name) <= 1.0, name, "must be in 0..1")
        require(
            self.metrics_port is None or 0 <= self.metrics_port <= 65535,
            "metrics_port",
            "must be in 0..65535",
        )
        require(
            self.metrics_port in (None, 0)
            or self.metrics_port not in (self.port, self.health_port),
            "metrics_port",
            "must differ from port and health_port",
        )
        require(
            self.otlp_endpoint is None or "://" in self.otlp_endpoint,
            "otlp_endpoint",
            "must be a URL such as http://otel-collector:4317 (https:// for TLS)",
        )

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def grpc_options(self, *, max_request_bytes: int | None = None) -> list[tuple[str, Any]]:
        """The server's options; ``max_request_bytes`` lowers the largest message received."""
        received = self.max_message_bytes
        if max_request_bytes is not None:
            received = min(received, max_request_bytes)
        options: list[tuple[str, Any]] = [
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", received),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_seconds * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # Clients may ping as often as we do; stricter limits make gRPC close busy connections.
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(min(self.keepalive_time_seconds, 10) * 1000),
            ),
            ("grpc.http2.max_ping_strikes", 0),
        ]
        if self.max_connection_age_seconds > 0:
            options += [
                ("grpc.max_connection_age_ms", int(self.max_connection_age_seconds * 1000)),
                ("grpc.max_connection_age_grace_ms", int(self.grace_seconds * 1000)),
            ]
        return options


@dataclasses.dataclass(frozen=True)
class Service:
    """One gRPC service a server hosts: its full name and how to add its servicer."""

    name: str
    register: Callable[[grpc.aio.Server], None]

    @classmethod
    def of(
        cls,
        servicer: object,
        add_to_server: Callable[[Any, grpc.aio.Server], None],
        descriptor: ServiceDescriptor,
    ) -> Service:
        """The service ``descriptor`` (``x_pb2.DESCRIPTOR.services_by_name["X"]``) implemented by
        ``servicer``, added with ``add_to_server`` (``x_pb2_grpc.add_XServicer_to_server``)."""
        return cls(descriptor.full_name, lambda server: add_to_server(servicer, server))


class HealthRoles:
    """Roles a service holds beside serving (the federation's ``federation.leader``), reported
    by grpc.health.v1 under their names: SERVING while held, NOT_SERVING otherwise, so a client
    can Check or Watch one. ``build`` sets them through ``Context.roles``; the server mirrors
    every change once it serves, in the order they were made."""

    def __init__(self) -> None:
        self._held: dict[str, bool] = {}
        self._listener: Callable[[str, bool], None] | None = None

    def set(self, name: str, held: bool) -> None:
        self._held[name] = held
        if self._listener is not None:
            self._listener(name, held)

    def held(self, name: str) -> bool:
        return self._held.get(name, False)

    def attach(self, listener: Callable[[str, bool], None]) -> None:
        self._listener = listener
        for name, held in self._held.items():
            listener(name, held)


class MeshServer:
    """A grpc.aio server with the mesh's health, reflection, interceptors, metrics and shutdown
    sequence. ``metrics`` is the service's registry (one of its own unless given: an App shares
    it with its build); ``tracer_provider``, when given, traces every call but health checks."""

    def __init__(
        self,
        *,
        name: str,
        services: Sequence[Service],
        config: ServerConfig,
        default_port: int = 0,
        on_drain: Callable[[], None] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        max_request_bytes: int | None = None,
        endpoints: Mapping[str, str] | None = None,
        metrics: Metrics | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        roles: HealthRoles | None = None,
    ) -> None:
        self.name = name
        self.roles = roles or HealthRoles()
        self._role_updates: set[asyncio.Task[None]] = set()
        self.metrics = metrics or Metrics()
        self.tracer_provider = tracer_provider
        # What else the service listens on (App's Built.endpoints), by name.
        self.endpoints: dict[str, str] = dict(endpoints or {})
        self.config = config
        self._max_request_bytes = max_request_bytes
        self.health = health.aio.HealthServicer()
        self._services = list(services)
        self._port = default_port if config.port is None else config.port
        self._on_drain = on_drain
        self._on_stop = on_stop
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None
        self.address = ""
        self.health_address = ""

    @property
    def service_names(self) -> list[str]:
        return [s.name for s in self._services]

    async def start(self) -> str:
        """Binds, starts and marks every service SERVING; returns the bound ``host:port``."""
        authenticator = None
        if self.config.auth_tokens is not None:
            authenticator = TokenAuthenticator(
                parse_tokens(self.config.auth_tokens, setting="auth_tokens"),
                bound_to_certificates=self.config.bind_tokens_to_certificates,
            )
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if self.tracer_provider is not None:
            interceptors.append(tracing.server_interceptor(self.tracer_provider))
        interceptors.append(
            ServerInterceptor(
                domain=f"{self.name}.qtmesh",
                authenticator=authenticator,
                metrics=self.metrics.server,
                log_sample_ratio=self.config.log_sample_ratio,
                traced=self.tracer_provider is not None,
            )
        )
        server = grpc.aio.server(
            interceptors=interceptors,
            options=self.config.grpc_options(max_request_bytes=self._max_request_bytes),
        )
        for service in self._services:
            service.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection([*self.service_names, health.SERVICE_NAME], server)
        target = f"{self.config.host}:{self._port}"
        try:
            if self.config.tls:
                credentials = server_credentials(
                    cert_file=self.config.tls_cert_file,  # type: ignore[arg-type]
                    key_file=self.config.tls_key_file,  # type: ignore[arg-type]
                    client_ca_file=self.config.tls_client_ca_file,
                )
                port = server.add_secure_port(target, credentials)
            else:
                port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise ConfigError("port", f"cannot listen on {target}: {exc}") from None
        await server.start()
        self._server = server
        self.address = f"{self.config.host}:{port}"
        try:
            if self.config.health_port is not None:
                self._health_server, self.health_address = await self._start_health_server()
            if self.config.metrics_port is not None:
                self.endpoints["metrics"] = self.metrics.serve(
                    self.config.host, self.config.metrics_port
                )
        except ConfigError:
            await self._stop_listening(None)
            raise
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.roles.attach(self._set_role)
        _log.info(
            "serving",
            server=self.name,
            address=self.address,
            tls=self.config.tls,
            health_address=self.health_address or None,
            metrics_address=self.endpoints.get("metrics"),
        )
        return self.address

    def _set_role(self, name: str, held: bool) -> None:
        response = health_pb2.HealthCheckResponse
        status = response.SERVING if held else response.NOT_SERVING
        # Tasks run in the order they were made: the last change wins.
        task = asyncio.ensure_future(self.health.set(name, status))
        self._role_updates.add(task)
        task.add_done_callback(self._role_updates.discard)

    async def _start_health_server(self) -> tuple[grpc.aio.Server, str]:
        """A plaintext server with only the health service (the same servicer, so it reports
        what the main server reports, NOT_SERVING on shutdown included): a kubelet gRPC probe
        cannot present a client certificate or verify ours."""
        server = grpc.aio.server(options=self.config.grpc_options())
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        target = f"{self.config.host}:{self.config.health_port}"
        try:
            port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise ConfigError("health_port", f"cannot listen on {target}: {exc}") from None
        await server.start()
        return server, f"{self.config.host}:{port}"

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, on_drain, drain period, stop(grace), on_stop. Safe to call twice."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        if self._server is None:
            return
        grace = self.config.grace_seconds if grace is None else grace
        _log.info("stopping", server=self.name, grace_seconds=grace)
        await self.health.enter_graceful_shutdown()
        if self._on_drain is not None:
            self._on_drain()
        if self.config.drain_seconds > 0:
            await asyncio.sleep(self.config.drain_seconds)
        await self._stop_listening(grace)
        if self._on_stop is not None:
            await self._on_stop()
        _log.info("stopped", server=self.name)

    async def _stop_listening(self, grace: float | None) -> None:
        stops = [server.stop(grace) for server in (self._server, self._health_server) if server]
        await asyncio.gather(*stops)
        # Scrapes are answered through the drain and the grace period, to the last call.
        await asyncio.to_thread(self.metrics.close)
        self._server = self._health_server = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve_until_signalled(
    server: MeshServer, *, ready: Callable[[str], None] | None = None
) -> None:
    """Starts ``server``, calls ``ready(address)``, and stops gracefully on SIGTERM or SIGINT."""
    await server.start()
    # Everything loaded so far (modules, descriptors, compiled kernels) lives as long as the
    # process: moved out of the collector's sight, full collections stop re-scanning it. A
    # larger first generation lets the many short-lived objects of each call die uncollected;
    # together they keep collector pauses out of the tail latency of streams and calls.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if ready is not None:
            ready(server.address)
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
