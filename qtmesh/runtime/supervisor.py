"""Runs several mesh services as child processes on one machine (``qtmesh up`` and the demo).

Each child is ``qtmesh serve NAME`` in its own session. It goes through these statuses, each
change reported to ``Mesh(on_change=...)`` as it happens:

1. ``LOADING``: the child imports its service's code, which is most of its start-up and needs
   nothing from any other service.
2. ``WAITING``: loaded, the child has told the supervisor, through its *start gate* (a socket
   it inherited), which services it depends on (``App.depends_on``), and waits at the gate until
   each of those serves. ``Child.waiting_on`` names those it still waits for.
3. ``STARTING``: the gate opened (with the settings planned for it, such as its web port); the
   child builds its servicers and binds its ports.
4. ``SERVING``: it reported its bound address and endpoints through an inherited pipe (a
   :func:`ready_line`) and answers health checks.

So a service builds only after the services it depends on serve, as before, but it loads
while they start, no child waits for a whole layer of others, and the supervisor itself imports
no service. Loading and starting are CPU-bound: about one child per CPU is busy at a time (more
would only finish them all later), loading in the order asked (the catalog's lists the market,
on which every other service depends, first), and a child that may start goes before one that
would load.

Every port is planned before any child starts. On Linux a child also gets SIGKILL if the
supervisor dies, so no child outlives it. There too, children are forked from a fork server (see
:func:`_serve_forks`): a process that imported, once, the libraries every service imports and
that start no thread, so no child imports them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import heapq
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qtmesh.base import config as configuration
from qtmesh.base.errors import FailedPrecondition
from qtmesh.runtime import catalog
from qtmesh.runtime.app import App
from qtmesh.runtime.channels import ChannelConfig, open_channel
from qtmesh.runtime.server import ENV_PREFIX

STARTUP_TIMEOUT_S = 60.0
# Where `qtmesh up` writes its mesh (Mesh.write_state) and clients find it (read_state).
STATE_FILE = Path(".qtmesh/mesh.json")
STOP_TIMEOUT_S = 10.0

# A child's statuses, in the order it goes through them; FAILED when its start failed, STOPPED
# once the mesh stopped.
LOADING = "LOADING"
WAITING = "WAITING"
STARTING = "STARTING"
SERVING = "SERVING"
FAILED = "FAILED"
STOPPED = "STOPPED"

# The supervisor's pid, told to each child so it can die with the supervisor.
SUPERVISOR_PID_ENV = "QTMESH_SUPERVISOR_PID"
# The descriptor of a child's start gate (set only for children a Mesh starts).
START_GATE_ENV = "QTMESH_START_GATE_FD"
# What the supervisor tells its children; no setting reads these.
INTERNAL_VARIABLES = frozenset({SUPERVISOR_PID_ENV, START_GATE_ENV})
METRICS_PORT_ENV = f"{ENV_PREFIX}METRICS_PORT"


class StartupError(RuntimeError):
    """A child failed to start; the message includes the end of its log."""


class ChildProcess(Protocol):
    """What the supervisor needs of a child's process: an asyncio subprocess, or one forked by
    the fork server."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


@dataclasses.dataclass
class Child:
    name: str
    process: ChildProcess
    log_path: Path
    address: str = ""
    status: str = STARTING
    # What else it listens on, by name, as it reported (Built.endpoints; "metrics" included).
    endpoints: dict[str, str] = dataclasses.field(default_factory=dict)
    # The services of the mesh it depends on, once it loaded; those it still waits for.
    depends_on: tuple[str, ...] = ()
    waiting_on: tuple[str, ...] = ()
    # Its warnings about QTMESH_* variables no setting reads (qtmesh up prints them).
    warnings: tuple[str, ...] = ()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def metrics(self) -> str:
        """``host:port`` of its Prometheus endpoint; empty when it serves none."""
        return self.endpoints.get("metrics", "")


def die_with_supervisor() -> None:
    """Run first thing in a service the supervisor started: from then on the kernel kills it when
    the supervisor dies (Linux; elsewhere, nothing). It is armed in the child after exec, not by
    a ``preexec_fn`` between fork and exec: a preexec_fn forces a plain fork, which runs the
    atfork handlers of a threaded parent (gRPC's among them) in the child, and children started
    by a parent with live channels crashed at start up (about one start in six). (A child of
    the fork server is forked from a process with a single thread that never started gRPC; its
    "supervisor" is the fork server, which itself dies with the supervisor.)"""
    pid = os.environ.get(SUPERVISOR_PID_ENV)
    if not pid or not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(pid):
        os._exit(1)  # the supervisor died before the signal was armed


def take_start_gate() -> socket.socket | None:
    """In a child a Mesh started: its start gate (taken out of the environment, so that nothing
    else sees it); None in any other process."""
    fd = os.environ.pop(START_GATE_ENV, None)
    return socket.socket(fileno=int(fd)) if fd else None


def wait_at_start_gate(gate: socket.socket, app: App[Any], warnings: Sequence[str]) -> bool:
    """Tells the supervisor what it needs to know of the loaded ``app`` (the services it depends
    on, whether it serves the web, ``warnings`` about the environment), then blocks until the
    supervisor opens the gate and applies the settings sent with it to the environment. False
    when the supervisor closed the gate instead (the mesh's start was abandoned)."""
    profile = {
        "depends_on": list(app.depends_on),
        "web": serves_web(app),
        "warnings": list(warnings),
    }
    with gate, gate.makefile("rb") as replies:
        gate.sendall(json.dumps(profile).encode() + b"\n")
        reply = replies.readline()
    if not reply:
        return False
    os.environ.update(json.loads(reply)["env"])
    return True


def serves_web(app: App[Any]) -> bool:
    """Whether the service also serves the web: its settings have ``http_host`` and
    ``http_port`` (the console)."""
    fields = {f.name for f in dataclasses.fields(app.config_type)}
    return {"http_host", "http_port"} <= fields


class Mesh:
    """A set of running child services.

    ``metrics``: each service serves Prometheus metrics on a port planned with the others
    (``QTMESH_METRICS_PORT``, unless the environment sets it); False switches the endpoints
    off. ``on_change(child)`` is called, on the event loop, whenever a child's status or
    ``waiting_on`` changes. ``fork``: start children from the fork server where the platform
    allows (else, and when False, each is a new interpreter).
    """

    def __init__(
        self,
        *,
        host: str,
        ephemeral: bool,
        log_dir: Path,
        env: Mapping[str, str],
        channels: ChannelConfig | None = None,
        metrics: bool = True,
        on_change: Callable[[Child], None] | None = None,
        fork: bool = True,
    ) -> None:
        self.channels = channels
        self.host = host
        self.ephemeral = ephemeral
        self.log_dir = log_dir
        self.env = dict(env)
        self.metrics = metrics
        self.on_change = on_change
        self.fork = fork
        self.children: list[Child] = []
        # The address of every service to start, known before any starts: a service may follow
        # one that starts after it (a followed client is no start-order dependency).
        self._planned: dict[str, str] = {}
        # A web port for each service, for those that serve the web (ephemeral meshes only;
        # which ones do is known once they have loaded).
        self._planned_web: dict[str, int] = {}
        self._planned_metrics: dict[str, int] = {}
        self._serving: dict[str, asyncio.Event] = {}
        # What each child that loaded depends on.
        self._loaded: dict[str, tuple[str, ...]] = {}
        self._forks: _ForkServer | None = None
        self._busy = _Slots(1)

    @property
    def addresses(self) -> dict[str, str]:
        return {c.name: c.address for c in self.children if c.address}

    async def start(self, names: Sequence[str]) -> None:
        """Starts ``names``, each after the services it depends on serve (module docstring);
        raises StartupError (after stopping all) on failure."""
        entries = [catalog.entry(name) for name in dict.fromkeys(names)]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Every port is chosen here, none by a child binding port 0: a port the kernel hands one
        # child could be the one planned for another that has not started yet. With the default
        # ports, no planned port may be one of those either.
        taken: set[int] = set()
        if not self.ephemeral:
            taken.update(e.default_port for e in catalog.CATALOG)
        for entry in entries:
            port = _free_port(self.host, taken) if self.ephemeral else entry.default_port
            self._planned[entry.name] = f"{_bracketed(self.host)}:{port}"
            if self.metrics and METRICS_PORT_ENV not in self.env:
                self._planned_metrics[entry.name] = _free_port(self.host, taken)
            if self.ephemeral:  # used by the services that turn out to serve the web
                self._planned_web[entry.name] = _free_port(self.host, taken)
        self._serving = {e.name: asyncio.Event() for e in entries}
        self._busy = _Slots(_parallel_starts())
        starts: list[asyncio.Future[None]] = []
        try:
            if self.fork:
                self._forks = await _ForkServer.start(
                    self.env, log_path=self.log_dir / "fork-server.log"
                )
            starts = [asyncio.ensure_future(self._start_child(e)) for e in entries]
            await _all_or_first_failure(starts)
        except BaseException:
            for task in starts:
                task.cancel()
            await asyncio.gather(*starts, return_exceptions=True)
            for child in self.children:
                if child.status != SERVING:
                    self._set(child, FAILED)
            await self.stop()
            raise

    def _set(self, child: Child, status: str, waiting_on: tuple[str, ...] = ()) -> None:
        if (child.status, child.waiting_on) == (status, waiting_on):
            return
        child.status, child.waiting_on = status, waiting_on
        self._changed(child)

    def _changed(self, child: Child) -> None:
        if self.on_change is not None:
            self.on_change(child)

    def _child_env(self, entry: catalog.Entry) -> dict[str, str]:
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        known = dict(
            p.split("=", 1) for p in env.get("QTMESH_ADDRESSES", "").split(",") if "=" in p
        )
        known.update({k: v for k, v in self._planned.items() if k != entry.name})
        known.update(self.addresses)
        if known:
            env["QTMESH_ADDRESSES"] = ",".join(f"{k}={v}" for k, v in known.items())
        if not self.metrics:
            env.pop(METRICS_PORT_ENV, None)
        elif entry.name in self._planned_metrics:
            env[METRICS_PORT_ENV] = str(self._planned_metrics[entry.name])
        return env

    def _web_settings(self, name: str) -> dict[str, str]:
        """A service that also serves the web (settings ``http_host`` and ``http_port``, the
        console) listens where the mesh does, on a port planned with the others when the mesh's
        ports are ephemeral; settings given in the environment win."""
        prefix = configuration.service_env_prefix(name)
        wanted = {f"{prefix}HTTP_HOST": self.host}
        if name in self._planned_web:
            wanted[f"{prefix}HTTP_PORT"] = str(self._planned_web[name])
        return {k: v for k, v in wanted.items() if k not in self.env}

    async def _start_child(self, entry: catalog.Entry) -> None:
        read_fd, write_fd = os.pipe()
        ours, theirs = socket.socketpair()
        writer: asyncio.StreamWriter | None = None
        busy = False
        try:
            # Busy (loading, then starting) only while it holds one of a few slots (module
            # docstring); it gives its slot up while it waits.
            await self._busy.acquire(urgent=False)
            busy = True
            try:
                child = await self._launch(entry, ready=write_fd, gate=theirs.fileno())
            finally:
                os.close(write_fd)
                theirs.close()
            reader, writer = await asyncio.open_connection(sock=ours)
            profile = await self._read_profile(child, reader)
            if any(not self._serving[d].is_set() for d in child.depends_on):
                busy = False
                self._busy.release()
                await self._wait_for_dependencies(child)
                await self._busy.acquire(urgent=True)
                busy = True
            env = self._web_settings(child.name) if profile["web"] else {}
            self._set(child, STARTING)
            writer.write(json.dumps({"env": env}).encode() + b"\n")
            await writer.drain()
            fd, read_fd = read_fd, -1
            await _wait_until_ready(child, fd)
        finally:
            if busy:
                self._busy.release()
            if writer is not None:
                writer.close()
            ours.close()
            if read_fd >= 0:
                os.close(read_fd)
        status = await check_health(child.address, channels=self.channels)
        if status != SERVING:
            raise StartupError(f"{child.name} reports {status}\n{_tail(child.log_path)}")
        self._set(child, SERVING)
        self._serving[child.name].set()

    async def _launch(self, entry: catalog.Entry, *, ready: int, gate: int) -> Child:
        """Starts ``entry``'s child (forked, or else a new interpreter), LOADING."""
        port = self._planned[entry.name].rsplit(":", 1)[1]
        args = ["serve", entry.name, "--host", self.host, "--port", port]
        log_path = self.log_dir / f"{entry.name}.log"
        env = self._child_env(entry)
        process: ChildProcess | None = None
        if self._forks is not None:
            with log_path.open("ab") as log:
                process = await self._forks.fork(
                    entry.name, args, env, log=log.fileno(), ready=ready, gate=gate
                )
        if process is None:
            process = await _exec(
                ["-m", "qtmesh", *args, "--ready-fd", str(ready)],
                env={**env, START_GATE_ENV: str(gate)},
                log_path=log_path,
                pass_fds=(ready, gate),
            )
        child = Child(entry.name, process, log_path, status=LOADING)
        self.children.append(child)
        self._changed(child)
        return child

    async def _read_profile(self, child: Child, reader: asyncio.StreamReader) -> dict[str, Any]:
        """What the loaded child reports through its gate: the services it depends on, whether
        it serves the web, its warnings."""
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=STARTUP_TIMEOUT_S)
        except TimeoutError:
            raise StartupError(
                f"{child.name} did not load within {STARTUP_TIMEOUT_S:.0f} s\n"
                f"{_tail(child.log_path)}"
            ) from None
        if not line:
            code = await child.process.wait()
            raise StartupError(f"{child.name} exited with code {code}\n{_tail(child.log_path)}")
        profile: dict[str, Any] = json.loads(line)
        child.depends_on = tuple(d for d in profile["depends_on"] if d in self._serving)
        child.warnings = tuple(profile["warnings"])
        self._loaded[child.name] = child.depends_on
        cycle = catalog.dependency_cycle(self._loaded)
        if cycle:
            raise StartupError(f"dependency cycle: {' -> '.join(cycle)}")
        return profile

    async def _wait_for_dependencies(self, child: Child) -> None:
        """WAITING (on those not serving yet) until every service ``child`` depends on serves."""
        pending = [d for d in child.depends_on if not self._serving[d].is_set()]
        while pending:
            self._set(child, WAITING, tuple(pending))
            waits = {asyncio.ensure_future(self._serving[d].wait()) for d in pending}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            pending = [d for d in pending if not self._serving[d].is_set()]

    async def wait_for_exit(self) -> Child:
        """Returns the first child that exits (unexpectedly, while the mesh runs)."""
        waits = {asyncio.ensure_future(c.process.wait()): c for c in self.children}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            return waits[done.pop()]
        finally:
            for task in waits:
                task.cancel()

    async def stop(self, within: float = STOP_TIMEOUT_S) -> dict[str, int]:
        """SIGTERM to every child, SIGKILL to those still running after ``within`` s; exit codes."""
        running = [c for c in self.children if c.process.returncode is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(c.process.wait()) for c in running]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=within)
            if pending:
                for child in running:
                    if child.process.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            child.process.kill()
                await asyncio.gather(*waits)
        if self._forks is not None:
            await self._forks.close()
            self._forks = None
        for child in self.children:
            self._set(child, STOPPED)
        return {c.name: c.process.returncode or 0 for c in self.children}

    def write_state(self, path: Path) -> None:
        """``path`` as JSON: per service, its gRPC ``address``, its ``metrics`` endpoint
        (``host:port``; absent when it serves none), ``pid``, ``log`` and any other
        ``endpoints`` (the console's ``http``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {}
        for c in self.children:
            others = {k: v for k, v in c.endpoints.items() if k != "metrics"}
            state[c.name] = {
                "address": c.address,
                **({"metrics": c.metrics} if c.metrics else {}),
                "pid": c.pid,
                "log": str(c.log_path),
                **({"endpoints": others} if others else {}),
            }
        path.write_text(json.dumps(state, indent=2))


def read_state(path: Path = STATE_FILE) -> dict[str, dict[str, Any]]:
    """What :meth:`Mesh.write_state` wrote to ``path``; empty when there is no such file."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return state if isinstance(state, dict) else {}


def address_in_state(service: str, path: Path = STATE_FILE) -> str:
    """``service``'s gRPC address in the state file ``qtmesh up`` wrote; FailedPrecondition when
    there is no file or it lists no such service."""
    if not path.is_file():
        raise FailedPrecondition(
            f"no address given and no {path} (start the mesh with `qtmesh up`)"
        )
    entry = read_state(path).get(service)
    if not isinstance(entry, dict) or "address" not in entry:
        raise FailedPrecondition(f"{path} lists no {service} service")
    return str(entry["address"])


class _Slots:
    """A semaphore whose urgent waiters go first (then, each kind, in the order they came)."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = 0

    async def acquire(self, *, urgent: bool) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arrivals += 1
        heapq.heappush(self._waiters, (0 if urgent else 1, self._arrivals, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # granted as it was cancelled: pass the slot on
            granted.cancel()
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, granted = heapq.heappop(self._waiters)
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1


def _parallel_starts() -> int:
    """How many children are busy at once: one per CPU this process may run on, at least two."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(2, cpus)


async def _all_or_first_failure(tasks: Sequence[asyncio.Future[None]]) -> None:
    """Waits for every task; raises the first failure as soon as it happens."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()


def _free_port(host: str, taken: set[int] | None = None) -> int:
    """A port no one listens on now, and not in ``taken`` (to which it is added). The child binds
    it a moment later; a port taken in between makes that child fail to start, with the reason
    in its log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if taken is None:
            return port
        if port not in taken:
            taken.add(port)
            return port


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def _exec(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    pass_fds: Sequence[int],
) -> asyncio.subprocess.Process:
    """``python argv`` in its own session, output to ``log_path``."""
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**env, SUPERVISOR_PID_ENV: str(os.getpid())},
            pass_fds=pass_fds,
            start_new_session=True,
        )


async def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    into: list[Child] | None = None,
) -> Child:
    """Starts ``python argv --ready-fd N`` (output to ``log_path``) and waits for the first line
    it writes to that descriptor (its address). The child is added to ``into`` as soon as it
    exists, so a failed start can still be stopped. Raises StartupError with the log's tail."""
    read_fd, write_fd = os.pipe()
    try:
        process = await _exec(
            [*argv, "--ready-fd", str(write_fd)], env=env, log_path=log_path, pass_fds=(write_fd,)
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    child = Child(name, process, log_path)
    if into is not None:
        into.append(child)
    await _wait_until_ready(child, read_fd)
    return child


async def _wait_until_ready(child: Child, read_fd: int) -> None:
    """Reads the child's ready line from ``read_fd`` (which it closes) into ``child``."""
    try:
        line = await asyncio.wait_for(_read_line(read_fd), timeout=STARTUP_TIMEOUT_S)
        child.address, child.endpoints = parse_ready_line(line)
    except TimeoutError:
        raise StartupError(
            f"{child.name} did not start within {STARTUP_TIMEOUT_S:.0f} s\n{_tail(child.log_path)}"
        ) from None
    if not child.address:
        code = await child.process.wait()
        raise StartupError(f"{child.name} exited with code {code}\n{_tail(child.log_path)}")


@contextlib.asynccontextmanager
async def running_mesh(
    names: Sequence[str],
    *,
    host: str = "127.0.0.1",
    ephemeral: bool = True,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    metrics: bool = True,
    on_change: Callable[[Child], None] | None = None,
) -> AsyncIterator[Mesh]:
    """Starts ``names`` as child processes for the duration of the block."""
    mesh = Mesh(
        host=host,
        ephemeral=ephemeral,
        log_dir=log_dir,
        env=env or os.environ,
        metrics=metrics,
        on_change=on_change,
    )
    await mesh.start(names)
    try:
        yield mesh
    finally:
        await mesh.stop()


async def check_health(
    address: str,
    *,
    service: str = "",
    rpc_timeout: float = 2.0,
    channels: ChannelConfig | None = None,
) -> str:
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNREACHABLE."""
    async with open_channel(address, channels) as channel:
        # The health stubs' type declares no methods.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=rpc_timeout
            )
        except grpc.aio.AioRpcError as exc:
            return "UNREACHABLE" if exc.code() != grpc.StatusCode.NOT_FOUND else "SERVICE_UNKNOWN"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def ready_line(address: str, endpoints: Mapping[str, str]) -> str:
    """What a started child writes to its ready descriptor: its bound gRPC address, then, when
    it listens elsewhere too, a JSON object of those endpoints."""
    extra = f" {json.dumps(dict(endpoints), separators=(',', ':'))}" if endpoints else ""
    return f"{address}{extra}\n"


def parse_ready_line(line: str) -> tuple[str, dict[str, str]]:
    """(address, endpoints) of a :func:`ready_line`; an empty line gives an empty address."""
    address, _, extra = line.strip().partition(" ")
    return address, (json.loads(extra) if extra else {})


async def _read_line(fd: int) -> str:
    """The first line written to pipe ``fd``; empty if the writer closed it without one."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb")
    )
    try:
        return (await reader.readline()).decode().strip()
    finally:
        transport.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join(f"  | {line}" for line in text)


# ---- the fork server ----------------------------------------------------------------------

# What the fork server imports before it forks anything: the libraries (and generated
# messages) that every service imports, and that neither start a thread nor import numpy
# (numpy starts OpenBLAS's threads on import). Checked by the fork server: with a second
# thread, it forks nothing.
PRELOADED = (
    "alembic.command",
    "alembic.config",
    "alembic.runtime.migration",
    "alembic.op",
    "attr",
    "google.protobuf.json_format",
    "google.rpc.error_details_pb2",
    "google.rpc.status_pb2",
    "grpc",
    "grpc.aio",
    "grpc_health.v1.health",
    "grpc_reflection.v1alpha.reflection",
    "grpc_status.rpc_status",
    "llvmlite.binding",
    "mako.template",
    "opentelemetry.context",
    "opentelemetry.trace",
    "prometheus_client",
    "rich.console",
    "rich.table",
    "sqlalchemy",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.ext.compiler",
    "structlog",
    "yaml",
    # Every generated message and stub: the services' own and their clients'.
    "qtmesh.api.*",
)


class _ForkedProcess:
    """A child forked by the fork server: signalled through its pidfd (never another process
    that reused its pid), its exit code reported by the fork server, which reaps it."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def send_signal(self, sig: int) -> None:
        if self._exit.done():
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def exited(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)
            os.close(self._pidfd)


class _ForkServer:
    """The supervisor's end of the fork server (:func:`_serve_forks`): asks it to fork children
    over a socket, and learns their pids and exit codes from it."""

    def __init__(self, process: asyncio.subprocess.Process, control: socket.socket) -> None:
        self._process = process
        self._control = control
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._forks: dict[int, asyncio.Future[_ForkedProcess | None]] = {}
        self._children: dict[int, _ForkedProcess] = {}
        self._requests = 0
        self._closed = False
        loop.add_reader(control.fileno(), self._receive)

    @classmethod
    async def start(cls, env: Mapping[str, str], *, log_path: Path) -> _ForkServer | None:
        """The fork server, loading; None where the platform has no pidfds or fds to pass."""
        if not (
            sys.platform.startswith("linux")
            and hasattr(os, "pidfd_open")
            and hasattr(signal, "pidfd_send_signal")
        ):
            return None
        try:
            source = textwrap.dedent(inspect.getsource(_serve_forks))
        except OSError:  # no source to run (a frozen or byte-compiled-only install)
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        settings = {
            "control_fd": theirs.fileno(),
            "preload": list(PRELOADED),
            "supervisor_pid_env": SUPERVISOR_PID_ENV,
        }
        program = f"{source}\n{_serve_forks.__name__}(**{json.dumps(settings)})\n"
        try:
            with log_path.open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    "import sys; exec(compile(sys.stdin.read(), 'qtmesh-fork-server', 'exec'))",
                    "qtmesh-fork-server",
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=log,
                    env={**env, "PYTHONUNBUFFERED": "1", SUPERVISOR_PID_ENV: str(os.getpid())},
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        assert process.stdin is not None
        process.stdin.write(program.encode())
        process.stdin.close()
        ours.setblocking(False)
        return cls(process, ours)

    async def fork(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        log: int,
        ready: int,
        gate: int,
    ) -> _ForkedProcess | None:
        """A child running ``qtmesh args --ready-fd R`` with ``env`` (its start gate set), output
        to ``log``, forked as soon as the fork server has loaded. None when it cannot fork (it
        failed to load, found a second thread, or is gone): start the child with exec instead."""
        try:
            await asyncio.shield(self._ready)
        except StartupError:
            return None
        if self._closed:
            return None
        self._requests += 1
        request = self._requests
        forked: asyncio.Future[_ForkedProcess | None] = asyncio.get_running_loop().create_future()
        self._forks[request] = forked
        message = {
            "request": request,
            "name": name,
            "args": list(args),
            "env": dict(env),
            "gate_env": START_GATE_ENV,
        }
        try:
            await self._send(json.dumps(message).encode(), [log, ready, gate])
        except OSError:
            self._forks.pop(request, None)
            return None
        return await forked

    async def _send(self, data: bytes, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                socket.send_fds(self._control, [data], fds)
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self._control.fileno(), writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(self._control.fileno())

    def _receive(self) -> None:
        try:
            data, fds, _flags, _address = socket.recv_fds(self._control, 1 << 16, 1)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            self._lost()
            return
        message = json.loads(data)
        if "ready" in message:
            self._ready.set_result(None)
        elif "error" in message and "request" not in message:
            self._ready.set_exception(StartupError(f"fork server: {message['error']}"))
        elif "forked" in message:
            child = _ForkedProcess(message["pid"], fds[0])
            self._children[child.pid] = child
            self._resolve(message["forked"], child)
        elif "error" in message:
            self._resolve(message["request"], None)
        elif "exited" in message:
            exited = self._children.pop(message["exited"], None)
            if exited is not None:
                exited.exited(message["code"])

    def _resolve(self, request: int, child: _ForkedProcess | None) -> None:
        forked = self._forks.pop(request, None)
        if forked is not None and not forked.done():
            forked.set_result(child)

    def _lost(self) -> None:
        """The fork server is gone: forks not answered will not be; its children died with it
        (their parent-death signal)."""
        if self._closed:
            return
        self._closed = True
        asyncio.get_running_loop().remove_reader(self._control.fileno())
        if not self._ready.done():
            self._ready.set_exception(StartupError("the fork server exited"))
        for request in list(self._forks):
            self._resolve(request, None)
        for child in self._children.values():
            child.exited(-signal.SIGKILL)
        self._children.clear()

    async def close(self) -> None:
        """Stops the fork server (which kills any child it still has) and waits for it."""
        self._lost()
        self._control.close()
        try:
            await asyncio.wait_for(self._process.wait(), timeout=STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()


def _serve_forks(control_fd: int, preload: list[str], supervisor_pid_env: str) -> None:
    """The fork server's program, run on its own in a new interpreter (its source is sent to
    it, so it imports nothing from the mesh but what it preloads).

    It dies with the supervisor, imports ``preload`` (``pkg.*``: every module under ``pkg``),
    freezes what it loaded (so that no child's collector scans it again), and reports that it is
    ready on ``control_fd``, a socket to the supervisor. Then, per request (a JSON message, with
    the descriptors of the child's log, ready pipe and start gate), it forks a child that runs
    what ``python -m qtmesh ARGS`` runs, in its own session and with the request's environment,
    and reports its pid (with a pidfd to signal it by); when a child exits, it reports the exit
    code. When the supervisor closes the socket, it kills the children left and exits.

    Forking is only safe from a process with one thread: a fork copies the calling thread only,
    so a lock another thread held stays locked in the child forever (and gRPC's fork handlers
    would run, see ``die_with_supervisor``). So it never opens a channel, preloads nothing that
    starts a thread, and checks before each fork that it still has a single thread (if not, it
    answers with an error and the supervisor starts that child with exec)."""
    import contextlib
    import ctypes
    import gc
    import importlib
    import json
    import os
    import pkgutil
    import runpy
    import selectors
    import signal
    import socket
    import sys
    import traceback

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig, pr_set_name = 1, 15
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(os.environ[supervisor_pid_env]):
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the program came on stdin; the children read nothing
    os.close(devnull)
    control = socket.socket(fileno=control_fd)

    def send(message: dict[str, object], fds: list[int] | None = None) -> None:
        socket.send_fds(control, [json.dumps(message).encode()], fds or [])

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    def load(name: str) -> None:
        if name.endswith(".*"):
            package = importlib.import_module(name[:-2])
            for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
                importlib.import_module(module.name)
        else:
            importlib.import_module(name)

    try:
        for name in preload:
            load(name)
    except Exception as exc:  # a library missing: the supervisor starts every child with exec
        send({"error": f"preloading failed: {exc!r}"})
        return
    if "numpy" in sys.modules or threads() != 1:
        send({"error": f"{threads()} threads after preloading (numpy: {'numpy' in sys.modules})"})
        return
    gc.collect()
    gc.freeze()
    send({"ready": os.getpid()})

    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    children: dict[int, int] = {}  # pid: pidfd
    me = os.getpid()
    while True:
        for key, _events in selector.select():
            if key.fileobj is not control:
                pid = key.data
                selector.unregister(key.fd)
                os.close(children.pop(pid))
                _, status = os.waitpid(pid, 0)
                send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
                continue
            try:
                data, fds, _flags, _address = socket.recv_fds(control, 1 << 20, 3)
            except OSError:
                data, fds = b"", []
            if not data:  # the supervisor is done: nothing outlives it
                for pid, pidfd in children.items():
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    os.waitpid(pid, 0)
                return
            request = json.loads(data)
            if threads() != 1 or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                send({"request": request["request"], "error": "cannot fork safely"})
                continue
            log, ready, gate = fds
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                try:
                    selector.close()
                    control.close()
                    for pidfd in children.values():
                        os.close(pidfd)
                    os.setsid()
                    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
                    if os.getppid() != me:
                        os._exit(1)
                    libc.prctl(pr_set_name, request["name"].encode()[:15])
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    os.close(log)
                    env = dict(request["env"])
                    env[request["gate_env"]] = str(gate)
                    env[supervisor_pid_env] = str(me)  # it dies with this process
                    os.environ.clear()
                    os.environ.update(env)
                    sys.argv = ["qtmesh", *request["args"], "--ready-fd", str(ready)]
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                # What `python -m qtmesh ARGS` runs; it ends in SystemExit, which ends the
                # process as it ends that one.
                runpy.run_module("qtmesh", run_name="__main__", alter_sys=True)
                raise SystemExit(0)
            for fd in fds:
                os.close(fd)
            pidfd = os.pidfd_open(pid)
            children[pid] = pidfd
            selector.register(pidfd, selectors.EVENT_READ, pid)
            send({"forked": request["request"], "pid": pid}, [pidfd])
