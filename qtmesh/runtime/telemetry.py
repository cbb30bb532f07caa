"""Structured logging: structlog processors, JSON in production, console in a terminal.

An exception is logged as its type, message and a bounded traceback, without locals.

Request-scoped fields (request id, method, client) live in contextvars bound by the server
interceptor, so every log line of a call carries them without passing a logger around.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

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
