"""The ``qtmesh`` command: serve one service, bring the mesh up, report its health, list the
services and their settings, replay the market with the mesh in the loop, evolve strategies on
a file of bars."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import importlib.metadata
import math
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from qtmesh.base import config as configuration
from qtmesh.runtime import catalog
from qtmesh.runtime.channels import CLIENT_ENV_PREFIX, ChannelConfig
from qtmesh.runtime.server import ENV_PREFIX, ServerConfig, serve_until_signalled
from qtmesh.runtime.settings import settings_markdown, unknown_variables
from qtmesh.runtime.supervisor import (
    FAILED,
    INTERNAL_VARIABLES,
    SERVING,
    STATE_FILE,
    STOPPED,
    WAITING,
    Child,
    Mesh,
    StartupError,
    check_health,
    die_with_supervisor,
    read_state,
    ready_line,
    take_start_gate,
    wait_at_start_gate,
)
from qtmesh.runtime.telemetry import capture_native_log, configure_logging

if TYPE_CHECKING:
    # rich is imported where a command draws a table: a service's process never needs it.
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

LOG_DIR = Path(".qtmesh/logs")
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    gate = None
    if args.run is _serve:
        die_with_supervisor()  # before loading the service, which may take a while
        gate = take_start_gate()
    # A service judges only its own variables: loading every other service to know theirs
    # would cost each process of the mesh its start-up time. `qtmesh up` loads no service at
    # all: each of its children judges its own and reports what it found (printed by `up`).
    if args.run is not _up:
        warnings = _warn_of_unknown_variables(args.service if args.run is _serve else None)
        if gate is not None:
            app = catalog.entry(args.service).load()
            if not wait_at_start_gate(gate, app, warnings):
                sys.exit(1)  # the mesh's start was abandoned while this one waited
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
        description="Start every service (or those named) as its own process, showing which are "
        "loading, waiting (and on what), starting and serving as they go; once all report "
        "SERVING, print where they listen (and write .qtmesh/mesh.json), and stop them all on "
        "Ctrl-C or SIGTERM.",
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
    up.add_argument(
        "--no-metrics",
        action="store_true",
        help="serve no Prometheus /metrics endpoints (by default each service serves one, on a "
        "port planned with the others, unless QTMESH_METRICS_PORT is set)",
    )
    up.add_argument("--log-dir", type=Path, default=LOG_DIR, help="one log file per service")
    up.add_argument("--state-file", type=Path, default=STATE_FILE, help=argparse.SUPPRESS)
    up.set_defaults(run=_up)

    status = commands.add_parser(
        "status",
        help="print the health of each service (--watch: with RPC rates and the last plan)",
        description="Print the health of each service, found where `qtmesh up` wrote it "
        "(.qtmesh/mesh.json), else at QTMESH_ADDRESSES or the default ports. With --watch, "
        "refresh every --interval seconds until Ctrl-C, adding each service's RPCs and errors "
        "per second (from two successive scrapes of its /metrics) and the federation's last "
        "plan.",
    )
    status.add_argument("--state-file", type=Path, default=STATE_FILE, help=argparse.SUPPRESS)
    status.add_argument("--timeout", type=float, default=2.0, help="seconds per health check")
    status.add_argument(
        "--watch", action="store_true", help="refresh until Ctrl-C (in place on a terminal)"
    )
    status.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="between refreshes"
    )
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


def _warn_of_unknown_variables(service: str | None) -> list[str]:
    """A QTMESH_* variable no setting reads is a warning, naming the closest setting: a
    misspelt one would otherwise be ignored without a word. Returns the warnings printed."""
    environ = {k: v for k, v in os.environ.items() if k not in INTERNAL_VARIABLES}
    if not any(k.startswith("QTMESH_") for k in environ):
        return []  # nothing to judge: no service needs loading
    warnings = []
    for variable, closest in unknown_variables(environ, service=service):
        hint = f"; did you mean {closest}?" if closest else " (docs/configuration.md lists them)"
        warnings.append(f"qtmesh: warning: {variable} is not a setting{hint}")
        print(warnings[-1], file=sys.stderr)
    return warnings


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
    from rich.console import Console

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
        progress = _Progress(console, names)
        mesh = Mesh(
            host=args.host,
            ephemeral=args.ephemeral_ports,
            log_dir=args.log_dir,
            env=env,
            channels=channels,
            metrics=not args.no_metrics,
            on_change=progress.changed,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        with progress:
            starting = asyncio.ensure_future(mesh.start(names))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, StartupError):
                    await starting
                await mesh.stop()
                progress.done("interrupted while starting")
                console.print("[yellow]interrupted while starting; stopped[/]")
                return 130
            try:
                starting.result()
            except StartupError as exc:
                progress.done("startup failed")
                console.print(f"[red]startup failed:[/] {exc}", highlight=False)
                return 1
            mesh.write_state(args.state_file)
            progress.done(f"serving, started in {progress.elapsed():.2f} s")
        mesh.on_change = None
        if not progress.live:
            console.print(progress.table())
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


_STYLES = {SERVING: "green", WAITING: "yellow", FAILED: "red", STOPPED: "dim"}


class _Progress:
    """What `qtmesh up` shows while the mesh starts, from the supervisor's events: on a terminal,
    a table of every service redrawn in place; otherwise one line per change (readable in logs
    and CI). A child's warnings about the environment are printed once each, to stderr."""

    def __init__(self, console: Console, names: Sequence[str]) -> None:
        self.console = console
        self.names = list(names)
        self.children: dict[str, Child] = {}
        self.live: Live | None = None
        self._started = time.monotonic()
        self._state = "starting"
        self._warned: set[str] = set()

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def __enter__(self) -> _Progress:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self, console=self.console, refresh_per_second=4)
            self.live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.stop()

    def changed(self, child: Child) -> None:
        self.children[child.name] = child
        for warning in child.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                print(warning, file=sys.stderr)
        if self.live is not None:
            self.live.refresh()
        elif child.status != STOPPED:
            self.console.print(_progress_line(child, self.elapsed()), highlight=False)

    def done(self, state: str) -> None:
        self._state = state
        if self.live is not None:
            self.live.refresh()
        else:
            self.console.print(f"{self.elapsed():6.2f}s  {state}", highlight=False)

    def table(self) -> Table:
        title = "Quantum Trader Mesh"
        if self.live is not None:
            title += f": {self._state}" + (
                f", {self.elapsed():.1f} s" if self._state == "starting" else ""
            )
        return _mesh_table(self.names, self.children, title=title)

    def __rich__(self) -> Table:
        return self.table()


def _progress_line(child: Child, elapsed: float) -> str:
    """``  1.23s  memory           WAITING on market``: one change of one child."""
    detail = ""
    if child.status == WAITING:
        detail = " on " + ", ".join(child.waiting_on)
    elif child.status == SERVING:
        detail = f" at {child.address}, metrics {child.metrics or '-'}"
    return f"{elapsed:6.2f}s  {child.name:<16} {child.status}{detail}"


def _mesh_table(names: Sequence[str], children: Mapping[str, Child], *, title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for column in ("service", "status", "address", "metrics", "pid", "web", "log"):
        table.add_column(column)
    for name in names:
        child = children.get(name)
        if child is None:
            table.add_row(name, "[dim]PENDING[/]", "", "", "", "", "")
            continue
        status = child.status
        if child.waiting_on:
            status += " on " + ", ".join(child.waiting_on)
        style = _STYLES.get(child.status, "cyan")
        table.add_row(
            child.name,
            f"[{style}]{status}[/]",
            child.address,
            child.metrics or ("-" if child.address else ""),
            str(child.pid),
            child.endpoints.get("http", ""),
            str(child.log_path),
        )
    return table


def _status(args: argparse.Namespace) -> int:
    channels = configuration.load(ChannelConfig, env_prefix=CLIENT_ENV_PREFIX)
    state = read_state(args.state_file)
    targets = {
        e.name: state.get(e.name, {}).get("address") or channels.address_of(e.name, e.default_port)
        for e in catalog.CATALOG
    }
    if args.watch:
        metrics = {name: str(state.get(name, {}).get("metrics", "")) for name in targets}
        return _watch(args, targets, metrics, channels)

    async def run() -> dict[str, str]:
        return await _health_of(targets, timeout=args.timeout, channels=channels)

    from rich.console import Console
    from rich.table import Table

    health = asyncio.run(run())
    table = Table(title="Quantum Trader Mesh")
    for column in ("service", "address", "status"):
        table.add_column(column)
    for name, address in targets.items():
        style = "green" if health[name] == SERVING else "red"
        table.add_row(name, address, f"[{style}]{health[name]}[/]")
    Console().print(table)
    return 0 if all(h == SERVING for h in health.values()) else 1


async def _health_of(
    targets: Mapping[str, str], *, timeout: float, channels: ChannelConfig
) -> dict[str, str]:
    results = await asyncio.gather(
        *(check_health(a, rpc_timeout=timeout, channels=channels) for a in targets.values())
    )
    return dict(zip(targets, results, strict=True))


# ---- qtmesh status --watch ------------------------------------------------------------------

HANDLED = "grpc_server_handled_total"
Series = tuple[tuple[str, str], ...]


def handled_counts(text: str) -> dict[Series, float]:
    """The ``grpc_server_handled_total`` series of a Prometheus text exposition, by their
    labels (grpc_service, grpc_method, grpc_type, grpc_code), sorted by name."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == HANDLED:
                counts[tuple(sorted(sample.labels.items()))] = float(sample.value)
    return counts


@dataclasses.dataclass(frozen=True)
class Scrape:
    """The handled-RPC counters of one service at monotonic time ``at`` (seconds)."""

    at: float
    handled: Mapping[Series, float]


@dataclasses.dataclass(frozen=True)
class Rates:
    calls: float  # RPCs handled per second
    errors: float  # of those, per second, the ones whose grpc_code is not OK


HEALTH_SERVICE = "grpc.health.v1.Health"


def rpc_rates(before: Scrape, after: Scrape) -> Rates:
    """RPCs and errors per second between two scrapes of one service, health checks aside (the
    watch's own among them). A series that went down was reset (the service restarted): all it
    counts now is new. A series that is new counts from zero."""
    elapsed = after.at - before.at
    if elapsed <= 0:
        raise ValueError("the second scrape must come after the first")
    calls = errors = 0.0
    for series, value in after.handled.items():
        if dict(series).get("grpc_service") == HEALTH_SERVICE:
            continue
        previous = before.handled.get(series, 0.0)
        increase = value - previous if value >= previous else value
        calls += increase
        if dict(series).get("grpc_code") != "OK":
            errors += increase
    return Rates(calls / elapsed, errors / elapsed)


@dataclasses.dataclass(frozen=True)
class PlanSummary:
    sequence: int
    create_time: int  # nanoseconds since the epoch
    actions: int
    summary: str


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One refresh of `qtmesh status --watch`."""

    taken: float  # wall clock, seconds since the epoch
    health: Mapping[str, str]
    rates: Mapping[str, Rates | None]  # None: fewer than two scrapes yet, or no endpoint
    plan: PlanSummary | None
    plan_error: str = ""


class _Watcher:
    """Takes the snapshots of `qtmesh status --watch`, keeping the previous scrape of each
    service (for its rates) and the federation's last plan (to ask only for newer ones)."""

    # How far back the first look for the last plan goes, widening until one is found.
    PLAN_WINDOWS_S = (600, 86_400, None)

    def __init__(
        self,
        targets: Mapping[str, str],
        metrics: Mapping[str, str],
        *,
        timeout: float,
        channels: ChannelConfig,
        federation: Any,
    ) -> None:
        self.targets = dict(targets)
        self.metrics = dict(metrics)
        self.timeout = timeout
        self.channels = channels
        self._federation = federation
        self._scrapes: dict[str, Scrape] = {}
        self._plan: PlanSummary | None = None

    async def snapshot(self) -> Snapshot:
        health, scrapes, (plan, plan_error) = await asyncio.gather(
            _health_of(self.targets, timeout=self.timeout, channels=self.channels),
            asyncio.gather(*(self._scrape(name) for name in self.targets)),
            self._last_plan(),
        )
        rates: dict[str, Rates | None] = {}
        for name, scrape in zip(self.targets, scrapes, strict=True):
            previous = self._scrapes.pop(name, None)
            rates[name] = None
            if scrape is not None:
                self._scrapes[name] = scrape
                if previous is not None:
                    rates[name] = rpc_rates(previous, scrape)
        return Snapshot(time.time(), health, rates, plan, plan_error)

    async def _scrape(self, name: str) -> Scrape | None:
        endpoint = self.metrics.get(name)
        if not endpoint:
            return None
        url = f"http://{endpoint}/metrics"

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                return str(response.read().decode())

        try:
            text = await asyncio.to_thread(fetch)
        except OSError:
            return None
        return Scrape(time.monotonic(), handled_counts(text))

    async def _last_plan(self) -> tuple[PlanSummary | None, str]:
        from qtmesh.api.federation.v1 import federation_pb2 as pb

        windows = self.PLAN_WINDOWS_S if self._plan is None else (None,)
        try:
            for window in windows:
                request = pb.ListPlansRequest(page_size=500)
                if self._plan is not None:
                    # Plans are created in sequence on the wall clock: the last one and newer.
                    request.start_time.FromNanoseconds(self._plan.create_time)
                elif window is not None:
                    request.start_time.FromNanoseconds(time.time_ns() - window * 10**9)
                newest = await self._newest(request)
                if newest is not None:
                    self._plan = newest
                    break
        except Exception as exc:  # unreachable, or not answering: shown, not fatal
            return self._plan, _rpc_error(exc)
        return self._plan, ""

    async def _newest(self, request: Any) -> PlanSummary | None:
        newest = None
        while True:
            response = await self._federation.ListPlans(request, timeout=self.timeout)
            for plan in response.plans:
                newest = PlanSummary(
                    plan.sequence,
                    plan.create_time.ToNanoseconds(),
                    len(plan.actions),
                    plan.summary,
                )
            if not response.next_page_token:
                return newest
            request.page_token = response.next_page_token


def _rpc_error(exc: Exception) -> str:
    import grpc

    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return repr(exc)


def _watch(
    args: argparse.Namespace,
    targets: Mapping[str, str],
    metrics: Mapping[str, str],
    channels: ChannelConfig,
) -> int:
    from rich.console import Console
    from rich.live import Live

    from qtmesh.api.federation.v1 import federation_pb2_grpc
    from qtmesh.runtime.channels import open_channel

    console = Console(width=None if sys.stdout.isatty() else 160)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_channel(targets["federation"], channels) as channel:
            # The generated stubs are untyped; its calls are read as the messages they return.
            federation: Any = federation_pb2_grpc.FederationServiceStub(channel)  # type: ignore[no-untyped-call]
            watcher = _Watcher(
                targets, metrics, timeout=args.timeout, channels=channels, federation=federation
            )
            with contextlib.ExitStack() as stack:
                live = None
                if console.is_terminal:
                    live = stack.enter_context(Live(console=console, auto_refresh=False))
                while not stop.is_set():
                    table = _snapshot_table(await watcher.snapshot(), targets, metrics)
                    if live is not None:
                        live.update(table, refresh=True)
                    else:
                        console.print(table)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=args.interval)

    asyncio.run(run())
    return 0


def _snapshot_table(
    snapshot: Snapshot, targets: Mapping[str, str], metrics: Mapping[str, str]
) -> Table:
    from rich.table import Table

    clock = time.strftime("%H:%M:%S", time.localtime(snapshot.taken))
    table = Table(title=f"Quantum Trader Mesh at {clock}", caption=_plan_line(snapshot))
    for column in ("service", "status", "address", "calls/s", "errors/s", "metrics"):
        table.add_column(column, justify="right" if column.endswith("/s") else "left")
    for name, address in targets.items():
        health = snapshot.health[name]
        rates = snapshot.rates.get(name)
        style = "green" if health == SERVING else "red"
        errors = "-" if rates is None else _rate(rates.errors)
        if rates is not None and rates.errors > 0:
            errors = f"[red]{errors}[/]"
        table.add_row(
            name,
            f"[{style}]{health}[/]",
            address,
            "-" if rates is None else _rate(rates.calls),
            errors,
            metrics.get(name) or "-",
        )
    return table


def _rate(per_second: float) -> str:
    return f"{per_second:.1f}" if per_second < 100 else f"{math.floor(per_second)}"


def _plan_line(snapshot: Snapshot) -> str:
    plan = snapshot.plan
    if plan is None:
        return "last plan: " + (snapshot.plan_error or "none yet")
    age = max(0.0, snapshot.taken - plan.create_time / 1e9)
    summary = plan.summary if len(plan.summary) <= 100 else plan.summary[:99] + "…"
    actions = f"{plan.actions} action" + ("" if plan.actions == 1 else "s")
    line = f"last plan #{plan.sequence}, {_age(age)} ago, {actions}: {summary}"
    return line + (f" (federation: {snapshot.plan_error})" if snapshot.plan_error else "")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _settings(_args: argparse.Namespace) -> int:
    sys.stdout.write(settings_markdown())
    return 0


def _services(_args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("service", "default port", "summary"):
        table.add_column(column)
    for e in catalog.CATALOG:
        table.add_row(e.name, str(e.default_port), e.load().summary)
    Console().print(table)
    return 0
