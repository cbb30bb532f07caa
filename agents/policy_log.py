"""The policy an agent owns (risk limits, the strategic mode, the strategy book), persisted as an
append-only log of changes over SQLite or PostgreSQL (SQLAlchemy Core).

Each row is one change: when it happened (wall clock and market clock), the action that caused it
(idempotency key, action id, plan sequence; no key for an operator's call), a sentence saying what
changed, and the whole policy after it as JSON. The current policy is the last row's, so a
restart resumes exactly where the last change left it, and the log is the audit trail. The
idempotency key is unique: an action is applied once, even across restarts.

One writer per log: an agent serialises its changes with a lock and keeps the current policy in
memory (replicas of an officer would need one leader).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from qtmesh.base.contract import NOT_APPLIED, Execution, ExecutionResult, ExecutionState
from qtmesh.base.storage import Migrations, SqlStore, create_engine, inserted_key

P = TypeVar("P")
Clock = Callable[[], int]


@dataclasses.dataclass(frozen=True)
class Change:
    sequence: int
    time: int  # wall clock, Unix nanoseconds
    market_time: int  # replay clock when known, else 0
    action_key: str | None
    action_id: str
    plan_sequence: int
    detail: str
    state: dict[str, Any]


def policy_table(name: str) -> sa.Table:
    """The log table of the agent ``name`` (``<name>_policy_log``), in a MetaData of its own."""
    return sa.Table(
        f"{name.replace('-', '_')}_policy_log",
        sa.MetaData(),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time_ns", sa.BigInteger, nullable=False),
        sa.Column("market_time_ns", sa.BigInteger, nullable=False),
        sa.Column("action_key", sa.String(256), nullable=True, unique=True),
        sa.Column("action_id", sa.String(256), nullable=False),
        sa.Column("plan_sequence", sa.BigInteger, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
    )


def migrations_of(name: str) -> Migrations:
    """The schema's revisions of the agent ``name``'s log (the table's name is their parameter)."""
    table = policy_table(name).name
    return Migrations(
        Path(__file__).parent / "migrations", f"{table}_alembic_version", {"table": table}
    )


class PolicyLog(SqlStore):
    """The table ``<name>_policy_log``; blocking calls end in ``_now`` (use :meth:`run`)."""

    def __init__(self, engine: sa.Engine, *, name: str) -> None:
        self.table = policy_table(name)
        super().__init__(engine, migrations_of(name))

    @classmethod
    def open(cls, url: str, *, name: str) -> PolicyLog:
        return cls(create_engine(url), name=name)

    def latest_now(self) -> Change | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(self.table).order_by(self.table.c.seq.desc()).limit(1)
            ).first()
        return _change(row) if row is not None else None

    def by_key_now(self, key: str) -> Change | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(self.table).where(self.table.c.action_key == key)
            ).first()
        return _change(row) if row is not None else None

    def history_now(self, limit: int) -> list[Change]:
        """The last ``limit`` changes, newest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(self.table).order_by(self.table.c.seq.desc()).limit(limit)
            ).all()
        return [_change(r) for r in rows]

    def append_now(
        self,
        *,
        time_ns: int,
        market_time: int,
        action_key: str | None,
        action_id: str,
        plan_sequence: int,
        detail: str,
        state: dict[str, Any],
    ) -> Change:
        values = {
            "time_ns": time_ns,
            "market_time_ns": market_time,
            "action_key": action_key,
            "action_id": action_id,
            "plan_sequence": plan_sequence,
            "detail": detail,
            "state": json.dumps(state, sort_keys=True, separators=(",", ":")),
        }
        with self.engine.begin() as connection:
            sequence = inserted_key(connection.execute(sa.insert(self.table).values(**values)))
        return Change(
            sequence=int(sequence),
            time=time_ns,
            market_time=market_time,
            action_key=action_key,
            action_id=action_id,
            plan_sequence=plan_sequence,
            detail=detail,
            state=state,
        )


def _change(row: sa.Row[Any]) -> Change:
    return Change(
        sequence=row.seq,
        time=row.time_ns,
        market_time=row.market_time_ns,
        action_key=row.action_key,
        action_id=row.action_id,
        plan_sequence=row.plan_sequence,
        detail=row.detail,
        state=json.loads(row.state),
    )


class OwnedPolicy(Generic[P]):
    """An agent's policy of type ``P``: read from memory, changed only through :meth:`change`,
    which validates, records and then swaps it in; a rejected change leaves everything as it was.
    ``encode``/``decode`` turn a policy into JSON-able data and back."""

    def __init__(
        self,
        log: PolicyLog,
        *,
        initial: P,
        encode: Callable[[P], dict[str, Any]],
        decode: Callable[[dict[str, Any]], P],
        wall_clock: Clock = time.time_ns,
    ) -> None:
        self.log = log
        self._encode = encode
        self._decode = decode
        self._wall_clock = wall_clock
        self._lock = asyncio.Lock()
        self.value = initial
        self.last: Change | None = None

    async def load(self) -> P:
        """The last recorded policy (the initial one when nothing was recorded)."""
        self.last = await self.log.run(self.log.latest_now)
        if self.last is not None:
            self.value = self._decode(self.last.state)
        return self.value

    async def execution(self, action_key: str) -> Execution:
        """What the change recorded for ``action_key`` did, if one was."""
        seen = await self.log.run(self.log.by_key_now, action_key)
        if seen is None:
            return NOT_APPLIED
        return Execution(ExecutionState.APPLIED, seen.detail)

    async def change(
        self,
        update: Callable[[P], tuple[P, str]],
        *,
        action_key: str | None,
        action_id: str = "",
        plan_sequence: int = 0,
        market_time: int = 0,
    ) -> ExecutionResult:
        """Applies ``update`` (the policy -> the new policy and a sentence on what changed; it
        raises MeshError on bad input) once per ``action_key``: a key recorded before, even
        before a restart, changes nothing and returns ``applied=False`` with the first detail.
        An update that returns the policy itself changed nothing and is not recorded (a halt
        re-asserted every cycle does not grow the log)."""
        async with self._lock:
            if action_key is not None:
                seen = await self.log.run(self.log.by_key_now, action_key)
                if seen is not None:
                    return ExecutionResult(
                        False, f"already applied as change {seen.sequence}: {seen.detail}"
                    )
            value, detail = update(self.value)
            if value is self.value:
                return ExecutionResult(True, detail)  # nothing changed: nothing to record
            self.last = await self.log.run(
                lambda: self.log.append_now(
                    time_ns=self._wall_clock(),
                    market_time=market_time,
                    action_key=action_key,
                    action_id=action_id,
                    plan_sequence=plan_sequence,
                    detail=detail,
                    state=self._encode(value),
                )
            )
            self.value = value
        return ExecutionResult(True, detail)
