"""What a mesh service declares so the runtime can configure, build, serve and stop it.

A service declares the clients it needs once, as :class:`Uses` entries of its :class:`App`. From
that one declaration the runtime opens a channel per client before ``build`` runs, hands the
clients to ``build`` through :meth:`Context.client`, closes the channels at shutdown, and derives
the service's ``depends_on`` (the start order of ``qtmesh up``) and ``calls`` (every service it
calls). A client that ``build`` asks for but the App does not declare, or one it declares but
never asks for, is an error at build time, so the declaration and the wiring cannot drift apart.

A client declared ``followed=True`` is one whose stream the service follows in the background,
reconnecting until the other service is up: it is in ``calls`` but not in ``depends_on``, so the
other service may start later, and may itself depend on this one (the federation asks the meta
optimizer for recommendations; the meta optimizer follows the federation's plans).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import grpc
import structlog
from opentelemetry import trace

from qtmesh.base import config as configuration
from qtmesh.runtime import tracing
from qtmesh.runtime.channels import ChannelConfig, open_channel
from qtmesh.runtime.metrics import Metrics
from qtmesh.runtime.server import HealthRoles, MeshServer, ServerConfig, Service

C = TypeVar("C")
T = TypeVar("T")
_log = structlog.get_logger("qtmesh.app")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Uses:
    """A client a service needs: the service it calls and how to make the client of a channel.

    ``timeout`` is the default deadline, in seconds, of the client's calls with one response
    (unset: the channel config's ``call_timeout_seconds``). ``retry_unavailable=False`` leaves
    retrying to the caller (a caller that reports a dead peer within its own budget).
    ``followed=True``: the service only follows the other's stream and reconnects until it is
    up, so the other is no start-order dependency (not in ``App.depends_on``)."""

    service: str
    client: Callable[[grpc.aio.Channel], object]
    timeout: float | None = None
    retry_unavailable: bool = True
    followed: bool = False


@dataclasses.dataclass
class Built:
    """The gRPC services an app built, and its shutdown hooks.

    ``drain`` runs when shutdown begins (health is NOT_SERVING): long-lived streams should end
    so clients resume elsewhere. ``close`` runs after the server stopped: release resources.
    The declared clients' channels close after ``close``. ``endpoints`` names what else the
    service listens on beside its gRPC port (``{"http": "http://127.0.0.1:8090"}``): it is
    reported with the bound address, so ``qtmesh up`` shows it and writes it to its state file.
    """

    services: Sequence[Service]
    drain: Callable[[], None] | None = None
    close: Callable[[], Awaitable[None]] | None = None
    endpoints: Mapping[str, str] = dataclasses.field(default_factory=dict)


class Context(Generic[C]):
    """What ``build`` receives: the validated config, the clients the App declared, the server's
        own settings (``server``: its TLS files serve whatever else the service listens on, such as
        the console's web port), the service's ``metrics`` registry for its own figures, and its
        ``tracer`` for spans of work it starts itself. The clients' calls are recorded in
        ``metrics`` and traced with ``tracer_provider``. ``roles`` are the health statuses of roles
    the service holds (:class:`~qtmesh.runtime.server.HealthRoles`)."""

    def __init__(
        self,
        config: C,
        channels: ChannelConfig,
        uses: Sequence[Uses],
        server: ServerConfig | None = None,
        *,
        metrics: Metrics | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        name: str = "qtmesh",
    ) -> None:
        self.config = config
        self.channels = channels
        self.server = server or ServerConfig()
        self.metrics = metrics or Metrics()
        self.tracer_provider = tracer_provider
        self.tracer = tracing.tracer_of(tracer_provider, name)
        self.roles = HealthRoles()
        self._opened: list[tuple[Uses, grpc.aio.Channel, object]] = []
        self._taken: set[int] = set()
        for use in uses:
            options = (
                channels
                if use.retry_unavailable
                else dataclasses.replace(channels, retry_unavailable=False)
            )
            channel = open_channel(
                channels.address_of(use.service),
                options,
                timeout=use.timeout,
                metrics=self.metrics.client,
                tracer_provider=tracer_provider,
            )
            self._opened.append((use, channel, use.client(channel)))

    def client(self, service: str, kind: type[T]) -> T:
        """The client of type ``kind`` the App declared for ``service``."""
        for index, (use, _channel, client) in enumerate(self._opened):
            if use.service == service and isinstance(client, kind):
                self._taken.add(index)
                return client
        raise LookupError(
            f"no {kind.__name__} for {service!r} is declared in the App's uses "
            f"(declared: {', '.join(sorted({u.service for u, _, _ in self._opened})) or 'none'})"
        )

    def check_all_taken(self, app: str) -> None:
        """Raises LookupError naming the declared clients ``build`` never asked for."""
        unused = [entry for i, entry in enumerate(self._opened) if i not in self._taken]
        if unused:
            names = ", ".join(f"{u.service} ({type(client).__name__})" for u, _, client in unused)
            raise LookupError(f"{app} declares clients its build never takes: {names}")

    async def close(self) -> None:
        """Closes every declared client's channel; a failure is logged, the rest still close."""
        results = await asyncio.gather(
            *(channel.close() for _use, channel, _client in self._opened), return_exceptions=True
        )
        for (use, _channel, _client), failure in zip(self._opened, results, strict=True):
            if isinstance(failure, Exception):
                _log.warning("closing a channel failed", service=use.service, error=repr(failure))


@dataclasses.dataclass(frozen=True, kw_only=True)
class App(Generic[C]):
    """A mesh service: its name, its config class, the clients it uses and how to build its
    servicers.

    ``uses`` lists the clients (or, when they depend on the config, a function of the config
    that returns them). ``build`` receives a :class:`Context`; it must not block: heavy start-up
    work belongs in a thread. ``max_request_bytes``, for a service whose requests are all small,
    is the largest it accepts (below the server's ``max_message_bytes``): gRPC refuses a larger
    one RESOURCE_EXHAUSTED before any of it reaches Python, so it costs no memory.
    """

    name: str
    summary: str
    config_type: type[C]
    env_prefix: str
    build: Callable[[Context[C]], Awaitable[Built]]
    uses: Sequence[Uses] | Callable[[C], Sequence[Uses]] = ()
    max_request_bytes: int | None = None

    def __post_init__(self) -> None:
        # One spelling per service: the catalog name gives the environment prefix.
        expected = configuration.service_env_prefix(self.name)
        if self.env_prefix != expected:
            raise ValueError(f"{self.name}: env_prefix is {self.env_prefix!r}, not {expected!r}")

    def clients(self, config: C) -> Sequence[Uses]:
        return self.uses(config) if callable(self.uses) else self.uses

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The services this one must start after: those it calls with its default config, but
        for those it only follows (``Uses.followed``), in name order."""
        uses = self.clients(self.config_type())
        return tuple(sorted({use.service for use in uses if not use.followed}))

    @property
    def calls(self) -> tuple[str, ...]:
        """Every service this one calls with its default config, followed ones included, in
        name order (what a network policy must let it reach)."""
        return tuple(sorted({use.service for use in self.clients(self.config_type())}))

    def load_config(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> C:
        return configuration.load(
            self.config_type, env_prefix=self.env_prefix, environ=environ, overrides=overrides
        )

    async def create_server(
        self,
        config: C,
        *,
        server_config: ServerConfig,
        channel_config: ChannelConfig,
        default_port: int = 0,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> MeshServer:
        """Opens the declared clients, builds the servicers and wraps them in a MeshServer (not
        started yet). The channels close when the server stops, or now if the build fails.

        The server traces with ``tracer_provider`` if given (the caller keeps it), else with one
        exporting to the server config's ``otlp_endpoint`` if set (stopped with the server)."""
        owned = None
        if tracer_provider is None and server_config.otlp_endpoint is not None:
            tracer_provider = owned = tracing.otlp_tracer_provider(
                service=self.name,
                endpoint=server_config.otlp_endpoint,
                sample_ratio=server_config.trace_sample_ratio,
            )
        metrics = Metrics()
        context = Context(
            config,
            channel_config,
            self.clients(config),
            server_config,
            metrics=metrics,
            tracer_provider=tracer_provider,
            name=self.name,
        )
        try:
            built = await self.build(context)
        except BaseException:
            await context.close()
            tracing.shutdown(owned)
            raise

        async def close() -> None:
            try:
                if built.close is not None:
                    await built.close()
            finally:
                await context.close()
                await asyncio.to_thread(tracing.shutdown, owned)

        try:
            context.check_all_taken(self.name)
        except LookupError:
            await close()
            raise

        return MeshServer(
            name=self.name,
            services=built.services,
            config=server_config,
            default_port=default_port,
            on_drain=built.drain,
            on_stop=close,
            max_request_bytes=self.max_request_bytes,
            endpoints=built.endpoints,
            metrics=metrics,
            tracer_provider=tracer_provider,
            roles=context.roles,
        )
