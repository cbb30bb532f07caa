"""Persistence of the paper fleet on SQLite or PostgreSQL: deployments and the changes executed
actions made to them, so allocations, arb-missions and idempotency keys survive a restart.

A deployment is identified by its fingerprint (strategies, starting allocations, deployment
time, costs): a restarted market with the same data and settings finds its changes again, while
different data starts a new deployment. Changes are append-only. Methods block; async callers go
through :meth:`SqlStore.run`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from market.fleet.state import ArbMission, Cause, FleetChange
from qtmesh.base.storage import SqlStore, create_engine

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


def _change(row: Any) -> FleetChange:
    mission = ArbMission(**row.mission) if row.mission else None
    return FleetChange(
        sequence=row.sequence,
        time=row.time,
        cause=Cause(row.action_key, row.action_id, row.plan_sequence),
        allocations=row.allocations,
        mission=mission,
        detail=row.detail,
    )


class FleetStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(create_engine(url), metadata)

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
            )
            return [_change(row) for row in rows]

    def change_of_action(self, action_key: str) -> FleetChange | None:
        with self.engine.connect() as c:
            row = c.execute(changes.select().where(changes.c.action_key == action_key)).first()
        return _change(row) if row is not None else None

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
