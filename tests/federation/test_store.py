"""The plan history on both backends (SQLite and PostgreSQL run the same tests)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from federation import _records as records
from federation import store as store_module
from federation.plan import AgentAnswer, AgentReport, CallOutcome, build_plan
from federation.store import PlanStore
from qtmesh.base import contract as c
from qtmesh.base.errors import NotFound
from qtmesh.base.storage import create_engine

OWNERS = {c.ActionType.RUN_EVOLUTION: "sesa", c.ActionType.HALT_TRADING: "risk"}


def draft(now: int, *recommendations: c.Recommendation):
    answer = AgentAnswer(
        AgentReport("a", CallOutcome.OK, 0.0, 1, len(recommendations)), recommendations
    )
    return build_plan(
        [answer],
        plan_id=f"gap-{now}",
        sequence=0,
        now=now,
        context=c.AgentContext(cycle_id=str(now)),
        min_consensus_for_critical=0.8,
        owners=OWNERS,
    )


def rec(parameters: c.ActionParameters, priority: c.Priority) -> c.Recommendation:
    return c.Recommendation(
        id="r", priority=priority, target="t", parameters=parameters, confidence=0.7, rationale="r"
    )


EVOLVE = rec(c.RunEvolution(), c.Priority.LOW)
HALT = rec(c.HaltTrading(), c.Priority.CRITICAL)


def test_plans_and_updates_share_one_increasing_sequence(database_url):
    store = PlanStore(create_engine(database_url))
    first = store.append_plan(draft(100, EVOLVE))
    assert first.sequence == 1
    update = store.append_status(first.sequence, "a1", c.ActionStatus.EXECUTING, "sent", 0, 101)
    second = store.append_plan(draft(200, HALT))
    assert (first.sequence, update.sequence, second.sequence) == (1, 2, 3)
    events = store.events_after(0, 10)
    assert [e.sequence for e in events] == [1, 2, 3]
    assert events[0].plan == first
    assert events[1].update == update
    assert store.events_after(2, 10)[0].plan == second
    assert store.last_sequence() == 3
    store.close()


def test_a_plan_keeps_its_current_state_and_survives_a_restart(database_url):
    store = PlanStore(create_engine(database_url))
    plan = store.append_plan(draft(100, EVOLVE))
    store.append_status(plan.sequence, "a1", c.ActionStatus.EXECUTING, "sent", 0, 101)
    store.append_status(plan.sequence, "a1", c.ActionStatus.COMPLETED, "done", 1, 102)
    store.close()
    reopened = PlanStore(create_engine(database_url))
    current = reopened.get_plan(plan.sequence)
    assert current.action("a1").status is c.ActionStatus.COMPLETED
    assert current.action("a1").status_detail == "done"
    assert current.action("a1").attempts == 1
    # The log still holds the plan as it was created.
    assert reopened.events_after(0, 1)[0].plan.action("a1").status is c.ActionStatus.PENDING
    with pytest.raises(NotFound):
        reopened.get_plan(99)
    with pytest.raises(NotFound):
        reopened.append_status(plan.sequence, "a9", c.ActionStatus.FAILED, "", 0, 103)
    reopened.close()


def test_listing_pages_and_filters(database_url):
    store = PlanStore(create_engine(database_url))
    plans = [
        store.append_plan(draft(t, HALT if t % 300 == 0 else EVOLVE)) for t in range(100, 1100, 100)
    ]
    listed = store.list_plans(
        after_sequence=0, limit=4, start_time=None, end_time=None, min_priority=None
    )
    assert [p.sequence for p in listed] == [p.sequence for p in plans[:4]]
    rest = store.list_plans(
        after_sequence=listed[-1].sequence,
        limit=100,
        start_time=None,
        end_time=None,
        min_priority=None,
    )
    assert [p.sequence for p in rest] == [p.sequence for p in plans[4:]]
    window = store.list_plans(
        after_sequence=0, limit=100, start_time=300, end_time=600, min_priority=None
    )
    assert [p.create_time for p in window] == [300, 400, 500]
    critical = store.list_plans(
        after_sequence=0,
        limit=100,
        start_time=None,
        end_time=None,
        min_priority=c.Priority.CRITICAL,
    )
    assert [p.create_time for p in critical] == [300, 600, 900]
    store.close()


def test_an_outcome_is_kept_on_the_action_across_a_restart(database_url):
    store = PlanStore(create_engine(database_url))
    plan = store.append_plan(draft(100, EVOLVE))
    outcome = {"evolution_id": "evo-7", "candidates": "2"}
    update = store.append_status(
        plan.sequence, "a1", c.ActionStatus.COMPLETED, "done", 1, 102, outcome
    )
    assert dict(update.outcome) == outcome
    store.close()
    reopened = PlanStore(create_engine(database_url))
    assert dict(reopened.get_plan(plan.sequence).action("a1").outcome) == outcome
    (listed,) = reopened.list_plans(
        after_sequence=0, limit=10, start_time=None, end_time=None, min_priority=None
    )
    assert dict(listed.action("a1").outcome) == outcome
    reopened.close()


def test_a_history_from_before_migrations_upgrades_in_place(database_url):
    # The schema and the rows as the release before migrations wrote them: its tables, made by
    # create_all, and no version table.
    engine = create_engine(database_url)
    store_module.METADATA.create_all(engine, tables=[store_module.events, store_module.plan_states])
    plan = draft(1_000, EVOLVE)
    with engine.begin() as connection:
        connection.execute(
            store_module.events.insert().values(
                kind=store_module.PLAN_EVENT,
                plan_sequence=0,
                create_time=plan.create_time,
                max_priority=int(plan.max_priority),
                payload=records.encode_plan(plan),
            )
        )
    assert store_module.MIGRATIONS.revision(engine) is None
    store = PlanStore(engine)
    try:
        assert store_module.MIGRATIONS.revision(engine) == "0003"
        assert store.get_plan(1).id == plan.id
        # What the upgrade added works: the executions of plans.
        executed = store.append_plan(draft(2_000, HALT), executing=True)
        assert [p.sequence for p in store.unfinished_executions()] == [executed.sequence]
        # Opening it again finds it up to date.
        PlanStore(engine)
        assert store_module.MIGRATIONS.revision(engine) == "0003"
    finally:
        store.close()


def test_the_migrations_build_exactly_the_tables_the_store_declares(database_url):
    store = PlanStore(create_engine(database_url))
    try:
        with store.engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": store_module.MIGRATIONS.version_table}
            )
            differences = compare_metadata(context, store_module.METADATA)
    finally:
        store.close()
    assert differences == []
