"""What a mesh service declares so the runtime can configure, build, serve and stop it."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from qtmesh import config as configuration
from qtmesh.channels import ChannelConfig
from qtmesh.server import MeshServer, ServerConfig, Service

C = TypeVar("C")


@dataclasses.dataclass
class Built:
    """The gRPC services an app built, and its shutdown hooks.

    ``drain`` runs when shutdown begins (health is NOT_SERVING): long-lived streams should end
    so clients resume elsewhere. ``close`` runs after the server stopped: release resources.
    """

    services: Sequence[Service]
    drain: Callable[[], None] | None = None
    close: Callable[[], Awaitable[None]] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class App(Generic[C]):
    """A mesh service: its name, its config class, and how to build its servicers.

    ``build`` receives the validated config and the channel config (addresses of the services it
    depends on); it must not block: heavy start-up work belongs in a thread.
    """

    name: str
    summary: str
    config_type: type[C]
    env_prefix: str
    build: Callable[[C, ChannelConfig], Awaitable[Built]]
    depends_on: tuple[str, ...] = ()

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
    ) -> MeshServer:
        """Builds the servicers and wraps them in a MeshServer (not started yet)."""
        built = await self.build(config, channel_config)
        return MeshServer(
            name=self.name,
            services=built.services,
            config=server_config,
            default_port=default_port,
            on_drain=built.drain,
            on_stop=built.close,
        )
