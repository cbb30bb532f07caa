"""Persistence of the paper fleet on SQLite or PostgreSQL: deployments and the changes executed
actions made to them, so allocations, arb-missions, the strategy book, halts and idempotency
keys survive a restart.

A deployment is identified by its fingerprint (strategies, starting allocations, deployment
time, costs): a restarted market with the same data and settings finds its changes again, while
different data starts a new deployment. Changes are append-only. What a change did to the book
and the halts is kept in a table of its own (``fleet_change_book``), so a database written
before the book moved to the fleet opens unchanged. Methods block; async callers go
through :meth:`SqlStore.run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from market.fleet.book import BookEntry
from market.fleet.state import ArbMission, Cause, FleetChange
from qtmesh.base.genome import StrategyFamily, StrategyGenome, StrategyStage
from qtmesh.base.storage import Migrations, SqlStore, create_engine

metadata = sa.MetaData()

deployments = sa.Table(
    "fleet_deployments",
    metadata,
    sa.Column("fingerprint", sa.Text, primary_key=True),
    sa.Column("deployment_time", sa.BigInteger, nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
)

changes = sa.Table(
    "fleet_changes",
    metadata,
    sa.Column(
        "fingerprint", sa.Text, sa.ForeignKey("fleet_deployments.fingerprint"), primary_key=True
    ),
    sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
    # One change per idempotency key, across deployments and restarts.
    sa.Column("action_key", sa.Text, nullable=False, unique=True),
    sa.Column("action_id", sa.Text, nullable=False),
    sa.Column("plan_sequence", sa.BigInteger, nullable=False),
    sa.Column("time", sa.BigInteger, nullable=False),
    sa.Column("allocations", sa.JSON, nullable=False),
    sa.Column("mission", sa.JSON, nullable=True),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("record_time", sa.BigInteger, nullable=False),
)


book_changes = sa.Table(
    "fleet_change_book",
    metadata,
    sa.Column("fingerprint", sa.Text, primary_key=True),
    sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("entries", sa.JSON, nullable=False),
    sa.Column("halted", sa.JSON, nullable=False),
    sa.Column("scale", sa.Float, nullable=False),
    sa.ForeignKeyConstraint(
        ["fingerprint", "sequence"], ["fleet_changes.fingerprint", "fleet_changes.sequence"]
    ),
)


def _entry_json(e: BookEntry) -> dict[str, Any]:
    g = e.genome
    return {
        "strategy_id": e.strategy_id,
        "sector": e.sector,
        "symbol": e.symbol,
        "genome": {
            "id": g.id,
            "family": g.family.name,
            "parameters": dict(g.parameters),
            "parent_ids": list(g.parent_ids),
            "generation": g.generation,
            "origin": g.origin,
        },
        "stage": e.stage.name,
        "enabled": e.enabled,
        "weight": e.weight,
        "since": e.since,
        "origin": e.origin,
        "trials": e.trials,
    }


def _entry(data: dict[str, Any]) -> BookEntry:
    g = data["genome"]
    genome = StrategyGenome(
        id=g["id"],
        family=StrategyFamily[g["family"]],
        parameters=g["parameters"],
        parent_ids=tuple(g["parent_ids"]),
        generation=g["generation"],
        origin=g["origin"],
    )
    return BookEntry(**{**data, "genome": genome, "stage": StrategyStage[data["stage"]]})


def _change(row: Any, book: Any = None) -> FleetChange:
    mission = ArbMission(**row.mission) if row.mission else None
    return FleetChange(
        sequence=row.sequence,
        time=row.time,
        cause=Cause(row.action_key, row.action_id, row.plan_sequence),
        allocations=row.allocations,
        mission=mission,
        detail=row.detail,
        book=tuple(_entry(e) for e in book.entries) if book is not None else (),
        halted=frozenset(book.halted) if book is not None else frozenset(),
        scale=book.scale if book is not None else 1.0,
    )


# The schema's revisions (qtmesh.base.storage.Migrations).
MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "market_alembic_version")


class FleetStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(create_engine(url), MIGRATIONS)

    def open_deployment(
        self, fingerprint: str, deployment_time: int, now: int
    ) -> list[FleetChange]:
        """Records the deployment if it is new; returns its changes, oldest first."""
        with self.engine.begin() as c:
            found = c.execute(
                sa.select(deployments.c.fingerprint).where(deployments.c.fingerprint == fingerprint)
            ).first()
            if found is None:
                c.execute(
                    deployments.insert().values(
                        fingerprint=fingerprint, deployment_time=deployment_time, create_time=now
                    )
                )
                return []
            rows = c.execute(
                changes.select()
                .where(changes.c.fingerprint == fingerprint)
                .order_by(changes.c.sequence)
            ).all()
            extra = {
                row.sequence: row
                for row in c.execute(
                    book_changes.select().where(book_changes.c.fingerprint == fingerprint)
                )
            }
            return [_change(row, extra.get(row.sequence)) for row in rows]

    def change_of_action(self, action_key: str) -> FleetChange | None:
        with self.engine.connect() as c:
            row = c.execute(changes.select().where(changes.c.action_key == action_key)).first()
            if row is None:
                return None
            book = c.execute(
                book_changes.select().where(
                    (book_changes.c.fingerprint == row.fingerprint)
                    & (book_changes.c.sequence == row.sequence)
                )
            ).first()
        return _change(row, book)

    def append(self, fingerprint: str, change: FleetChange, now: int) -> None:
        mission = change.mission
        with self.engine.begin() as c:
            c.execute(
                changes.insert().values(
                    fingerprint=fingerprint,
                    sequence=change.sequence,
                    action_key=change.cause.action_key,
                    action_id=change.cause.action_id,
                    plan_sequence=change.cause.plan_sequence,
                    time=change.time,
                    allocations=dict(change.allocations),
                    mission=None
                    if mission is None
                    else {
                        "id": mission.id,
                        "long_sector": mission.long_sector,
                        "short_sector": mission.short_sector,
                        "allocation": mission.allocation,
                        "open_time": mission.open_time,
                        "close_time": mission.close_time,
                        "action_id": mission.action_id,
                    },
                    detail=change.detail,
                    record_time=now,
                )
            )
            c.execute(
                book_changes.insert().values(
                    fingerprint=fingerprint,
                    sequence=change.sequence,
                    entries=[_entry_json(e) for e in change.book],
                    halted=sorted(change.halted),
                    scale=change.scale,
                )
            )
