"""TLS and mutual TLS credentials from files, and per-client bearer tokens."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path

import grpc

from qtmesh.base.config import ConfigError, Secret
from qtmesh.base.errors import Unauthenticated

AUTHORIZATION = "authorization"


def server_credentials(
    *, cert_file: Path, key_file: Path, client_ca_file: Path | None
) -> grpc.ServerCredentials:
    """TLS server credentials; with ``client_ca_file``, clients need a certificate it signed."""
    return grpc.ssl_server_credentials(
        [(key_file.read_bytes(), cert_file.read_bytes())],
        root_certificates=client_ca_file.read_bytes() if client_ca_file else None,
        require_client_auth=client_ca_file is not None,
    )


def channel_credentials(
    *, ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> grpc.ChannelCredentials:
    """TLS channel credentials; a certificate and key make it mutual TLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes() if ca_file else None,
        private_key=key_file.read_bytes() if key_file else None,
        certificate_chain=cert_file.read_bytes() if cert_file else None,
    )


def parse_tokens(secret: Secret, *, setting: str) -> dict[str, str]:
    """Parses ``client:token,client:token`` into token -> client name."""
    tokens: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in secret.reveal().split(","))):
        client, sep, token = entry.partition(":")
        if not sep or not client or not token:
            raise ConfigError(setting, "expected client:token pairs separated by commas")
        tokens[token] = client
    if not tokens:
        raise ConfigError(setting, "no client:token pair given")
    return tokens


class TokenAuthenticator:
    """Checks the ``authorization: Bearer <token>`` metadata of a call against known clients.

    ``bound_to_certificates``: a token is accepted only over a connection whose client
    certificate names the token's client, as a subject alternative name or the common name, so
    a token copied to another client (with another certificate the CA signed) is refused."""

    def __init__(self, tokens: Mapping[str, str], *, bound_to_certificates: bool = False) -> None:
        self._tokens = dict(tokens)
        self.bound_to_certificates = bound_to_certificates

    @staticmethod
    def check_certificate(client: str, auth_context: Mapping[str, Iterable[bytes]]) -> None:
        """Raises Unauthenticated unless the peer's certificate names ``client``."""
        names = {
            value.decode(errors="replace")
            for key in ("x509_subject_alternative_name", "x509_common_name")
            for value in auth_context.get(key, ())
        }
        if client not in names:
            raise Unauthenticated(f"the token of {client} is bound to a certificate naming it")

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        """The client name for the call's token; raises Unauthenticated otherwise."""
        presented = ""
        for key, value in metadata or ():
            if key == AUTHORIZATION:
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, presented = text.partition(" ")
                if scheme.lower() != "bearer":
                    raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
                break
        if not presented:
            raise Unauthenticated("this server requires a bearer token in 'authorization' metadata")
        # Compare against every token so the time taken does not reveal which one nearly matched.
        client = None
        for token, name in self._tokens.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                client = name
        if client is None:
            raise Unauthenticated("unknown bearer token")
        return client
