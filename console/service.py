"""The console's server: gRPC health like every service, and the web pages and the HTTP/JSON API
(console/api.py) served by uvicorn in the same event loop, on ``http_port``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator

import uvicorn

from agents.risk.client import RiskClient
from console.api import create_api
from console.config import ENV_PREFIX, ConsoleConfig
from federation.client import FederationClient
from market.client import MarketClient
from meta_optimizer.client import MetaOptimizerClient
from qtmesh.base.config import ConfigError
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.security import parse_tokens
from sesa.client import SesaClient

CALL_TIMEOUT_SECONDS = 10.0
# Seconds open requests (event streams among them) get to finish once shutdown begins; a page
# reconnects and resumes after its last event.
GRACEFUL_SHUTDOWN_SECONDS = 1


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the mesh server already stops on SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def build(ctx: Context[ConsoleConfig]) -> Built:
    config = ctx.config
    server_settings = ctx.server
    # Reads need a token whenever the mesh's servers do: the same tokens.
    tokens = (
        parse_tokens(server_settings.auth_tokens, setting="auth_tokens")
        if server_settings.auth_tokens
        else {}
    )
    api = create_api(
        config=config,
        read_tokens=tuple(tokens),
        federation=ctx.client("federation", FederationClient),
        meta_optimizer=ctx.client("meta-optimizer", MetaOptimizerClient),
        sesa=ctx.client("sesa", SesaClient),
        risk=ctx.client("risk", RiskClient),
        market=ctx.client("market", MarketClient),
    )
    # Bound here, so the port is known (and taken) before the mesh server reports ready.
    family = socket.AF_INET6 if ":" in config.http_host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((config.http_host, config.http_port))
    except OSError as exc:
        listener.close()
        where = f"{config.http_host}:{config.http_port}"
        raise ConfigError("http_port", f"cannot listen on {where}: {exc.strerror}") from None
    listener.listen(128)
    port = listener.getsockname()[1]
    server = _Server(
        uvicorn.Config(
            api,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            # The mesh's own certificate serves the web too; with its client CA, browsers need
            # a client certificate it signed, as every gRPC client does.
            ssl_certfile=server_settings.tls_cert_file,
            ssl_keyfile=server_settings.tls_key_file,
            ssl_ca_certs=server_settings.tls_client_ca_file,
            ssl_cert_reqs=ssl.CERT_REQUIRED
            if server_settings.tls_client_ca_file
            else ssl.CERT_NONE,
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[listener]), name="console-http")

    def drain() -> None:
        server.should_exit = True

    async def close() -> None:
        server.should_exit = True
        try:
            await serving
        finally:
            listener.close()

    host = f"[{config.http_host}]" if family == socket.AF_INET6 else config.http_host
    scheme = "https" if server_settings.tls_cert_file else "http"
    return Built(
        services=[], drain=drain, close=close, endpoints={"http": f"{scheme}://{host}:{port}"}
    )


APP = App(
    name="console",
    summary="the web console: plans, proposals, the ledger, evolutions and risk, live, with an "
    "HTTP/JSON API",
    config_type=ConsoleConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    # Followed: the console calls them per request and shows what is up, so it starts first.
    uses=(
        Uses(
            service="federation",
            client=FederationClient,
            timeout=CALL_TIMEOUT_SECONDS,
            followed=True,
        ),
        Uses(
            service="meta-optimizer",
            client=MetaOptimizerClient,
            timeout=CALL_TIMEOUT_SECONDS,
            followed=True,
        ),
        Uses(service="sesa", client=SesaClient, timeout=CALL_TIMEOUT_SECONDS, followed=True),
        Uses(service="risk", client=RiskClient, timeout=CALL_TIMEOUT_SECONDS, followed=True),
        Uses(service="market", client=MarketClient, timeout=CALL_TIMEOUT_SECONDS, followed=True),
    ),
)
