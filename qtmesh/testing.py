"""Helpers for testing services: real servers on port 0, and throwaway TLS certificates."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import trace

from qtmesh.runtime.app import App
from qtmesh.runtime.channels import ChannelConfig, open_channel
from qtmesh.runtime.server import MeshServer, ServerConfig, Service


@dataclasses.dataclass
class Running:
    server: MeshServer
    address: str
    channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def serving(
    services: Sequence[Service],
    *,
    name: str = "test",
    server_config: ServerConfig | None = None,
    channel_config: ChannelConfig | None = None,
    on_drain: Any = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> AsyncIterator[Running]:
    """Serves ``services`` on 127.0.0.1, port 0, with a client channel to it; stops on exit.
    With ``tracer_provider`` the server traces its calls."""
    server = MeshServer(
        name=name,
        services=services,
        config=server_config or ServerConfig(port=0, grace_seconds=1.0),
        on_drain=on_drain,
        tracer_provider=tracer_provider,
    )
    address = await server.start()
    channel = open_channel(address, channel_config)
    try:
        yield Running(server, address, channel)
    finally:
        await channel.close()
        await server.stop()


@contextlib.asynccontextmanager
async def serving_app(
    app: App[Any],
    config: Any = None,
    *,
    server_config: ServerConfig | None = None,
    channel_config: ChannelConfig | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> AsyncIterator[Running]:
    """Builds ``app`` (default config unless given) and serves it like :func:`serving`, traced
    with ``tracer_provider`` if given (an in-memory exporter's, say)."""
    channels = channel_config or ChannelConfig()
    server = await app.create_server(
        config if config is not None else app.config_type(),
        server_config=server_config or ServerConfig(port=0, grace_seconds=1.0),
        channel_config=channels,
        tracer_provider=tracer_provider,
    )
    address = await server.start()
    channel = open_channel(address, channels)
    try:
        yield Running(server, address, channel)
    finally:
        await channel.close()
        await server.stop()


@dataclasses.dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    clients: dict[str, tuple[Path, Path]] = dataclasses.field(default_factory=dict)
    """Certificate and key of each extra client, by the name its certificate carries."""


def make_certificates(
    directory: Path,
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    clients: Sequence[str] = (),
) -> Certificates:
    """A throwaway CA with a server certificate for ``hosts``, a client certificate, and one
    more for each name in ``clients`` (as its common name and DNS subject alternative name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("qtmesh test CA"))
        .issuer_name(name("qtmesh test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common_name: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]
    ) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    server_key, server_cert = leaf(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, alt_names)
    client_key, client_cert = leaf("qtmesh test client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    directory.mkdir(parents=True, exist_ok=True)
    extra: dict[str, tuple[Path, Path]] = {}
    for client in clients:
        key, cert = leaf(client, ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName(client)])
        extra[client] = (
            write_cert(cert, directory / f"client-{client}.pem"),
            write_key(key, directory / f"client-{client}-key.pem"),
        )
    return Certificates(
        ca=write_cert(ca_cert, directory / "ca.pem"),
        server_cert=write_cert(server_cert, directory / "server.pem"),
        server_key=write_key(server_key, directory / "server-key.pem"),
        client_cert=write_cert(client_cert, directory / "client.pem"),
        client_key=write_key(client_key, directory / "client-key.pem"),
        clients=extra,
    )


def _postgres_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextlib.contextmanager
def temporary_postgres() -> Iterator[str | None]:
    """A throwaway PostgreSQL server on 127.0.0.1 for the duration of the block; yields its URL,
    or None when PostgreSQL is not installed. As root, the server runs as the ``postgres`` user
    (PostgreSQL refuses to run as root)."""
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        yield None
        return
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    directory = Path(tempfile.mkdtemp(prefix="qtmesh-pg-"))
    data = directory / "data"
    if as_root:
        directory.chmod(0o755)
        shutil.chown(directory, "postgres", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True}
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "qtmesh", "-N"], **quiet
        )
        options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [
                *prefix,
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(directory / "log"),
                "-w",
                "start",
            ],
            **quiet,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr.decode().strip()}") from exc
    try:
        yield f"postgresql://qtmesh@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], **quiet)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server at ``server_url``, dropped afterwards."""
    import sqlalchemy as sa

    from qtmesh.base.storage import create_engine

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server_url)
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield str(sa.make_url(server_url).set(database=name).render_as_string(hide_password=False))
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
