"""One storage layer for both backends: SQLite (the embedded default, in WAL mode) and
PostgreSQL by URL when several replicas share state.

Stores define their tables with SQLAlchemy Core, which speaks both dialects, so one store class
serves both and one test suite covers both. Calls block, so async code runs them through
:meth:`SqlStore.run` in a worker thread.

Schemas: every store is brought to its latest schema by its :class:`Migrations` (Alembic) when
it opens, with a version table of its own, so stores can share a database. Its first revision
creates the tables as they were before migrations existed, only where they are missing, so a
database made by an older release upgrades in place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import alembic.command
import alembic.config
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext

from qtmesh.base.config import ConfigError, Secret, require, setting

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


def inserted_key(result: sa.CursorResult[Any]) -> int:
    """The primary key a one-row INSERT assigned."""
    key = result.inserted_primary_key
    if key is None:
        raise ValueError("the statement inserted no row")
    return int(key[0])


_MIGRATING = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Migrations:
    """A store's Alembic scripts (``directory``, with its ``env.py`` calling
    :func:`run_migrations`), the table recording its schema's revision and what its revisions
    are parameterised by."""

    directory: Path
    version_table: str
    # What the revisions read from ``context.config.attributes`` (a table's name, when one
    # store class keeps one table per owner).
    parameters: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def upgrade(self, engine: sa.Engine) -> None:
        """Brings the database to the latest revision, in one transaction."""
        config = alembic.config.Config()
        config.set_main_option("script_location", str(self.directory))
        config.attributes.update(self.parameters)
        # Alembic's ``context`` and ``op`` are process-wide proxies: stores opened at once (in
        # worker threads, several services in one process) must migrate one at a time.
        with _MIGRATING, engine.begin() as connection:
            config.attributes["connection"] = connection
            config.attributes["version_table"] = self.version_table
            alembic.command.upgrade(config, "head")

    def revision(self, engine: sa.Engine) -> str | None:
        """The database's revision (None before the first upgrade)."""
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": self.version_table}
            )
            return context.get_current_revision()


def run_migrations() -> None:
    """The body of every store's ``env.py``: runs the revisions on the connection and version
    table :meth:`Migrations.upgrade` passed (online only: a store migrates its own database)."""
    from alembic import context

    config = context.config
    context.configure(
        connection=config.attributes["connection"],
        version_table=config.attributes["version_table"],
        render_as_batch=True,  # SQLite alters a table by copying it
    )
    with context.begin_transaction():
        context.run_migrations()


class SqlStore:
    """Base of stores: brings the schema up to date by its ``migrations`` and runs blocking work
    off the loop."""

    def __init__(self, engine: sa.Engine, migrations: Migrations) -> None:
        self.engine = engine
        self.local = engine.dialect.name == "sqlite"
        migrations.upgrade(engine)

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    """Where a service keeps its state: PostgreSQL or SQLite by ``database_url``, else its own
    SQLite file (:meth:`sqlite_file`). A config inherits this setting and calls
    ``check_database`` from its ``__post_init__``."""

    database_url: Secret | None = setting(
        None,
        help="sqlite:///path or postgresql://user:pass@host/db; unset: the service's SQLite file",
    )

    def check_database(self) -> None:
        if self.database_url is None:
            return
        url = self.database_url.reveal()
        scheme = url.partition(":")[0]
        require(
            scheme in ("sqlite", "postgresql") or scheme.startswith("postgresql+"),
            "database_url",
            f"cannot open {redact(url)}: expected sqlite:/// or postgresql://",
        )

    def sqlite_file(self) -> Path:
        """Where the SQLite file lives when no URL is set: each config says (DataDirConfig by
        its ``data_dir``, the memory engine by its ``sqlite_path``)."""
        raise NotImplementedError(
            f"{type(self).__name__} must define sqlite_file() or inherit DataDirConfig"
        )

    @property
    def url(self) -> str:
        if self.database_url is not None:
            return self.database_url.reveal()
        return sqlite_url(self.sqlite_file())

    def open(self, store: Callable[[str], T]) -> T:
        """``store(url)``; a database that cannot be opened is a ConfigError naming
        ``database_url`` (with the password hidden). Blocks: call it in a thread."""
        try:
            return store(self.url)
        except (ValueError, OSError, sa.exc.SQLAlchemyError) as exc:
            raise ConfigError("database_url", f"cannot open {redact(self.url)}: {exc}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataDirConfig(DatabaseConfig):
    """:class:`DatabaseConfig` whose SQLite file is ``database_file`` in ``data_dir``."""

    database_file: ClassVar[str]

    data_dir: Path = setting(
        Path(".qtmesh/data"), help="directory of the service's SQLite file when no URL is set"
    )

    def sqlite_file(self) -> Path:
        return self.data_dir / self.database_file
