"""One storage layer for both backends: SQLite (the embedded default, in WAL mode) and
PostgreSQL by URL when several replicas share state.

Stores define their tables with SQLAlchemy Core, which speaks both dialects, so one store class
serves both and one test suite covers both. Calls block, so async code runs them through
:meth:`SqlStore.run` in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

T = TypeVar("T")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def create_engine(url: str) -> sa.Engine:
    """An engine for ``sqlite:///path`` or ``postgresql://user:pass@host:port/db``."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _configure(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True)
    raise ValueError(f"unsupported database URL {redact(url)!r}: use sqlite:/// or postgresql://")


def redact(url: str) -> str:
    """The URL with its password hidden, for logs and messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"


class SqlStore:
    """Base of stores: creates the tables of ``metadata`` and runs blocking work off the loop."""

    def __init__(self, engine: sa.Engine, metadata: sa.MetaData) -> None:
        self.engine = engine
        self.local = engine.dialect.name == "sqlite"
        metadata.create_all(engine)

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(work, *args)

    async def run_short(self, work: Callable[..., T], *args: Any) -> T:
        """Like :meth:`run`, but a short write to a local SQLite file runs on the event loop:
        it takes about as long as the hop to a worker thread and back, which it saves."""
        if self.local:
            return work(*args)
        return await asyncio.to_thread(work, *args)

    def close(self) -> None:
        self.engine.dispose()
