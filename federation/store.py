"""Plan history: an append-only event log (plans and status updates) and each plan's latest
state, in SQLite (WAL) or PostgreSQL through SQLAlchemy Core.

The event log's primary key is the sequence every subscriber resumes from. A plan's sequence
is the sequence of the event that created it, so plans and status updates share one strictly
increasing order. Writing an event and updating its plan is one transaction: a restart loses
nothing that was acknowledged. One federation writes a history at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import sqlalchemy as sa

from agents.contract import ActionStatus, Priority
from federation import _convert as convert
from federation.plan import Plan, StatusUpdate, with_status
from qtmesh.api.federation.v1 import federation_pb2 as pb
from qtmesh.errors import NotFound
from qtmesh.storage import SqlStore

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
    sa.Column("plan_sequence", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)
plans = sa.Table(
    "federation_plans",
    _metadata,
    sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("plan_id", sa.String(64), nullable=False, unique=True),
    sa.Column("create_time", sa.BigInteger, nullable=False, index=True),
    sa.Column("max_priority", sa.SmallInteger, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)


@dataclasses.dataclass(frozen=True)
class Event:
    """One entry of the log: a plan (as created) or a status update."""

    sequence: int
    plan: Plan | None = None
    update: StatusUpdate | None = None


class PlanStore(SqlStore):
    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine, _metadata)

    def append_plan(self, build: Callable[[int], Plan]) -> Plan:
        """Reserves the next sequence, builds the plan with it, stores both, atomically."""
        with self.engine.begin() as connection:
            sequence = connection.execute(
                events.insert().values(kind=PLAN_EVENT, plan_sequence=0, payload=b"")
            ).inserted_primary_key[0]
            plan = build(sequence)
            payload = convert.plan_to_proto(plan).SerializeToString()
            connection.execute(
                events.update()
                .where(events.c.sequence == sequence)
                .values(plan_sequence=sequence, payload=payload)
            )
            connection.execute(
                plans.insert().values(
                    sequence=sequence,
                    plan_id=plan.id,
                    create_time=plan.create_time,
                    max_priority=int(plan.max_priority),
                    payload=payload,
                )
            )
        return plan

    def append_status(
        self,
        plan_sequence: int,
        action_id: str,
        status: ActionStatus,
        detail: str,
        attempts: int,
        now: int,
    ) -> StatusUpdate:
        """Records a status change of an action and applies it to its plan, atomically."""
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(plans.c.payload).where(plans.c.sequence == plan_sequence)
            ).first()
            if row is None:
                raise NotFound(f"no plan with sequence {plan_sequence}")
            plan = convert.plan_from_proto(pb.GlobalActionPlan.FromString(row.payload))
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
            )
            sequence = connection.execute(
                events.insert().values(
                    kind=STATUS_EVENT,
                    plan_sequence=plan_sequence,
                    payload=convert.status_to_proto(update).SerializeToString(),
                )
            ).inserted_primary_key[0]
            changed = with_status(plan, action_id, status, detail, attempts, now)
            connection.execute(
                plans.update()
                .where(plans.c.sequence == plan_sequence)
                .values(payload=convert.plan_to_proto(changed).SerializeToString())
            )
        return dataclasses.replace(update, sequence=sequence)

    def events_after(self, sequence: int, limit: int) -> list[Event]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(events.c.sequence, events.c.kind, events.c.payload)
                .where(events.c.sequence > sequence)
                .where(events.c.payload != b"")
                .order_by(events.c.sequence)
                .limit(limit)
            ).all()
        return [_event(row.sequence, row.kind, row.payload) for row in rows]

    def last_sequence(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.max(events.c.sequence))).scalar() or 0)

    def get_plan(self, sequence: int) -> Plan:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(plans.c.payload).where(plans.c.sequence == sequence)
            ).first()
        if row is None:
            raise NotFound(f"no plan with sequence {sequence}")
        return convert.plan_from_proto(pb.GlobalActionPlan.FromString(row.payload))

    def list_plans(
        self,
        *,
        after_sequence: int,
        limit: int,
        start_time: int | None,
        end_time: int | None,
        min_priority: Priority | None,
    ) -> list[Plan]:
        """Plans after ``after_sequence``, oldest first, created in [start_time, end_time)
        with an action of at least ``min_priority``."""
        query = (
            sa.select(plans.c.payload)
            .where(plans.c.sequence > after_sequence)
            .order_by(plans.c.sequence)
            .limit(limit)
        )
        if start_time is not None:
            query = query.where(plans.c.create_time >= start_time)
        if end_time is not None:
            query = query.where(plans.c.create_time < end_time)
        if min_priority is not None:
            query = query.where(plans.c.max_priority >= int(min_priority))
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [convert.plan_from_proto(pb.GlobalActionPlan.FromString(r.payload)) for r in rows]


def _event(sequence: int, kind: int, payload: bytes) -> Event:
    if kind == PLAN_EVENT:
        return Event(
            sequence, plan=convert.plan_from_proto(pb.GlobalActionPlan.FromString(payload))
        )
    message = pb.ActionStatusUpdate.FromString(payload)
    return Event(sequence, update=convert.status_from_proto(message, sequence))
