"""Client channels to mesh services: addresses, TLS/mTLS, tokens, deadlines, limits, retries,
balancing. Every channel carries the mesh's client interceptors (request ids, tokens, default
deadlines, and, in a service, its client-side metrics and trace context:
:func:`qtmesh.runtime.interceptors.client_interceptors`)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import trace

from qtmesh.base.config import Secret, UnknownName, require, setting
from qtmesh.runtime.interceptors import client_interceptors
from qtmesh.runtime.metrics import RpcMetrics
from qtmesh.runtime.security import channel_credentials

CLIENT_ENV_PREFIX = "QTMESH_CLIENT_"

# Default ports are fixed so that `qtmesh up`, `qtmesh status` and clients agree without
# configuration (every service of the design, built or not).
DEFAULT_PORTS = {
    "federation": 50051,
    "market": 50052,
    "sesa": 50053,
    "meta": 50054,
    "meta-optimizer": 50055,
    "alpha-reporting": 50056,
    "ceo": 50057,
    "risk": 50058,
    "strategy": 50059,
    "memory": 50060,
    "world-model": 50061,
    "console": 50062,
}

# Round-robin over every address a name resolves to (a headless Service gives one per replica),
# and transparent retries of UNAVAILABLE, which gRPC only raises before a call reached a server.
_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
_BALANCING: list[dict[str, dict[str, object]]] = [{"round_robin": {}}]
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": _BALANCING,
        "methodConfig": [{"name": [{}], "retryPolicy": _RETRY_POLICY}],
    }
)
_SERVICE_CONFIG_NO_RETRIES = json.dumps({"loadBalancingConfig": _BALANCING})


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChannelConfig:
    """How a process reaches other mesh services. Environment variables are QTMESH_CLIENT_<NAME>."""

    addresses: dict[str, str] = setting(
        {},
        env="QTMESH_ADDRESSES",
        help="service=address pairs, e.g. market=127.0.0.1:50052 or market=dns:///market:50052",
    )
    tls_ca_file: Path | None = setting(
        None, help="PEM CA that signs server certificates; enables TLS"
    )
    tls_cert_file: Path | None = setting(None, help="PEM client certificate for mutual TLS")
    tls_key_file: Path | None = setting(None, help="PEM private key of the client certificate")
    tls_server_name: str | None = setting(
        None, help="name to verify server certificates against, when it is not the address host"
    )
    auth_token: Secret | None = setting(None, help="bearer token sent with every call")
    call_timeout_seconds: float = setting(
        30.0, help="deadline of a call with one response that sets none (a stream has none)"
    )
    max_message_bytes: int = setting(16 * 1024 * 1024, help="largest message received or sent")
    keepalive_time_seconds: float = setting(30.0, help="interval of keepalive pings")
    retry_unavailable: bool = setting(
        True, help="retry calls that fail UNAVAILABLE before reaching a server"
    )

    def __post_init__(self) -> None:
        require(
            (self.tls_cert_file is None) == (self.tls_key_file is None),
            "tls_key_file" if self.tls_cert_file else "tls_cert_file",
            "mutual TLS needs both tls_cert_file and tls_key_file",
        )
        require(
            self.tls_cert_file is None or self.tls_ca_file is not None,
            "tls_ca_file",
            "mutual TLS needs tls_ca_file to verify the server",
        )
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            require(path is None or path.is_file(), name, f"no such file: {path}")
        require(self.max_message_bytes >= 1024, "max_message_bytes", "must be at least 1024")
        require(self.keepalive_time_seconds > 0, "keepalive_time_seconds", "must be positive")
        require(
            math.isfinite(self.call_timeout_seconds) and self.call_timeout_seconds > 0,
            "call_timeout_seconds",
            "must be positive",
        )
        for service, address in self.addresses.items():
            require(bool(address), "addresses", f"empty address for {service}")

    def with_addresses(self, addresses: Mapping[str, str]) -> ChannelConfig:
        return dataclasses.replace(self, addresses={**self.addresses, **addresses})

    def address_of(self, service: str, default_port: int | None = None) -> str:
        """The configured address of ``service``, else 127.0.0.1 on its default port (a mesh
        service's from :data:`DEFAULT_PORTS` unless ``default_port`` is given)."""
        if service in self.addresses:
            return self.addresses[service]
        port = default_port if default_port is not None else DEFAULT_PORTS.get(service)
        if port is None:
            raise UnknownName(f"no address configured for {service!r} (set QTMESH_ADDRESSES)")
        return f"127.0.0.1:{port}"

    def grpc_options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_seconds * 1000)),
            (
                "grpc.service_config",
                _SERVICE_CONFIG if self.retry_unavailable else _SERVICE_CONFIG_NO_RETRIES,
            ),
            ("grpc.enable_retries", int(self.retry_unavailable)),
        ]
        if self.tls_server_name:
            options.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return options


def open_channel(
    address: str,
    config: ChannelConfig | None = None,
    *,
    timeout: float | None = None,
    metrics: RpcMetrics | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> grpc.aio.Channel:
    """An aio channel to ``address`` with the mesh's credentials, limits, retry policy and client
    interceptors. ``timeout`` is the deadline, in seconds, of its calls with one response that
    set none (unset: the config's ``call_timeout_seconds``). ``metrics`` records its calls;
    with ``tracer_provider`` each call is a span and carries the trace context on."""
    config = config or ChannelConfig()
    interceptors = client_interceptors(
        timeout=config.call_timeout_seconds if timeout is None else timeout,
        token=config.auth_token,
        metrics=metrics,
        tracer_provider=tracer_provider,
    )
    if config.tls_ca_file is not None:
        credentials = channel_credentials(
            ca_file=config.tls_ca_file, cert_file=config.tls_cert_file, key_file=config.tls_key_file
        )
        return grpc.aio.secure_channel(
            address, credentials, options=config.grpc_options(), interceptors=interceptors
        )
    return grpc.aio.insecure_channel(
        address, options=config.grpc_options(), interceptors=interceptors
    )
