"""Executing a plan: ExecuteAction on each action's owner, critical first, dependencies first,
inside each action's window, bounded.

* Only PENDING actions run, started in priority order; at most as many at once as ``slots``
  allows. The federation passes one semaphore for all its plans, so the bound holds across
  plans executing at the same time.
* Critical actions run before anything else in the plan: a non-critical action starts only once
  every critical action of the plan has settled (completed, failed, blocked or expired). The
  dependencies of a critical action, whatever their priority, run with the critical ones (else
  the two would wait for each other).
* An action starts once every dependency has COMPLETED; if one did not (it failed, was
  blocked, expired, held or superseded, or is not in the plan), the action is BLOCKED naming it.
  Actions on (or behind) a dependency cycle are BLOCKED at once: they could never start.
* Windows: an action with an ``execute_by_time`` that has not started when ``clock`` (market
  time) passes it is EXPIRED with the two times, and never runs late. It is checked when the
  action would start: before it waits for a slot and again once it has one. Starting is what
  counts; an action that started in time finishes, retries included.
* Each attempt has the timeout of its action type (``timeouts``, else ``timeout``); UNAVAILABLE
  and timeouts are retried up to ``attempts`` times with doubling backoff. Every attempt
  carries the same idempotency key, so an owner applies an action once however often it is
  asked. When every attempt timed out or lost its connection, the owner may have applied it
  all the same (it died after its change, before its answer): it is asked (GetExecution), and
  the action completes if it did, and fails otherwise.
* Status moves PENDING -> EXECUTING -> COMPLETED or FAILED (or BLOCKED or EXPIRED); each change
  is reported through ``on_status`` before the next one happens, a completion with the outcome
  the owner returned. If ``on_status`` raises, the other actions are cancelled and the error
  propagates: nothing keeps running untracked.
* Resuming: an action already EXECUTING in the plan was sent by a federation that stopped
  before it heard back (a crash). It started in time, so it finishes whatever its window says,
  first and without waiting for anything: its owner is asked whether it applied it
  (GetExecution, by idempotency key) and, if it did, it is COMPLETED with what the owner
  answered then; otherwise it is sent again under its key, which the owner applies at most once.
  Its attempts go on counting from those recorded.
* Asking: an owner that cannot be reached is asked again (backing off up to 30 s), for at most
  ``answer_timeout`` seconds; meanwhile the action stays EXECUTING, its fate unknown, rather
  than be settled on a guess. An owner that did not answer by then fails the action, saying so.
  An owner without GetExecution cannot say, and is not asked. A resumed action its owner still
  runs is sent again (the call joins the run); one whose attempts all timed out while its owner
  still runs it fails, saying so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping

from federation.plan import Plan
from qtmesh.base.bars import format_time
from qtmesh.base.contract import (
    Action,
    ActionStatus,
    ActionType,
    Agent,
    Execution,
    ExecutionState,
    Priority,
    RecordsExecutions,
    takes_timeout,
)
from qtmesh.base.errors import DeadlineExceeded, MeshError, Unavailable

# (action, status, detail, attempts, outcome): outcome is the owner's, set on COMPLETED only.
OnStatus = Callable[[Action, ActionStatus, str, int, Mapping[str, str]], Awaitable[None]]
# The time windows are checked against and its name for messages, e.g. "market clock".
Clock = Callable[[], tuple[int, str]]
_FINAL = (ActionStatus.COMPLETED, ActionStatus.FAILED, ActionStatus.BLOCKED, ActionStatus.EXPIRED)
_NO_OUTCOME: Mapping[str, str] = {}
# Bounds of the pause between two questions to an owner that could not be reached.
_MIN_ASK_BACKOFF, _MAX_ASK_BACKOFF = 0.05, 30.0


def wall_clock() -> tuple[int, str]:
    """The clock of windows when no market clock is given."""
    return time.time_ns(), "wall clock"


async def execute_plan(
    plan: Plan,
    *,
    owners: Mapping[str, Agent],
    on_status: OnStatus,
    timeout: float,
    attempts: int,
    backoff: float,
    max_concurrent: int | None = None,
    slots: asyncio.Semaphore | None = None,
    timeouts: Mapping[ActionType, float] | None = None,
    clock: Clock = wall_clock,
    answer_timeout: float = 300.0,
) -> dict[str, ActionStatus]:
    """Runs the plan's pending actions; returns every action's final status.

    Give ``slots`` to share a concurrency bound with other plans, else ``max_concurrent``.
    ``timeouts`` overrides ``timeout`` per action type; ``clock`` is what windows are checked
    against (the federation passes the market's clock); ``answer_timeout`` bounds how long an
    owner is asked about an action whose fate is unknown (module docstring).
    """
    if slots is None:
        if max_concurrent is None:
            raise TypeError("execute_plan needs slots or max_concurrent")
        slots = asyncio.Semaphore(max_concurrent)
    status = {a.id: a.status for a in plan.actions}
    done = {a.id: asyncio.Event() for a in plan.actions}
    resumed = [a for a in plan.actions if a.status is ActionStatus.EXECUTING]
    for a in plan.actions:
        if a.status not in (ActionStatus.PENDING, ActionStatus.EXECUTING):
            done[a.id].set()
    stuck = _unorderable(plan)
    first = _critical_phase(plan)
    limits = timeouts or {}

    async def settle(
        action: Action,
        final: ActionStatus,
        detail: str,
        tried: int,
        outcome: Mapping[str, str] = _NO_OUTCOME,
    ) -> None:
        status[action.id] = final
        await on_status(action, final, detail, tried, outcome)

    async def expired(action: Action) -> bool:
        """Settles the action EXPIRED if its window has passed."""
        if not action.execute_by_time:
            return False
        now, name = clock()
        if now <= action.execute_by_time:
            return False
        await settle(
            action,
            ActionStatus.EXPIRED,
            f"not started by {format_time(action.execute_by_time)}: {name} at {format_time(now)}",
            0,
        )
        return True

    async def run(action: Action) -> None:
        # Set however the action ends (even by an error or cancellation), so no dependent
        # waits for it forever.
        try:
            if action.status is ActionStatus.EXECUTING:
                await resume(action)
            else:
                await attempt(action)
        finally:
            done[action.id].set()

    async def resume(action: Action) -> None:
        owner = owners.get(action.owner)
        if owner is None:
            await settle(
                action, ActionStatus.FAILED, f"no executor any more for {action.owner!r}", 0
            )
            return
        # Asked outside the slots: an owner that is down holds no other action back. One that
        # still runs it (an evolution) is sent it again, and the call joins the run.
        try:
            known = await ask(action, owner)
        except _NoAnswer as silence:
            await settle(action, ActionStatus.FAILED, f"interrupted; {silence}", action.attempts)
            return
        if known is not None and known.state is ExecutionState.APPLIED:
            await settle(
                action,
                ActionStatus.COMPLETED,
                f"applied before the federation restarted: {known.detail}",
                action.attempts,
                known.outcome,
            )
            return
        async with slots:
            lost = await send(action, owner, tried=action.attempts)
        if lost is not None:
            await settle_lost(action, owner, lost)

    async def attempt(action: Action) -> None:
        if action.id in stuck:
            await settle(
                action,
                ActionStatus.BLOCKED,
                f"dependency cycle among {', '.join(sorted(stuck))}",
                0,
            )
            return
        if action.id not in first:
            for critical in first:
                await done[critical].wait()
        for dependency in action.depends_on:
            if dependency in done:
                await done[dependency].wait()
        unmet = [d for d in action.depends_on if status.get(d) is not ActionStatus.COMPLETED]
        if unmet:
            reasons = ", ".join(
                f"{d} is {status[d].name.lower()}" if d in status else f"{d} is not in the plan"
                for d in unmet
            )
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
        if await expired(action):
            return
        async with slots:
            if await expired(action):
                return
            await on_status(
                action, ActionStatus.EXECUTING, f"sent to {action.owner}", 0, _NO_OUTCOME
            )
            status[action.id] = ActionStatus.EXECUTING
            lost = await send(action, owner, tried=0)
        if lost is not None:
            await settle_lost(action, owner, lost)

    async def ask(action: Action, owner: Agent) -> Execution | None:
        """What the owner knows of ``action``, asked until it answers, for at most
        ``answer_timeout`` seconds (raising _NoAnswer then); None when it cannot say (no
        GetExecution). Meanwhile the action stays EXECUTING: its fate is unknown and is not
        settled on a guess."""
        limit = limits.get(action.action_type, timeout)
        delay = max(backoff, _MIN_ASK_BACKOFF)
        try:
            async with asyncio.timeout(answer_timeout):
                while True:
                    try:
                        async with asyncio.timeout(limit):
                            return await _asked(owner, action.idempotency_key)
                    except (TimeoutError, DeadlineExceeded, Unavailable):
                        await asyncio.sleep(delay)
                        delay = min(2 * delay, _MAX_ASK_BACKOFF)
        except TimeoutError:
            raise _NoAnswer(
                f"{action.owner} did not say within {answer_timeout:g} s whether it applied it"
            ) from None

    async def settle_lost(action: Action, owner: Agent, lost: _Lost) -> None:
        """Settles an action whose every attempt timed out or lost its connection: the owner
        may have applied it all the same, so it is asked first."""
        failed = f"after {lost.attempts} attempts: {lost.reason}"
        try:
            known = await ask(action, owner) if isinstance(owner, RecordsExecutions) else None
        except _NoAnswer as silence:
            await settle(action, ActionStatus.FAILED, f"{failed}; {silence}", lost.tried)
            return
        if known is None:
            await settle(action, ActionStatus.FAILED, failed, lost.tried)
        elif known.state is ExecutionState.RUNNING:
            detail = f"{failed}; {action.owner} still runs it"
            await settle(action, ActionStatus.FAILED, detail, lost.tried)
        elif known.state is ExecutionState.APPLIED:
            await settle(
                action,
                ActionStatus.COMPLETED,
                f"applied, its answer lost ({failed}): {known.detail}",
                lost.tried,
                known.outcome,
            )
        else:
            detail = f"{failed}; {action.owner} never applied it"
            await settle(action, ActionStatus.FAILED, detail, lost.tried)

    async def send(action: Action, owner: Agent, *, tried: int) -> _Lost | None:
        """Sends ``action`` until it settles, ``tried`` attempts made before; returns what was
        lost instead when every attempt timed out or lost its connection (settled by the
        caller, once it gave its slot back)."""
        limit = limits.get(action.action_type, timeout)
        first = tried
        while True:
            tried += 1
            try:
                async with asyncio.timeout(limit):
                    if takes_timeout(owner):
                        result = await owner.execute(
                            action, plan_sequence=plan.sequence, timeout=limit
                        )
                    else:
                        result = await owner.execute(action, plan_sequence=plan.sequence)
            except (TimeoutError, DeadlineExceeded, Unavailable) as exc:
                if tried - first < attempts:
                    await asyncio.sleep(backoff * 2 ** (tried - first - 1))
                    continue
                reason = (
                    f"timed out ({limit:g} s each)"
                    if not isinstance(exc, Unavailable)
                    else exc.message
                )
                return _Lost(reason, tried - first, tried)
            except MeshError as exc:
                await settle(action, ActionStatus.FAILED, f"{exc.code}: {exc.message}", tried)
                return None
            except Exception as exc:  # an in-process owner's bug fails its action only
                await settle(action, ActionStatus.FAILED, f"{type(exc).__name__}: {exc}", tried)
                return None
            detail = result.detail if result.applied else f"already applied ({result.detail})"
            await settle(action, ActionStatus.COMPLETED, detail, tried, result.outcome)
            return None

    pending = sorted(
        (a for a in plan.actions if a.status is ActionStatus.PENDING),
        key=lambda a: (-a.priority, -a.confidence, a.id),
    )
    async with asyncio.TaskGroup() as group:
        for action in [*resumed, *pending]:
            group.create_task(run(action))
    assert all(
        status[a.id] in _FINAL or a.status not in (ActionStatus.PENDING, ActionStatus.EXECUTING)
        for a in plan.actions
    )
    return status


@dataclasses.dataclass(frozen=True)
class _Lost:
    """Every attempt timed out or lost its connection: ``reason``, after ``attempts`` (the
    action's ``tried`` in all)."""

    reason: str
    attempts: int
    tried: int


class _NoAnswer(Exception):
    """The owner did not say in time whether it applied an action."""


async def _asked(owner: Agent, key: str) -> Execution | None:
    """The owner's GetExecution answer for ``key``; None when it cannot say (an owner without
    GetExecution, or one that keeps no record). Unavailable and deadlines propagate."""
    if not isinstance(owner, RecordsExecutions):
        return None
    try:
        return await owner.execution(key)
    except (Unavailable, DeadlineExceeded):
        raise
    except MeshError:  # UNIMPLEMENTED (an older owner), FAILED_PRECONDITION (keeps no record)
        return None


def _critical_phase(plan: Plan) -> set[str]:
    """The pending critical actions and, transitively, the pending actions they depend on: the
    ones that run before the rest of the plan."""
    pending = {a.id: a for a in plan.actions if a.status is ActionStatus.PENDING}
    phase: set[str] = set()
    todo = [a.id for a in pending.values() if a.priority is Priority.CRITICAL]
    while todo:
        action_id = todo.pop()
        if action_id in phase:
            continue
        phase.add(action_id)
        todo.extend(d for d in pending[action_id].depends_on if d in pending)
    return phase


def _unorderable(plan: Plan) -> set[str]:
    """Pending actions that can never start: on a dependency cycle or behind one.

    Plans built by ``build_plan`` have none; this guards plans from elsewhere (a stored plan of an
    older version, a test) against waiting forever.
    """
    waiting = {
        a.id: {d for d in a.depends_on if d != a.id}
        for a in plan.actions
        if a.status is ActionStatus.PENDING
    }
    self_loops = {a.id for a in plan.actions if a.id in a.depends_on and a.id in waiting}
    progress = True
    while progress:
        progress = False
        for action_id, dependencies in list(waiting.items()):
            if action_id not in self_loops and not dependencies & waiting.keys():
                del waiting[action_id]
                progress = True
    return set(waiting)
