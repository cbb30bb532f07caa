"""The fleet store on SQLite and PostgreSQL: deployments, append-only changes, one per key."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from market.fleet import ArbMission, Cause, FleetChange, FleetStore


def change(sequence: int, key: str, *, mission: ArbMission | None = None) -> FleetChange:
    return FleetChange(
        sequence=sequence,
        time=1_000 + sequence,
        cause=Cause(key, f"action-{sequence}", 7),
        allocations={"Tech": 0.3 + sequence / 1e6, "Energy": 0.1 / 3},
        mission=mission,
        detail=f"change {sequence}",
    )


def test_changes_come_back_exactly_per_deployment(database_url):
    store = FleetStore(database_url)
    try:
        assert store.open_deployment("fleet-a", 100, 1) == []
        mission = ArbMission(
            id="arb-2",
            long_sector="Tech",
            short_sector="Energy",
            allocation=0.1,
            open_time=1_002,
            close_time=9_999,
            action_id="action-2",
        )
        written = [change(1, "k1"), change(2, "k2", mission=mission)]
        for c in written:
            store.append("fleet-a", c, 5)
        assert store.open_deployment("fleet-a", 100, 2) == written
        assert store.open_deployment("fleet-b", 200, 3) == []
        assert store.change_of_action("k2") == written[1]
        assert store.change_of_action("k3") is None
        # One change per idempotency key, even in another deployment.
        with pytest.raises(sa.exc.IntegrityError):
            store.append("fleet-b", change(1, "k1"), 6)
        assert store.open_deployment("fleet-b", 200, 3) == []
    finally:
        store.close()
