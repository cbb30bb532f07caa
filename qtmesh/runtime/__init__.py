"""The runtime: one way to wire, build, serve and stop every service over gRPC.

An :class:`App` declares a service (its config and the clients it :class:`Uses`); the runtime
opens those channels with the mesh's interceptors, builds the servicers, serves them with health,
reflection and the shutdown sequence, and closes everything again. The catalog names every
service; the supervisor runs several as local processes.
"""

from qtmesh.runtime.agent_service import AgentClient, AgentServicer, agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.channels import DEFAULT_PORTS, ChannelConfig, open_channel
from qtmesh.runtime.server import MeshServer, ServerConfig, Service, serve_until_signalled
from qtmesh.runtime.status import (
    error_info,
    from_rpc_error,
    mesh_stub,
    raising_mesh_errors,
    to_status,
)
from qtmesh.runtime.supervisor import Mesh, StartupError, check_health
from qtmesh.runtime.telemetry import configure_logging

__all__ = [
    "DEFAULT_PORTS",
    "AgentClient",
    "AgentServicer",
    "App",
    "Built",
    "ChannelConfig",
    "Context",
    "Mesh",
    "MeshServer",
    "ServerConfig",
    "Service",
    "StartupError",
    "Uses",
    "agent_service",
    "check_health",
    "configure_logging",
    "error_info",
    "from_rpc_error",
    "mesh_stub",
    "open_channel",
    "raising_mesh_errors",
    "serve_until_signalled",
    "to_status",
]
