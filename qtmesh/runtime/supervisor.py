"""Runs several mesh services as child processes on one machine (``qtmesh up`` and the demo).

Each child is ``python -m qtmesh serve NAME`` in its own session, told the addresses of the
services started before it, and reports its bound address through an inherited pipe once it
serves. On Linux a child also gets SIGKILL if the supervisor dies, so no child outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qtmesh.base import config as configuration
from qtmesh.runtime import catalog
from qtmesh.runtime.channels import ChannelConfig, open_channel

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class StartupError(RuntimeError):
    """A child failed to start; the message includes the end of its log."""


@dataclasses.dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    address: str = ""
    status: str = "STARTING"
    # What else it listens on, by name, as it reported (Built.endpoints).
    endpoints: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid


# The supervisor's pid, told to each child so it can die with the supervisor.
SUPERVISOR_PID_ENV = "QTMESH_SUPERVISOR_PID"


def die_with_supervisor() -> None:
    """Run first thing in a service the supervisor started: from then on the kernel kills it when
    the supervisor dies (Linux; elsewhere, nothing). It is armed in the child after exec, not by
    a ``preexec_fn`` between fork and exec: a preexec_fn forces a plain fork, which runs the
    atfork handlers of a threaded parent (gRPC's among them) in the child, and children started
    by a parent with live channels crashed at start up (about one start in six)."""
    pid = os.environ.get(SUPERVISOR_PID_ENV)
    if not pid or not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(pid):
        os._exit(1)  # the supervisor died before the signal was armed


class Mesh:
    """A set of running child services."""

    def __init__(
        self,
        *,
        host: str,
        ephemeral: bool,
        log_dir: Path,
        env: Mapping[str, str],
        channels: ChannelConfig | None = None,
    ) -> None:
        self.channels = channels
        self.host = host
        self.ephemeral = ephemeral
        self.log_dir = log_dir
        self.env = dict(env)
        self.children: list[Child] = []
        # The address of every service to start, known before any starts: a service may follow
        # one that starts after it (a followed client is no start-order dependency).
        self._planned: dict[str, str] = {}
        # The web port of each service that serves one (ephemeral meshes only).
        self._planned_web: dict[str, int] = {}

    @property
    def addresses(self) -> dict[str, str]:
        return {c.name: c.address for c in self.children if c.address}

    async def start(self, names: Sequence[str]) -> None:
        """Starts ``names`` layer by layer; raises StartupError (after stopping all) on failure."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        layers = catalog.start_layers(list(names))
        # Every port is chosen here, none by a child binding port 0: a port the kernel hands one
        # child could be the one planned for another that has not started yet.
        taken: set[int] = set()
        for entry in (e for layer in layers for e in layer):
            port = _free_port(self.host, taken) if self.ephemeral else entry.default_port
            self._planned[entry.name] = f"{_bracketed(self.host)}:{port}"
            if self.ephemeral and _serves_web(entry):
                self._planned_web[entry.name] = _free_port(self.host, taken)
        try:
            for layer in layers:
                await asyncio.gather(*(self._start_child(e) for e in layer))
        except BaseException:
            await self.stop()
            raise

    def _web_settings(self, entry: catalog.Entry) -> dict[str, str]:
        """A service that also serves the web (settings ``http_host`` and ``http_port``, the
        console) listens where the mesh does, on a port planned with the others when the mesh's
        ports are ephemeral; settings given in the environment win."""
        if not _serves_web(entry):
            return {}
        prefix = configuration.service_env_prefix(entry.name)
        wanted = {f"{prefix}HTTP_HOST": self.host}
        if entry.name in self._planned_web:
            wanted[f"{prefix}HTTP_PORT"] = str(self._planned_web[entry.name])
        return {k: v for k, v in wanted.items() if k not in self.env}

    async def _start_child(self, entry: catalog.Entry) -> None:
        port = int(self._planned[entry.name].rsplit(":", 1)[1])
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        known = dict(
            p.split("=", 1) for p in env.get("QTMESH_ADDRESSES", "").split(",") if "=" in p
        )
        known.update({k: v for k, v in self._planned.items() if k != entry.name})
        known.update(self.addresses)
        if known:
            env["QTMESH_ADDRESSES"] = ",".join(f"{k}={v}" for k, v in known.items())
        env.update(self._web_settings(entry))
        argv = ["-m", "qtmesh", "serve", entry.name, "--host", self.host, "--port", str(port)]
        child = await spawn(
            entry.name,
            argv,
            env=env,
            log_path=self.log_dir / f"{entry.name}.log",
            into=self.children,
        )
        child.status = await check_health(child.address, channels=self.channels)
        if child.status != "SERVING":
            raise StartupError(f"{entry.name} reports {child.status}\n{_tail(child.log_path)}")

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
        for child in self.children:
            child.status = "STOPPED"
        return {c.name: c.process.returncode or 0 for c in self.children}

    def write_state(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            c.name: {
                "address": c.address,
                "pid": c.pid,
                "log": str(c.log_path),
                **({"endpoints": c.endpoints} if c.endpoints else {}),
            }
            for c in self.children
        }
        path.write_text(json.dumps(state, indent=2))


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


def _serves_web(entry: catalog.Entry) -> bool:
    """Whether the service also serves the web: its settings have ``http_host`` and
    ``http_port`` (the console)."""
    fields = {f.name for f in dataclasses.fields(entry.load().config_type)}
    return {"http_host", "http_port"} <= fields


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


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
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            "--ready-fd",
            str(write_fd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**env, SUPERVISOR_PID_ENV: str(os.getpid())},
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    os.close(write_fd)
    child = Child(name, process, log_path)
    if into is not None:
        into.append(child)
    try:
        line = await asyncio.wait_for(_read_line(read_fd), timeout=STARTUP_TIMEOUT_S)
        child.address, child.endpoints = parse_ready_line(line)
    except TimeoutError:
        raise StartupError(
            f"{name} did not start within {STARTUP_TIMEOUT_S:.0f} s\n{_tail(log_path)}"
        ) from None
    if not child.address:
        code = await process.wait()
        raise StartupError(f"{name} exited with code {code}\n{_tail(log_path)}")
    return child


@contextlib.asynccontextmanager
async def running_mesh(
    names: Sequence[str],
    *,
    host: str = "127.0.0.1",
    ephemeral: bool = True,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Mesh]:
    """Starts ``names`` as child processes for the duration of the block."""
    mesh = Mesh(host=host, ephemeral=ephemeral, log_dir=log_dir, env=env or os.environ)
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
