"""The officers' policy log on SQLite and PostgreSQL: the last change is the policy, an action key
applies once even after reopening, and a rejected change records nothing."""

from __future__ import annotations

import pytest

from agents.policy_log import OwnedPolicy, PolicyLog
from qtmesh.base.contract import NOT_APPLIED, Execution, ExecutionState
from qtmesh.base.errors import InvalidArgument


def owned(url: str) -> OwnedPolicy[dict]:
    return OwnedPolicy(
        PolicyLog.open(url, name="test-agent"),
        initial={"level": 1},
        encode=dict,
        decode=dict,
        wall_clock=lambda: 42,
    )


def raise_to(level: int):
    def update(policy: dict) -> tuple[dict, str]:
        if level < 0:
            raise InvalidArgument("level", "must not be negative")
        return {"level": level}, f"level {policy['level']} -> {level}"

    return update


async def test_changes_apply_once_per_key_and_survive_reopening(database_url: str):
    policy = owned(database_url)
    assert await policy.load() == {"level": 1}
    first = await policy.change(
        raise_to(2), action_key="plan-1/a", action_id="a", plan_sequence=1, market_time=7
    )
    assert first.applied
    assert first.detail == "level 1 -> 2"
    again = await policy.change(raise_to(3), action_key="plan-1/a")
    assert not again.applied
    assert again.detail == "already applied as change 1: level 1 -> 2"
    assert policy.value == {"level": 2}
    operator = await policy.change(raise_to(4), action_key=None)
    assert operator.applied
    policy.log.close()

    reopened = owned(database_url)
    assert await reopened.load() == {"level": 4}
    assert not (await reopened.change(raise_to(9), action_key="plan-1/a")).applied
    assert await reopened.execution("plan-1/a") == Execution(ExecutionState.APPLIED, "level 1 -> 2")
    assert await reopened.execution("plan-2/a") == NOT_APPLIED
    history = await reopened.log.run(reopened.log.history_now, 10)
    assert [c.detail for c in history] == ["level 2 -> 4", "level 1 -> 2"]
    assert history[1].market_time == 7
    assert history[1].plan_sequence == 1
    assert history[1].time == 42
    assert history[0].action_key is None
    reopened.log.close()


async def test_a_rejected_change_records_nothing(database_url: str):
    policy = owned(database_url)
    await policy.load()
    with pytest.raises(InvalidArgument):
        await policy.change(raise_to(-1), action_key="k")
    assert policy.value == {"level": 1}
    assert await policy.log.run(policy.log.latest_now) is None
    # The key was not used up: the same key may carry a valid change later.
    assert (await policy.change(raise_to(5), action_key="k")).applied
    policy.log.close()


async def test_a_change_that_changes_nothing_is_not_recorded(database_url: str):
    policy = owned(database_url)
    await policy.load()
    result = await policy.change(lambda value: (value, "already at level 1"), action_key="k1")
    assert result.applied
    assert result.detail == "already at level 1"
    assert await policy.log.run(policy.log.latest_now) is None
    policy.log.close()
