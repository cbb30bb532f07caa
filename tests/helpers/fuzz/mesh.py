"""The whole mesh in this process: every App of the catalog, served on one asyncio event loop in a
background thread, so synchronous tests (hypothesis's ``@given`` among them) call it over plain
``grpc`` channels.

As ``qtmesh up`` does (qtmesh/runtime/supervisor.py), every port is picked before any service
starts, so each knows every other's address, followed services that start later included; the
services then start layer by layer (``catalog.start_layers``). Every relative path of a config
(the data dirs, memory's SQLite file, alpha-reporting's keyring, which the meta optimizer shares)
is rebased onto one root directory, as if ``qtmesh up`` ran there: nothing is written under the
working directory, which pytest's fixtures change from test to test.

While the mesh runs, :class:`ServerLog` keeps every error the servers log (structlog events of
level error, with their traceback, and grpc's own error records), by request id where the event
has one, so a test can show the server-side error behind a status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import sys
import threading
import time
import traceback
from collections.abc import Coroutine, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

import structlog

from qtmesh.runtime import catalog
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.server import MeshServer, ServerConfig

T = TypeVar("T")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class LoggedError:
    time: float  # time.monotonic() when it was logged
    request_id: str | None
    text: str
    # The exception's type and where it was raised ("ValueError at market/_convert.py:42").
    signature: str | None = None


_ROOT = Path(__file__).resolve().parents[2]


def signature(failure: BaseException) -> str:
    """The type of ``failure`` and the innermost frame of the repository it passed through (or
    the innermost frame at all)."""
    frames = traceback.extract_tb(failure.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(_ROOT)) and "/.venv/" not in f.filename]
    where = ""
    if ours or frames:
        frame = (ours or frames)[-1]
        path = Path(frame.filename)
        shown = path.relative_to(_ROOT) if path.is_relative_to(_ROOT) else path.name
        where = f" at {shown}:{frame.lineno}"
    return f"{type(failure).__qualname__}{where}"


class ServerLog:
    """The errors the mesh's servers log, from structlog (as a processor) and stdlib logging."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: list[LoggedError] = []
        self._handler = _Handler(self)

    def add(self, request_id: str | None, text: str, failure: BaseException | None = None) -> None:
        entry = LoggedError(
            time.monotonic(), request_id, text, signature(failure) if failure else None
        )
        with self._lock:
            self._errors.append(entry)

    def errors(self, *, request_id: str, since: float, until: float) -> list[LoggedError]:
        """What was logged for ``request_id``, and the errors without a request id logged in
        ``since..until`` (grpc logs a failure to deserialize a request without one)."""
        with self._lock:
            return [
                e
                for e in self._errors
                if e.request_id == request_id or (e.request_id is None and since <= e.time <= until)
            ]

    def install(self) -> None:
        """Routes structlog through :meth:`_capture` (and drops every event: the mesh's
        per-call log lines would drown the test output) and grpc's logger to the handler."""
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                self._capture,
            ],
            cache_logger_on_first_use=False,
        )
        grpc_logger = logging.getLogger("grpc")
        if self._handler not in grpc_logger.handlers:
            grpc_logger.addHandler(self._handler)

    def uninstall(self) -> None:
        logging.getLogger("grpc").removeHandler(self._handler)
        structlog.reset_defaults()

    def _capture(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        if event.get("level") in ("error", "critical") or event.get("exc_info"):
            failure = _exception(event.pop("exc_info", None))
            fields = " ".join(
                f"{k}={v!r}" for k, v in event.items() if k not in ("event", "level", "request_id")
            )
            text = f"{event.get('event')} {fields}".strip()
            if failure is not None:
                text += "\n" + "".join(traceback.format_exception(failure)).rstrip()
            request_id = event.get("request_id")
            self.add(str(request_id) if request_id is not None else None, text, failure)
        raise structlog.DropEvent


def _exception(exc_info: Any) -> BaseException | None:
    """The exception of structlog's ``exc_info`` (an exception, a sys.exc_info() tuple or
    True for the one being handled)."""
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, tuple):
        exc_info = exc_info[1]
    return exc_info if isinstance(exc_info, BaseException) else None


class _Handler(logging.Handler):
    def __init__(self, log: ServerLog) -> None:
        super().__init__(level=logging.ERROR)
        self._log = log
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        failure = record.exc_info[1] if record.exc_info else None
        self._log.add(None, self.format(record), failure)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (as the supervisor's ``_free_port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def rebased(config: T, root: Path) -> T:
    """``config`` with every relative path setting moved under ``root``."""
    changes = {
        field.name: root / value
        for field in dataclasses.fields(config)  # type: ignore[arg-type]
        if isinstance(value := getattr(config, field.name), Path) and not value.is_absolute()
    }
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


class InProcessMesh:
    """Every service of the catalog on one event loop in a daemon thread; start, then stop."""

    def __init__(self, root: Path, *, host: str = "127.0.0.1") -> None:
        self.root = root
        self.host = host
        self.layers = catalog.start_layers(catalog.names())
        self.addresses = {
            entry.name: f"{host}:{free_port(host)}" for layer in self.layers for entry in layer
        }
        self.servers: dict[str, MeshServer] = {}
        self.log = ServerLog()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="fuzz-mesh", daemon=True)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Runs ``coroutine`` on the mesh's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> None:
        """Starts every service, layer by layer; stops those started if one fails."""
        self.log.install()
        self._thread.start()
        try:
            self.run(self._start(), START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    async def _start(self) -> None:
        channels = ChannelConfig(addresses=dict(self.addresses))
        for layer in self.layers:
            await asyncio.gather(*(self._start_one(entry, channels) for entry in layer))

    async def _start_one(self, entry: catalog.Entry, channels: ChannelConfig) -> None:
        app = entry.load()
        port = int(self.addresses[entry.name].rsplit(":", 1)[1])
        server = await app.create_server(
            rebased(app.config_type(), self.root),
            server_config=ServerConfig(host=self.host, port=port, grace_seconds=1.0),
            channel_config=channels,
        )
        self.servers[entry.name] = server
        await server.start()

    def stop(self) -> None:
        """Stops the services (the last layer first), cancels what is left on the loop, and
        ends the thread."""
        if self._thread.is_alive():
            try:
                self.run(self._stop(), STOP_TIMEOUT_S)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(STOP_TIMEOUT_S)
        if not self._loop.is_running():
            self._loop.close()
        self.log.uninstall()

    async def _stop(self) -> None:
        for layer in reversed(self.layers):
            started = [self.servers[e.name] for e in layer if e.name in self.servers]
            await asyncio.gather(*(server.stop() for server in started), return_exceptions=True)
        current = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not current]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await self._loop.shutdown_asyncgens()
        await self._loop.shutdown_default_executor()
