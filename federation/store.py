"""Plan history: an append-only event log (plans as created, then status updates) and the
latest state of each plan that changed since, in SQLite (WAL) or PostgreSQL via SQLAlchemy Core.

The event log's primary key is the sequence every subscriber resumes from; a plan's sequence is
the sequence of the event that created it, so plans and updates share one strictly increasing
order. Appending a plan is a single INSERT (the sequence is stamped into the plan on read), and
an update is one INSERT plus one write of the plan's state, in one transaction: a restart loses
nothing that was acknowledged. One federation writes a history at a time: with several replicas,
the leader (federation/lease.py); the others read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa

from federation import _records as records
from federation.lease import EVENTS_CHANNEL
from federation.plan import Event, Plan, StatusUpdate, with_status
from qtmesh.base.contract import ActionStatus, ActionType, Priority
from qtmesh.base.errors import NotFound
from qtmesh.base.storage import Migrations, SqlStore, inserted_key

PLAN_EVENT, STATUS_EVENT = 1, 2

_metadata = sa.MetaData()
events = sa.Table(
    "federation_events",
    _metadata,
    sa.Column(
        "sequence",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    # The plan a status update belongs to; 0 for plan events (the plan is the event itself).
    sa.Column("plan_sequence", sa.BigInteger, nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.Column("max_priority", sa.SmallInteger, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Index("federation_plans_by_time", "kind", "create_time"),
)
# Plans whose actions changed status since they were created: their current state.
plan_states = sa.Table(
    "federation_plan_states",
    _metadata,
    sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)
# Plans this federation started executing and has not finished: after a crash, the next
# federation resumes them (federation/execution.py, "Resuming").
executions = sa.Table(
    "federation_executions",
    _metadata,
    sa.Column("plan_sequence", sa.BigInteger, primary_key=True, autoincrement=False),
)
# Market time of the latest completion of each action type: the agents' ``completed/<type>``
# hints, kept across restarts and changes of leader.
completions = sa.Table(
    "federation_completions",
    _metadata,
    sa.Column("action_type", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("market_time", sa.BigInteger, nullable=False),
)
# Built once: a statement given its values as parameters compiles once, not on every append.
_insert_event = events.insert()


MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "federation_alembic_version")
# The tables as the store uses them: what the migrations must build.
METADATA = _metadata


class PlanStore(SqlStore):
    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine, MIGRATIONS)

    def append_plan(self, plan: Plan, *, executing: bool = False) -> Plan:
        """Stores a new plan; returns it with its sequence. With ``executing``, records in the
        same transaction that this federation executes it, until :meth:`finish_execution`."""
        with self.engine.begin() as connection:
            sequence = inserted_key(
                connection.execute(
                    _insert_event,
                    dict(
                        kind=PLAN_EVENT,
                        plan_sequence=0,
                        create_time=plan.create_time,
                        max_priority=int(plan.max_priority),
                        payload=records.encode_plan(plan),
                    ),
                )
            )
            if executing:
                connection.execute(executions.insert().values(plan_sequence=sequence))
            self._notify(connection, sequence)
        return dataclasses.replace(plan, sequence=sequence)

    def _notify(self, connection: sa.Connection, sequence: int) -> None:
        """On PostgreSQL, tells the followers of ``sequence`` when the transaction commits."""
        if not self.local:
            connection.execute(sa.select(sa.func.pg_notify(EVENTS_CHANNEL, str(sequence))))

    def unfinished_executions(self) -> list[Plan]:
        """The plans whose execution started and never finished, in their current state, oldest
        first."""
        with self.engine.connect() as connection:
            sequences = connection.execute(
                sa.select(executions.c.plan_sequence).order_by(executions.c.plan_sequence)
            ).scalars()
            return [self._current(connection, s)[0] for s in list(sequences)]

    def finish_execution(self, plan_sequence: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                executions.delete().where(executions.c.plan_sequence == plan_sequence)
            )

    def append_status(
        self,
        plan_sequence: int,
        action_id: str,
        status: ActionStatus,
        detail: str,
        attempts: int,
        now: int,
        outcome: Mapping[str, str] | None = None,
        completed_at: int | None = None,
    ) -> StatusUpdate:
        """Records a status change of an action and applies it to its plan, atomically; an
        ``outcome`` (what the owner returned on completion) is kept on the plan's action, and
        ``completed_at`` (the market time of a completion) as its type's latest completion."""
        with self.engine.begin() as connection:
            plan, had_state = self._current(connection, plan_sequence)
            try:
                action = plan.action(action_id)
            except KeyError:
                raise NotFound(f"plan {plan_sequence} has no action {action_id!r}") from None
            update = StatusUpdate(
                sequence=0,
                plan_sequence=plan_sequence,
                action_id=action_id,
                action_type=action.action_type,
                priority=action.priority,
                status=status,
                detail=detail,
                attempts=attempts,
                update_time=now,
                outcome=outcome or {},
            )
            sequence = inserted_key(
                connection.execute(
                    _insert_event,
                    dict(
                        kind=STATUS_EVENT,
                        plan_sequence=plan_sequence,
                        create_time=now,
                        max_priority=int(action.priority),
                        payload=records.encode_status(update),
                    ),
                )
            )
            state = records.encode_plan(
                with_status(plan, action_id, status, detail, attempts, now, outcome)
            )
            if had_state:
                connection.execute(
                    plan_states.update()
                    .where(plan_states.c.sequence == plan_sequence)
                    .values(payload=state)
                )
            else:
                connection.execute(
                    plan_states.insert().values(sequence=plan_sequence, payload=state)
                )
            if completed_at is not None:
                self._complete(connection, action.action_type.value, completed_at)
            self._notify(connection, sequence)
        return dataclasses.replace(update, sequence=sequence)

    def _complete(self, connection: sa.Connection, action_type: int, at: int) -> None:
        known = connection.execute(
            sa.select(completions.c.market_time).where(completions.c.action_type == action_type)
        ).scalar()
        if known is None:
            connection.execute(completions.insert().values(action_type=action_type, market_time=at))
        elif at > known:
            connection.execute(
                completions.update()
                .where(completions.c.action_type == action_type)
                .values(market_time=at)
            )

    def completions(self) -> dict[ActionType, int]:
        """The market time of the latest completion of each action type."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(completions.c.action_type, completions.c.market_time)
            )
            return {ActionType(row.action_type): int(row.market_time) for row in rows}

    def events_after(self, sequence: int, limit: int) -> list[Event]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(events.c.sequence, events.c.kind, events.c.payload)
                .where(events.c.sequence > sequence)
                .order_by(events.c.sequence)
                .limit(limit)
            ).all()
        return [_event(row.sequence, row.kind, row.payload) for row in rows]

    def latest_update(self, plan_sequence: int, action_id: str) -> StatusUpdate | None:
        """The last recorded status change of one action, or None if it never changed."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(events.c.sequence, events.c.kind, events.c.payload)
                .where(events.c.kind == STATUS_EVENT)
                .where(events.c.plan_sequence == plan_sequence)
                .order_by(events.c.sequence.desc())
            )
            for row in rows:
                update = _event(row.sequence, row.kind, row.payload).update
                if update is not None and update.action_id == action_id:
                    return update
        return None

    def last_sequence(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.max(events.c.sequence))).scalar() or 0)

    def get_plan(self, sequence: int) -> Plan:
        with self.engine.connect() as connection:
            return self._current(connection, sequence)[0]

    def list_plans(
        self,
        *,
        after_sequence: int,
        limit: int,
        start_time: int | None,
        end_time: int | None,
        min_priority: Priority | None,
    ) -> list[Plan]:
        """Plans after ``after_sequence``, oldest first, in their current state, created in
        [start_time, end_time) with an action of at least ``min_priority``."""
        query = (
            sa.select(events.c.sequence, events.c.payload, plan_states.c.payload.label("state"))
            .select_from(events.outerjoin(plan_states, plan_states.c.sequence == events.c.sequence))
            .where(events.c.kind == PLAN_EVENT)
            .where(events.c.sequence > after_sequence)
            .order_by(events.c.sequence)
            .limit(limit)
        )
        if start_time is not None:
            query = query.where(events.c.create_time >= start_time)
        if end_time is not None:
            query = query.where(events.c.create_time < end_time)
        if min_priority is not None:
            query = query.where(events.c.max_priority >= int(min_priority))
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [_plan(r.sequence, r.state or r.payload) for r in rows]

    def _current(self, connection: sa.Connection, sequence: int) -> tuple[Plan, bool]:
        """The plan's current state, and whether it has changed since it was created."""
        row = connection.execute(
            sa.select(events.c.payload, plan_states.c.payload.label("state"))
            .select_from(events.outerjoin(plan_states, plan_states.c.sequence == events.c.sequence))
            .where(events.c.sequence == sequence)
            .where(events.c.kind == PLAN_EVENT)
        ).first()
        if row is None:
            raise NotFound(f"no plan with sequence {sequence}")
        return _plan(sequence, row.state or row.payload), row.state is not None


def _plan(sequence: int, payload: bytes) -> Plan:
    return records.decode_plan(payload, sequence)


def _event(sequence: int, kind: int, payload: bytes) -> Event:
    if kind == PLAN_EVENT:
        return Event(sequence, plan=_plan(sequence, payload))
    return Event(sequence, update=records.decode_status(payload, sequence))
