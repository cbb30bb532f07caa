"""Client channels to mesh services: addresses, TLS/mTLS, tokens, limits, retries, balancing."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from qtmesh.config import Secret, UnknownName, require, setting
from qtmesh.security import AUTHORIZATION, channel_credentials

CLIENT_ENV_PREFIX = "QTMESH_CLIENT_"

# Round-robin over every address a name resolves to (a headless Service gives one per replica),
# and transparent retries of UNAVAILABLE, which gRPC only raises before a call reached a server.
_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
_BALANCING = [{"round_robin": {}}]
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
        for service, address in self.addresses.items():
            require(bool(address), "addresses", f"empty address for {service}")

    def with_addresses(self, addresses: Mapping[str, str]) -> ChannelConfig:
        return dataclasses.replace(self, addresses={**self.addresses, **addresses})

    def address_of(self, service: str, default_port: int | None = None) -> str:
        """The configured address of ``service``, else 127.0.0.1 on its default port."""
        if service in self.addresses:
            return self.addresses[service]
        if default_port is None:
            raise UnknownName(f"no address configured for {service!r} (set QTMESH_ADDRESSES)")
        return f"127.0.0.1:{default_port}"

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


def open_channel(address: str, config: ChannelConfig | None = None) -> grpc.aio.Channel:
    """An aio channel to ``address`` with the mesh's credentials, limits and retry policy."""
    config = config or ChannelConfig()
    interceptors = []
    if config.auth_token is not None:
        interceptors = _token_interceptors(config.auth_token)
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


def _with_token(details: grpc.aio.ClientCallDetails, token: Secret) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add(AUTHORIZATION, f"Bearer {token.reveal()}")
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


def _token_interceptors(token: Secret) -> list[grpc.aio.ClientInterceptor]:
    """Bearer-token interceptors; unlike call credentials they also work on plaintext channels."""

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[override]
            return await continuation(_with_token(details, token), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[override]
            return await continuation(_with_token(details, token), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[override]
            return await continuation(_with_token(details, token), request_iterator)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[override]
            return await continuation(_with_token(details, token), request_iterator)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]
