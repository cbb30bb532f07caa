"""The evolution event log on SQLite (WAL) or PostgreSQL, via SQLAlchemy Core.

Each row is one event of an evolution (started, a generation, ended) with an opaque payload
(the service's serialized message); its primary key is the sequence every WatchEvolutions
subscriber resumes from. The log is bounded: appending an event drops those more than ``keep``
sequences older than it, in the same transaction. One SESA writes a log at a time.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import sqlalchemy as sa

from qtmesh.base.storage import Migrations, SqlStore, inserted_key

STARTED, GENERATION, ENDED = 1, 2, 3

_metadata = sa.MetaData()
events = sa.Table(
    "sesa_evolution_events",
    _metadata,
    sa.Column(
        "sequence",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("evolution_id", sa.Text, nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    # The sequence of the run's started event (itself for a started event): an evolution id
    # can run more than once (a key rerun after a restart), a run once.
    sa.Column("start_sequence", sa.BigInteger, nullable=False),
    sa.Column("event_time", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    # Sequences never reused, even once every older row was dropped.
    sqlite_autoincrement=True,
)
_insert = events.insert()


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    sequence: int
    evolution_id: str
    kind: int  # STARTED, GENERATION or ENDED
    start_sequence: int  # the run's started event
    event_time: int  # Unix nanoseconds
    payload: bytes


# The schema's revisions (qtmesh.base.storage.Migrations).
MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "sesa_alembic_version")
# The tables as the store uses them: what the migrations must build.
METADATA = _metadata


class EvolutionStore(SqlStore):
    """The bounded event log: the newest ``keep`` sequences are kept."""

    def __init__(self, engine: sa.Engine, *, keep: int) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        super().__init__(engine, MIGRATIONS)
        self.keep = keep

    def append(
        self,
        evolution_id: str,
        kind: int,
        event_time: int,
        payload: bytes,
        *,
        start_sequence: int = 0,
    ) -> StoredEvent:
        """Appends an event (a started event is its own run's start: ``start_sequence`` 0)
        and drops those ``keep`` or more sequences older."""
        with self.engine.begin() as connection:
            sequence = inserted_key(
                connection.execute(
                    _insert,
                    dict(
                        evolution_id=evolution_id,
                        kind=kind,
                        start_sequence=start_sequence,
                        event_time=event_time,
                        payload=payload,
                    ),
                )
            )
            if kind == STARTED:
                connection.execute(
                    events.update()
                    .where(events.c.sequence == sequence)
                    .values(start_sequence=sequence)
                )
                start_sequence = sequence
            connection.execute(events.delete().where(events.c.sequence <= sequence - self.keep))
        return StoredEvent(sequence, evolution_id, kind, start_sequence, event_time, payload)

    def page(self, after: int, limit: int) -> tuple[int, list[StoredEvent]]:
        """The oldest kept sequence (0 when the log is empty) and up to ``limit`` events after
        ``after``, oldest first, read together."""
        with self.engine.begin() as connection:
            oldest = connection.execute(sa.select(sa.func.min(events.c.sequence))).scalar()
            rows = connection.execute(
                sa.select(events)
                .where(events.c.sequence > after)
                .order_by(events.c.sequence)
                .limit(limit)
            ).all()
        return int(oldest or 0), [
            StoredEvent(
                r.sequence, r.evolution_id, r.kind, r.start_sequence, r.event_time, r.payload
            )
            for r in rows
        ]

    def bounds(self) -> tuple[int, int]:
        """The oldest kept and the last sequence (0, 0 for an empty log)."""
        with self.engine.connect() as connection:
            oldest, last = connection.execute(
                sa.select(sa.func.min(events.c.sequence), sa.func.max(events.c.sequence))
            ).one()
        return int(oldest or 0), int(last or 0)

    def lifecycle(self) -> list[StoredEvent]:
        """Every kept started and ended event (no generations), oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(events)
                .where(events.c.kind.in_((STARTED, ENDED)))
                .order_by(events.c.sequence)
            ).all()
        return [
            StoredEvent(
                r.sequence, r.evolution_id, r.kind, r.start_sequence, r.event_time, r.payload
            )
            for r in rows
        ]

    def unended(self) -> list[tuple[int, str]]:
        """The runs the log shows started and never ended: (start sequence, evolution id),
        oldest first."""
        ended = sa.select(events.c.start_sequence).where(events.c.kind == ENDED)
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(events.c.sequence, events.c.evolution_id)
                .where(events.c.kind == STARTED)
                .where(events.c.sequence.not_in(ended))
                .order_by(events.c.sequence)
            ).all()
        return [(r.sequence, r.evolution_id) for r in rows]
