"""Executing a plan: ExecuteAction on each action's owner, dependencies first, bounded.

* Only PENDING actions run; at most ``max_concurrent`` at once, started in priority order.
* An action starts once every dependency has COMPLETED; if one did not (it failed, was
  blocked, held or superseded), the action is BLOCKED naming it.
* Each attempt has ``timeout``; UNAVAILABLE and timeouts are retried up to ``attempts`` times
  with doubling backoff. Every attempt carries the same idempotency key, so an owner applies
  an action once however often it is asked.
* Status moves PENDING -> EXECUTING -> COMPLETED or FAILED (or BLOCKED); each change is
  reported through ``on_status`` before the next one happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from agents.contract import Action, ActionStatus, Agent
from agents.service import AgentClient
from federation.plan import Plan
from qtmesh.errors import DeadlineExceeded, MeshError, Unavailable

OnStatus = Callable[[Action, ActionStatus, str, int], Awaitable[None]]
_FINAL = (ActionStatus.COMPLETED, ActionStatus.FAILED, ActionStatus.BLOCKED)


async def execute_plan(
    plan: Plan,
    *,
    owners: Mapping[str, Agent],
    on_status: OnStatus,
    max_concurrent: int,
    timeout: float,
    attempts: int,
    backoff: float,
) -> dict[str, ActionStatus]:
    """Runs the plan's pending actions; returns every action's final status."""
    status = {a.id: a.status for a in plan.actions}
    done = {a.id: asyncio.Event() for a in plan.actions}
    for a in plan.actions:
        if a.status is not ActionStatus.PENDING:
            done[a.id].set()
    slots = asyncio.Semaphore(max_concurrent)

    async def settle(action: Action, final: ActionStatus, detail: str, tried: int) -> None:
        status[action.id] = final
        await on_status(action, final, detail, tried)
        done[action.id].set()

    async def run(action: Action) -> None:
        for dependency in action.depends_on:
            await done[dependency].wait()
        unmet = [d for d in action.depends_on if status[d] is not ActionStatus.COMPLETED]
        if unmet:
            reasons = ", ".join(f"{d} is {status[d].name.lower()}" for d in unmet)
            await settle(action, ActionStatus.BLOCKED, f"dependency not completed: {reasons}", 0)
            return
        owner = owners.get(action.owner)
        if owner is None:
            await settle(
                action,
                ActionStatus.FAILED,
                f"no executor for {action.action_type.name} (owner {action.owner or 'unset'!r})",
                0,
            )
            return
        async with slots:
            tried = 0
            await on_status(action, ActionStatus.EXECUTING, f"sent to {action.owner}", 0)
            status[action.id] = ActionStatus.EXECUTING
            while True:
                tried += 1
                try:
                    async with asyncio.timeout(timeout):
                        if isinstance(owner, AgentClient):
                            result = await owner.execute(
                                action, plan_sequence=plan.sequence, timeout=timeout
                            )
                        else:
                            result = await owner.execute(action, plan_sequence=plan.sequence)
                except (TimeoutError, DeadlineExceeded, Unavailable) as exc:
                    if tried < attempts:
                        await asyncio.sleep(backoff * 2 ** (tried - 1))
                        continue
                    reason = "timed out" if not isinstance(exc, Unavailable) else exc.message
                    await settle(
                        action, ActionStatus.FAILED, f"after {tried} attempts: {reason}", tried
                    )
                    return
                except MeshError as exc:
                    await settle(action, ActionStatus.FAILED, f"{exc.code}: {exc.message}", tried)
                    return
                except Exception as exc:  # an in-process owner's bug fails its action only
                    await settle(action, ActionStatus.FAILED, f"{type(exc).__name__}: {exc}", tried)
                    return
                detail = result.detail if result.applied else f"already applied ({result.detail})"
                await settle(action, ActionStatus.COMPLETED, detail, tried)
                return

    pending = sorted(
        (a for a in plan.actions if a.status is ActionStatus.PENDING),
        key=lambda a: (-a.priority, -a.confidence, a.id),
    )
    await asyncio.gather(*(run(a) for a in pending))
    assert all(status[a.id] in _FINAL or a.status is not ActionStatus.PENDING for a in plan.actions)
    return status
