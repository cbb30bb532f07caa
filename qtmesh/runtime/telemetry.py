"""Structured logging: structlog processors, JSON in production, console in a terminal.

An exception is logged as its type, message and a bounded traceback, without locals.

gRPC's C core logs on file descriptor 2 in its own format (TLS handshake failures among them);
:func:`capture_native_log` turns those lines into structured events of the process's log.

Request-scoped fields (request id, method, client) live in contextvars bound by the server
interceptor, so every log line of a call carries them without passing a logger around.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from typing import BinaryIO, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
TRACEBACK_FRAMES = 20
"""An error's traceback is logged with at most this many frames and never with the frames'
local variables, which hold request payloads and credentials."""


def configure_logging(*, fmt: LogFormat = "auto", level: str = "info", service: str = "") -> None:
    """Configures structlog for the process. ``auto`` means console on a TTY, JSON otherwise."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            exception_formatter=structlog.dev.RichTracebackFormatter(
                show_locals=False, max_frames=TRACEBACK_FRAMES
            ),
        )
        if use_console
        else structlog.processors.JSONRenderer()
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        processors.append(_add_service(service))
    if not use_console:
        processors.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(
                    show_locals=False, max_frames=TRACEBACK_FRAMES
                )
            )
        )
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _add_service(service: str) -> structlog.typing.Processor:
    def add_service(
        _logger: object, _name: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        event.setdefault("service", service)
        return event

    return add_service


# gRPC core's (absl's) line: severity, MMDD, time, thread, file:line] message.
_NATIVE_LINE = re.compile(
    r"^(?P<severity>[IWEF])\d{4} [\d:.]+\s+\d+ (?P<source>[\w./-]+:\d+)\] (?P<message>.*)$"
)
_NATIVE_LEVELS = {"I": "debug", "W": "warning", "E": "error", "F": "critical"}
_HANDSHAKE = "Handshake failed with "


def capture_native_log() -> None:
    """Routes what native code writes to file descriptor 2 through a pipe read by a thread:
    gRPC core's lines become events (a TLS handshake failure ``tls handshake failed`` at
    warning level, the rest ``grpc core`` at their own level, INFO as debug), anything else
    passes through unchanged. Python's own ``sys.stderr`` moves to a copy of the original
    descriptor first, so the structured log never goes through the pipe. Call it once, before
    :func:`configure_logging`."""
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(original, "w", buffering=1, closefd=False)  # noqa: SIM115 (for the process)
    passthrough = open(original, "wb", buffering=0, closefd=False)  # noqa: SIM115
    threading.Thread(
        target=_relay, args=(read_end, passthrough), name="native-log", daemon=True
    ).start()


def _relay(read_end: int, passthrough: BinaryIO) -> None:
    log = structlog.get_logger("grpc")
    with open(read_end, "rb", buffering=0) as pipe:
        for raw in pipe:
            # Never raise: a relay that stopped would leave native writers blocked on the pipe.
            try:
                match = _NATIVE_LINE.match(raw.decode("utf-8", "replace").rstrip("\n"))
                if match is None:
                    passthrough.write(raw)
                    continue
                message, source = match["message"], match["source"]
                if message.startswith(_HANDSHAKE):
                    log.warning(
                        "tls handshake failed", error=message[len(_HANDSHAKE) :], source=source
                    )
                else:
                    level = _NATIVE_LEVELS[match["severity"]]
                    getattr(log, level)("grpc core", message=message, source=source)
            except Exception:  # a relay that stopped would block native writers
                pass
