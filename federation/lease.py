"""Leadership among federation replicas that share one PostgreSQL history, and how followers
hear of what the leader writes.

**The lease** is the session-level advisory lock ``LOCK_KEY`` of the history's database, held on
a connection of its own (:class:`Lease`). A replica waits for it in ``pg_advisory_lock``, in a
thread, and is the leader from the moment the call returns until that session ends:

* a leader that exits, crashes or is SIGKILLed loses it at once (its socket closes and the
  server ends the session), and the next replica waiting gets it;
* a leader whose node vanishes loses it when the server gives up on the session's TCP
  connection: the connection asks for keepalives after ``KEEPALIVE_IDLE_SECONDS`` idle, every
  ``KEEPALIVE_INTERVAL_SECONDS``, ``KEEPALIVE_COUNT`` times (about 11 s), so PostgreSQL's
  ``tcp_keepalives_*`` defaults decide the server's side (set them as low on the server);
* the leader checks its session every ``heartbeat_seconds`` (``SELECT 1`` on it). When the check
  fails, the lock may be someone else's already, so :meth:`Lease.hold` returns and the service
  stops at once, writing nothing more (fail-stop); restarted, it waits as a follower again.

Who leads is the ``application_name`` of the lock holder's session (:meth:`Lease.holder`): the
replica's host and pid, which followers name in their UNAVAILABLE answers.

**Following**: the history's store notifies ``EVENTS_CHANNEL`` with each event's sequence when
its transaction commits. A follower LISTENs on it (:func:`follow_history`) and on each
notification publishes what was stored since the last event it published, in sequence order;
each (re)connection starts by reading what it missed, so a lost notification delays an event
and never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable

import psycopg
import sqlalchemy as sa
import structlog

from qtmesh.base.errors import Unavailable
from qtmesh.base.reconnect import follow_forever

_log = structlog.get_logger("federation.lease")

# The advisory lock of a federation history: b"qtmeshFD" as a signed 64-bit key.
LOCK_KEY = int.from_bytes(b"qtmeshFD", "big", signed=True)
KEEPALIVE_IDLE_SECONDS = 5
KEEPALIVE_INTERVAL_SECONDS = 2
KEEPALIVE_COUNT = 3
# Every append to the history notifies this channel with its sequence, when it commits.
EVENTS_CHANNEL = "qtmesh_federation_events"


def libpq_url(url: str) -> str:
    """``url`` as libpq takes it: without SQLAlchemy's ``+driver``."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def replica_name() -> str:
    return f"qtmesh-federation {socket.gethostname()} pid {os.getpid()}"


def _connect(url: str, name: str) -> psycopg.Connection:
    return psycopg.connect(
        libpq_url(url),
        autocommit=True,
        application_name=name,
        keepalives=1,
        keepalives_idle=KEEPALIVE_IDLE_SECONDS,
        keepalives_interval=KEEPALIVE_INTERVAL_SECONDS,
        keepalives_count=KEEPALIVE_COUNT,
        connect_timeout=10,
    )


class Lease:
    """The federation's leader lease on the database at ``url`` (module docstring)."""

    def __init__(self, url: str, *, name: str | None = None, heartbeat_seconds: float = 1.0):
        self.url = url
        self.name = name or replica_name()
        self.heartbeat_seconds = heartbeat_seconds
        self._connection: psycopg.Connection | None = None

    async def try_acquire(self) -> bool:
        """Takes the lease if no replica holds it; whether this replica holds it now."""
        try:
            connection = await asyncio.to_thread(_connect, self.url, self.name)
            row = await asyncio.to_thread(
                lambda: connection.execute(
                    "SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)
                ).fetchone()
            )
        except psycopg.Error as exc:
            raise Unavailable(f"cannot ask for the federation's lease: {exc}") from None
        if not (row and row[0]):
            connection.close()
            return False
        self._connection = connection
        _log.info("leading the federation's history", replica=self.name)
        return True

    async def acquire(self) -> None:
        """Returns once this replica holds the lease; cancelling the wait gives up the place."""
        try:
            connection = await asyncio.to_thread(_connect, self.url, self.name)
        except psycopg.Error as exc:
            raise Unavailable(f"cannot wait for the federation's lease: {exc}") from None
        waiting = asyncio.ensure_future(
            asyncio.to_thread(connection.execute, "SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        )
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            connection.cancel()  # the server ends the wait; the thread returns
            with contextlib.suppress(psycopg.Error):
                await waiting
            connection.close()
            raise
        except psycopg.Error as exc:
            connection.close()
            raise Unavailable(f"cannot wait for the federation's lease: {exc}") from None
        self._connection = connection
        _log.info("leading the federation's history", replica=self.name)

    async def hold(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> str:
        """Checks the lease's session every ``heartbeat_seconds``; returns (why) once the check
        fails, when this replica can no longer be sure it leads."""
        connection = self._connection
        if connection is None:
            raise RuntimeError("acquire the lease first")
        while True:
            await sleep(self.heartbeat_seconds)
            try:
                await asyncio.to_thread(connection.execute, "SELECT 1")
            except psycopg.Error as exc:
                return f"the lease's session failed: {exc}"

    def holder(self) -> str:
        """The application name of the session holding the lease, or "no replica"."""
        try:
            with psycopg.connect(libpq_url(self.url), autocommit=True, connect_timeout=5) as c:
                row = c.execute(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                    " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                    " AND (l.classid::bigint << 32 | l.objid::bigint) = %s",
                    (LOCK_KEY,),
                ).fetchone()
        except psycopg.Error as exc:
            return f"unknown ({exc})"
        return str(row[0]) if row else "no replica"

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await asyncio.to_thread(connection.close)  # ending the session frees the lock


async def follow_history(
    url: str,
    publish: Callable[[], Awaitable[int]],
    *,
    initial_backoff: float = 0.2,
    max_backoff: float = 5.0,
) -> None:
    """Until cancelled: ``publish()`` what is stored, then again on every notification of
    ``EVENTS_CHANNEL`` (module docstring); reconnects with backoff."""

    async def listen(connected: Callable[[], None]) -> None:
        try:
            async with await psycopg.AsyncConnection.connect(
                libpq_url(url), autocommit=True, application_name="qtmesh-federation follower"
            ) as connection:
                await connection.execute(f"LISTEN {EVENTS_CHANNEL}")
                connected()
                await publish()  # what was stored while not listening
                async for _ in connection.notifies():
                    await publish()
        except psycopg.Error as exc:
            raise Unavailable(f"lost the history's notifications: {exc}") from None

    await follow_forever(
        listen,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        log=_log,
        what="the federation history",
    )
