"""The ``qtmesh`` command: serve one service, bring the mesh up, report its health, list the
services and their settings, replay the market with the mesh in the loop, evolve strategies on
a file of bars."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qtmesh.base import config as configuration
from qtmesh.runtime import catalog
from qtmesh.runtime.channels import CLIENT_ENV_PREFIX, ChannelConfig
from qtmesh.runtime.server import ENV_PREFIX, ServerConfig, serve_until_signalled
from qtmesh.runtime.settings import settings_markdown, unknown_variables
from qtmesh.runtime.supervisor import (
    Mesh,
    StartupError,
    check_health,
    die_with_supervisor,
    ready_line,
)
from qtmesh.runtime.telemetry import capture_native_log, configure_logging

STATE_FILE = Path(".qtmesh/mesh.json")
LOG_DIR = Path(".qtmesh/logs")
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    # A service judges only its own variables: loading every other service to know theirs
    # would cost each process of the mesh its start-up time.
    _warn_of_unknown_variables(args.service if args.run is _serve else None)
    if args.run in (_replay, _evolve):
        args.rest = unknown + args.rest  # the replay parses its own options
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code = args.run(args)
    except configuration.ConfigError as exc:
        print(f"qtmesh: invalid configuration: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except configuration.UnknownName as exc:
        print(f"qtmesh: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    sys.exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qtmesh", description=__doc__)
    parser.add_argument("--version", action="version", version=importlib.metadata.version("qtmesh"))
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run one service in the foreground",
        description="Run one service; SIGTERM or Ctrl-C stops it gracefully. Settings come from "
        "flags, then QTMESH_* environment variables, then defaults; "
        "`qtmesh serve SERVICE --help` lists them.",
        add_help=False,
    )
    serve.add_argument("service", choices=catalog.names(), metavar="SERVICE")
    serve.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)

    up = commands.add_parser(
        "up",
        help="start services as local processes until Ctrl-C",
        description="Start every service (or those named) as its own process, wait until all "
        "report SERVING, print where they listen, and stop them all on Ctrl-C or SIGTERM.",
    )
    up.add_argument("services", nargs="*", metavar="SERVICE", help="default: every service")
    up.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    up.add_argument(
        "--ephemeral-ports",
        action="store_true",
        help="let each service pick a free port instead of its default port",
    )
    up.add_argument(
        "--pace",
        type=float,
        default=None,
        metavar="BARS",
        help="bars the market's clock moves by itself per second (one-minute synthetic bars: "
        "--pace 10 is ten market minutes a second), so the mesh left running trades, learns "
        "and plans on its own; default: the clock moves only when asked (Advance)",
    )
    up.add_argument("--log-dir", type=Path, default=LOG_DIR, help="one log file per service")
    up.add_argument("--state-file", type=Path, default=STATE_FILE, help=argparse.SUPPRESS)
    up.set_defaults(run=_up)

    status = commands.add_parser("status", help="print the health of each service")
    status.add_argument("--state-file", type=Path, default=STATE_FILE, help=argparse.SUPPRESS)
    status.add_argument("--timeout", type=float, default=2.0, help="seconds per health check")
    status.set_defaults(run=_status)

    services = commands.add_parser("services", help="list the services and their default ports")
    services.set_defaults(run=_services)

    settings = commands.add_parser(
        "settings",
        help="print every setting of every service (Markdown: docs/configuration.md)",
    )
    settings.set_defaults(run=_settings)

    replay = commands.add_parser(
        "replay",
        help="replay the market N days with the whole mesh in the loop, against a static fleet",
        add_help=False,
    )
    replay.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    replay.set_defaults(run=_replay)

    evolve = commands.add_parser(
        "evolve",
        help="search for strategies on a file of bars in process, judged on held-out bars",
        add_help=False,
    )
    evolve.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    evolve.set_defaults(run=_evolve)
    return parser


def _warn_of_unknown_variables(service: str | None) -> None:
    """A QTMESH_* variable no setting reads is a warning, naming the closest setting: a
    misspelt one would otherwise be ignored without a word."""
    for variable, closest in unknown_variables(os.environ, service=service):
        hint = f"; did you mean {closest}?" if closest else " (docs/configuration.md lists them)"
        print(f"qtmesh: warning: {variable} is not a setting{hint}", file=sys.stderr)


def _replay(args: argparse.Namespace) -> int:
    # The replay drives every service through its client, so it lives above them all and is
    # loaded by name, as the catalog loads each service.
    command = importlib.import_module("replay.cli")
    code: int = command.main(args.rest)
    return code


def _evolve(args: argparse.Namespace) -> int:
    # Research runs SESA's engine in process; like the replay, it is loaded by name.
    command = importlib.import_module("sesa.research.cli")
    code: int = command.main(args.rest)
    return code


def _serve(args: argparse.Namespace) -> int:
    die_with_supervisor()
    app = catalog.entry(args.service).load()
    parser = argparse.ArgumentParser(
        prog=f"qtmesh serve {app.name}", description=f"Run the {app.name} service: {app.summary}."
    )
    parser.add_argument(
        "--ready-fd", type=int, default=None, help="write the bound address to this descriptor"
    )
    configuration.add_arguments(parser, ServerConfig, env_prefix=ENV_PREFIX)
    configuration.add_arguments(parser, app.config_type, env_prefix=app.env_prefix)
    options = parser.parse_args(args.rest)
    server_config = configuration.load(
        ServerConfig,
        env_prefix=ENV_PREFIX,
        overrides=configuration.flags_for(options, ServerConfig),
    )
    service_config = app.load_config(overrides=configuration.flags_for(options, app.config_type))
    channel_config = configuration.load(ChannelConfig, env_prefix=CLIENT_ENV_PREFIX)
    capture_native_log()  # gRPC core's own lines (TLS handshake failures) become events
    configure_logging(fmt=server_config.log_format, level=server_config.log_level, service=app.name)

    async def run() -> None:
        server = await app.create_server(
            service_config,
            server_config=server_config,
            channel_config=channel_config,
            default_port=catalog.entry(app.name).default_port,
        )

        def ready(address: str) -> None:
            if options.ready_fd is not None:
                os.write(options.ready_fd, ready_line(address, server.endpoints).encode())
                os.close(options.ready_fd)

        await serve_until_signalled(server, ready=ready)

    asyncio.run(run())
    return 0


def _up(args: argparse.Namespace) -> int:
    names = args.services or catalog.names()
    for name in names:
        catalog.entry(name)
    # Piped (no terminal to size it), the table is as wide as its addresses and URLs need.
    console = Console(width=None if sys.stdout.isatty() else 160)
    channels = configuration.load(ChannelConfig, env_prefix=CLIENT_ENV_PREFIX)

    async def run() -> int:
        env = dict(os.environ)
        if args.pace is not None:
            env["QTMESH_MARKET_PACE_BARS_PER_SECOND"] = str(args.pace)
        mesh = Mesh(
            host=args.host,
            ephemeral=args.ephemeral_ports,
            log_dir=args.log_dir,
            env=env,
            channels=channels,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        starting = asyncio.ensure_future(mesh.start(names))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StartupError):
                await starting
            await mesh.stop()
            console.print("[yellow]interrupted while starting; stopped[/]")
            return 130
        try:
            starting.result()
        except StartupError as exc:
            console.print(f"[red]startup failed:[/] {exc}", highlight=False)
            return 1
        mesh.write_state(args.state_file)
        console.print(_mesh_table(mesh))
        console.print("Ctrl-C stops every service.", style="dim")
        exited = asyncio.ensure_future(mesh.wait_for_exit())
        await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if exited.done():
            child = exited.result()
            console.print(
                f"[red]{child.name} exited with code {child.process.returncode}; stopping all[/]"
                f" (log: {child.log_path})"
            )
            code = 1
        else:
            exited.cancel()
        codes = await mesh.stop()
        with contextlib.suppress(FileNotFoundError):
            args.state_file.unlink()
        console.print(
            "stopped: " + ", ".join(f"{name} (exit {rc})" for name, rc in codes.items()),
            highlight=False,
        )
        return code

    return asyncio.run(run())


def _mesh_table(mesh: Mesh) -> Table:
    table = Table(title="Quantum Trader Mesh")
    for column in ("service", "address", "status", "pid", "web", "log"):
        table.add_column(column)
    for child in mesh.children:
        table.add_row(
            child.name,
            child.address,
            child.status,
            str(child.pid),
            child.endpoints.get("http", ""),
            str(child.log_path),
        )
    return table


def _status(args: argparse.Namespace) -> int:
    channels = configuration.load(ChannelConfig, env_prefix=CLIENT_ENV_PREFIX)
    known: dict[str, str] = {}
    if args.state_file.is_file():
        known = {k: v["address"] for k, v in json.loads(args.state_file.read_text()).items()}
    targets = {
        e.name: known.get(e.name) or channels.address_of(e.name, e.default_port)
        for e in catalog.CATALOG
    }

    async def run() -> dict[str, str]:
        results = await asyncio.gather(
            *(
                check_health(a, rpc_timeout=args.timeout, channels=channels)
                for a in targets.values()
            )
        )
        return dict(zip(targets, results, strict=True))

    health = asyncio.run(run())
    table = Table(title="Quantum Trader Mesh")
    for column in ("service", "address", "status"):
        table.add_column(column)
    for name, address in targets.items():
        style = "green" if health[name] == "SERVING" else "red"
        table.add_row(name, address, f"[{style}]{health[name]}[/]")
    Console().print(table)
    return 0 if all(h == "SERVING" for h in health.values()) else 1


def _settings(_args: argparse.Namespace) -> int:
    sys.stdout.write(settings_markdown())
    return 0


def _services(_args: argparse.Namespace) -> int:
    table = Table()
    for column in ("service", "default port", "summary"):
        table.add_column(column)
    for e in catalog.CATALOG:
        table.add_row(e.name, str(e.default_port), e.load().summary)
    Console().print(table)
    return 0
