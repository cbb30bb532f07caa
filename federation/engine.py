"""The federation engine: one planning cycle after another, each stored, published, executed.

A cycle asks every agent (fan-out), builds the plan (consensus and conflicts), appends it to the
history and publishes it; executing it then records and publishes every status change. The
clock and the agents are injected, so the whole loop runs against fakes in tests.

Every write is one unit with its publication (and, for a plan, the start of its execution),
run as a task of its own: a caller cancelled while the write is in flight (on PostgreSQL it runs
in a thread, and may commit after the caller gave up) does not leave a stored event unpublished,
which subscribers would never receive.

Every cycle's context tells the agents what has been done: the hint ``completed/<action type>``
(for example ``completed/run_evolution``) holds the market time, in Unix nanoseconds, of the
latest completion of an action of that type since the federation started. Hints a GeneratePlan
caller gives take precedence.

The clock: a plan's as_of_time, the windows its actions must start in and the age of the data
its recommendations rest on are all market time, from ``market_clock``. Without one (or while
the market has never been reached) the wall clock stands in, and the windows' messages say
"wall clock".

Outcomes: what an owner returns beside its detail when it completes an action is recorded on
the action (``Action.outcome``, in the plan's stored state, which GetPlan and ListPlans read) and
carried by the COMPLETED status update the hub publishes. The wire's ActionStatusUpdate has no
field for it yet, so a gRPC subscriber reads it from the plan once it sees the completion.

Leadership: several federations may share one history (PostgreSQL), one of them the leader
(federation/lease.py). Only the leader plans, executes and writes; a follower (``leading``
False) answers GeneratePlan and ReportActionStatus UNAVAILABLE, which a client's retry sends to
another replica, and publishes the history's events as the leader stores them
(:meth:`Federation.publish_stored`), so its subscribers see every event once, in order. A
follower that becomes the leader (:meth:`Federation.take_over`) publishes the rest of the
history, reads the completion hints back from the store and resumes what the old leader left
executing, which settles each action with its owner by idempotency key, so none runs twice.

Observation: an :class:`Observer` hears of every cycle (around it, then the plan it made and
how long it took) and of every status change, as they happen; the service turns them into
metrics and each cycle into a trace. Executions start inside their cycle, so the calls they
make belong to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from federation.config import FederationConfig
from federation.execution import execute_plan
from federation.fanout import ask_all
from federation.plan import Event, Plan, StatusUpdate, build_plan
from qtmesh.base.contract import Action, ActionStatus, ActionType, Agent, AgentContext
from qtmesh.base.errors import FailedPrecondition, InvalidArgument, MeshError, Unavailable
from qtmesh.base.hub import Hub

if TYPE_CHECKING:
    # The store is an adapter (its records are protobuf); the engine only calls it.
    from federation.store import PlanStore

_log = structlog.get_logger("federation")
_T = TypeVar("_T")
# Statuses after which an action never changes again.
FINAL = (ActionStatus.COMPLETED, ActionStatus.FAILED, ActionStatus.BLOCKED, ActionStatus.EXPIRED)
INTERRUPTED = "interrupted by shutdown"
COMPLETED_HINT = "completed/"

# Statuses an outside executor may report (the federation's own executor sets the others too).
REPORTABLE = (
    ActionStatus.EXECUTING,
    ActionStatus.COMPLETED,
    ActionStatus.FAILED,
    ActionStatus.BLOCKED,
)

# (clock time, market position) of the replay, or None when the market is not reachable.
MarketClock = Callable[[], tuple[int, int] | None]
# Reads the market's clock now, so the next MarketClock answer is no older than the market.
SyncClock = Callable[[], Awaitable[None]]


class Observer:
    """What the engine tells of its work as it happens. This one listens to nothing; the
    service's counts and traces (module docstring)."""

    def cycle(self) -> contextlib.AbstractContextManager[object]:
        """The scope of one planning cycle, the execution it starts included."""
        return contextlib.nullcontext()

    def planned(self, plan: Plan, seconds: float) -> None:
        """A cycle published ``plan`` after ``seconds``."""

    def changed(self, update: StatusUpdate) -> None:
        """An action's status changed (stored and published)."""


class Federation:
    """Plans with ``agents``, executes through ``owners`` (service name -> Agent).

    ``market_clock`` gives (as_of_time, market_position) for the agents' context and the
    actions' windows; without it the wall clock is the planning time (module docstring).
    ``sync_clock``, when given, is awaited before each cycle reads the clock: a clock followed
    from a stream lags when the market moves faster than the stream (a replay advancing hours at
    once), and a plan must be planned at the market's time, not the stream's. ``observer``
    hears of every cycle and status change.
    """

    def __init__(
        self,
        *,
        config: FederationConfig,
        agents: Mapping[str, Agent],
        owners: Mapping[str, Agent],
        store: PlanStore,
        wall_clock: Callable[[], int] = time.time_ns,
        market_clock: MarketClock | None = None,
        sync_clock: SyncClock | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        self.observer = observer or Observer()
        self.agents = dict(agents)
        self.owners = dict(owners)
        self.store = store
        self.hub: Hub[Event] = Hub(queue_size=config.subscriber_queue)
        self._wall_clock = wall_clock
        self._market_clock = market_clock
        self._sync_clock = sync_clock
        self._executions: set[asyncio.Task[None]] = set()
        self._writes: set[asyncio.Task[Any]] = set()
        # One bound for every plan: plans of consecutive cycles may execute at the same time.
        self._slots = asyncio.Semaphore(config.max_concurrent_actions)
        # (plan sequence, action id) -> attempts of actions an execution has yet to finish, so a
        # shutdown can record those it interrupts.
        self._unfinished: dict[tuple[int, str], int] = {}
        # Market time of the latest completion per action type, for the agents (module docstring).
        self._completed: dict[ActionType, int] = {}
        # Whether this federation writes the history (Leadership, in the module docstring), and
        # who does when it does not.
        self.leading = True
        self.leader: Callable[[], str] = lambda: "this replica"
        self.published = 0  # the last stored event a follower published
        self._write = asyncio.Lock()  # keeps publication in sequence order

    def _check_leading(self) -> None:
        if not self.leading:
            leader = self.leader()
            raise Unavailable(
                "this federation replica follows the leader and only reads the history; "
                f"the leader is {leader}",
                metadata={"leader": leader},
            )

    async def generate_plan(
        self, *, hints: Mapping[str, str] | None = None, execute: bool = False
    ) -> Plan:
        """Runs one cycle now; with ``execute`` its actions run in the background."""
        self._check_leading()
        for key, value in (hints or {}).items():
            if not key or len(key) > 128 or len(value) > 1024:
                raise InvalidArgument(f"hints[{key}]", "keys of 1-128 and values up to 1024 chars")
        with self.observer.cycle():
            started = time.perf_counter()
            plan = await self._cycle(hints, execute)
            self.observer.planned(plan, time.perf_counter() - started)
            _log.info("plan", sequence=plan.sequence, summary=plan.summary)
        return plan

    async def _cycle(self, hints: Mapping[str, str] | None, execute: bool) -> Plan:
        if self._sync_clock is not None:
            try:
                await asyncio.wait_for(self._sync_clock(), self.config.agent_timeout_seconds)
            except (MeshError, TimeoutError) as exc:
                # The streamed clock stands in: a market that is slow to answer costs freshness.
                _log.warning("could not read the market's clock", error=str(exc))
        as_of, position = self._clock()
        done = {
            f"{COMPLETED_HINT}{kind.name.lower()}": str(t) for kind, t in self._completed.items()
        }
        context = AgentContext(
            cycle_id=uuid.uuid4().hex,
            as_of_time=as_of,
            market_position=position,
            hints={**done, **(hints or {})},
        )
        answers = await ask_all(
            self.agents,
            context,
            agent_timeout=self.config.agent_timeout_seconds,
            budget=self.config.cycle_deadline_seconds,
            reserve=self.config.deadline_reserve_seconds,
            attempts=self.config.agent_attempts,
            backoff=self.config.retry_backoff_seconds,
        )
        draft = build_plan(
            answers,
            plan_id=f"gap-{context.cycle_id[:16]}",
            sequence=0,  # the history assigns it
            now=self._wall_clock(),
            context=context,
            min_consensus_for_critical=self.config.min_consensus_for_critical,
            owners=self.config.owner_by_type,
            windows=self.config.window_by_priority,
            max_age=self.config.max_recommendation_age,
            max_actions=self.config.max_plan_actions,
        )
        return await self._unit(self._append_plan(draft, execute))

    async def _append_plan(self, draft: Plan, execute: bool) -> Plan:
        async with self._write:
            plan = await self.store.run_short(
                functools.partial(self.store.append_plan, draft, executing=execute)
            )
            self.hub.publish(Event(plan.sequence, plan=plan))
            if execute:
                self._start_execution(plan)
        return plan

    async def _unit(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Runs ``work`` to its end even if the caller is cancelled (see the module docstring)."""
        task = asyncio.ensure_future(work)
        self._writes.add(task)
        task.add_done_callback(self._written)
        return await asyncio.shield(task)

    def _written(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        error = None if task.cancelled() else task.exception()
        # A refusal (a MeshError) is the caller's answer; anything else may have no caller left
        # to see it, so this is its trace.
        if error is not None and not isinstance(error, MeshError):
            _log.warning("write failed", error=repr(error))

    async def execute(self, plan: Plan) -> dict[str, ActionStatus]:
        """Executes a stored plan's pending actions, recording each status change."""

        async def on_status(
            action: Action,
            status: ActionStatus,
            detail: str,
            tried: int,
            outcome: Mapping[str, str],
        ) -> None:
            await self.record_status(plan.sequence, action.id, status, detail, tried, outcome)

        for action in plan.actions:
            if action.status in (ActionStatus.PENDING, ActionStatus.EXECUTING):
                self._unfinished[(plan.sequence, action.id)] = action.attempts
        final = await execute_plan(
            plan,
            owners=self.owners,
            on_status=on_status,
            slots=self._slots,
            timeout=self.config.action_timeout_seconds,
            timeouts=self.config.timeout_by_type,
            attempts=self.config.action_attempts,
            backoff=self.config.retry_backoff_seconds,
            clock=self._now,
            answer_timeout=self.config.owner_answer_timeout_seconds,
        )
        await self._unit(self.store.run_short(self.store.finish_execution, plan.sequence))
        return final

    async def publish_stored(self) -> int:
        """A follower's hub: publishes the events stored since the last it published, in order;
        how many. The leader publishes what it writes instead."""
        count = 0
        while events := await self.store.run(
            self.store.events_after, self.published, self.config.history_page
        ):
            for event in events:
                # No await in between: a cancelled follower never publishes an event twice.
                self.hub.publish(event)
                self.published = event.sequence
            count += len(events)
        return count

    async def take_over(self) -> int:
        """Becomes the leader of a history others wrote: publishes what is stored and not yet
        published, reads the completion hints back, and resumes the executions the previous
        leader left unfinished (:meth:`resume_executions`); how many it resumed."""
        await self.publish_stored()
        self._completed = await self.store.run(self.store.completions)
        self.leading = True
        return await self.resume_executions()

    async def resume_executions(self) -> int:
        """Resumes the executions a previous federation left unfinished (it crashed; a shutdown
        finishes them): each action it left EXECUTING is settled with its owner
        (federation/execution.py, "Resuming"), each it left PENDING runs as it would have.
        Returns how many plans it resumed; they run in the background."""
        plans = await self.store.run(self.store.unfinished_executions)
        for plan in plans:
            unfinished = [
                a.id
                for a in plan.actions
                if a.status in (ActionStatus.PENDING, ActionStatus.EXECUTING)
            ]
            _log.warning(
                "resuming an interrupted execution", sequence=plan.sequence, actions=unfinished
            )
            self._start_execution(plan)
        return len(plans)

    async def record_status(
        self,
        plan_sequence: int,
        action_id: str,
        status: ActionStatus,
        detail: str,
        attempts: int,
        outcome: Mapping[str, str] | None = None,
    ) -> StatusUpdate:
        return await self._unit(
            self._append_status(plan_sequence, action_id, status, detail, attempts, outcome)
        )

    async def _append_status(
        self,
        plan_sequence: int,
        action_id: str,
        status: ActionStatus,
        detail: str,
        attempts: int,
        outcome: Mapping[str, str] | None,
    ) -> StatusUpdate:
        async with self._write:
            return await self._write_status(
                plan_sequence, action_id, status, detail, attempts, outcome
            )

    async def _write_status(
        self,
        plan_sequence: int,
        action_id: str,
        status: ActionStatus,
        detail: str,
        attempts: int,
        outcome: Mapping[str, str] | None = None,
    ) -> StatusUpdate:
        """Stores and publishes a status change; the caller holds the write lock."""
        at = self._clock()[0] if status is ActionStatus.COMPLETED else None
        update = await self.store.run_short(
            self.store.append_status,
            plan_sequence,
            action_id,
            status,
            detail,
            attempts,
            self._wall_clock(),
            outcome,
            at,
        )
        self.hub.publish(Event(update.sequence, update=update))
        self.observer.changed(update)
        if at is not None:
            kind = update.action_type
            self._completed[kind] = max(at, self._completed.get(kind, at))
        key = (plan_sequence, action_id)
        if status in FINAL:
            self._unfinished.pop(key, None)
        elif key in self._unfinished:
            self._unfinished[key] = attempts
        return update

    async def _append_report(
        self, plan_sequence: int, action_id: str, status: ActionStatus, detail: str
    ) -> StatusUpdate:
        """Checks an outside report against the action's state and records it, under the write
        lock, so the state cannot change between the check and the write. A repeat of the
        current status records nothing and returns the update that set it."""
        async with self._write:
            plan = await self.store.run(self.store.get_plan, plan_sequence)
            try:
                action = plan.action(action_id)
            except KeyError:
                raise InvalidArgument(
                    "action_id", f"plan {plan_sequence} has no action {action_id!r}"
                ) from None
            if action.status in (ActionStatus.SUPERSEDED, ActionStatus.HELD):
                raise FailedPrecondition(
                    f"action {action_id} of plan {plan_sequence} is "
                    f"{action.status.name.lower()}; it does not run"
                )
            if action.status is status:
                latest = await self.store.run(self.store.latest_update, plan_sequence, action_id)
                if latest is not None and latest.status is status:
                    return latest
            if action.status in FINAL:
                raise FailedPrecondition(
                    f"action {action_id} of plan {plan_sequence} is already "
                    f"{action.status.name.lower()}; its status no longer changes"
                )
            return await self._write_status(
                plan_sequence, action_id, status, detail, action.attempts
            )

    async def report_status(
        self, plan_sequence: int, action_id: str, status: ActionStatus, detail: str
    ) -> StatusUpdate:
        """An outside executor's report (ReportActionStatus)."""
        self._check_leading()
        if status not in REPORTABLE:
            allowed = ", ".join(s.name for s in REPORTABLE)
            raise InvalidArgument(
                "status", f"{status.name} cannot be reported (allowed: {allowed})"
            )
        return await self._unit(self._append_report(plan_sequence, action_id, status, detail))

    async def run_cycles(self) -> None:
        """Plans every ``gap_update_interval_seconds`` until cancelled; a failed cycle is logged
        and the next one runs on time."""
        interval = self.config.gap_update_interval_seconds
        while True:
            started = time.monotonic()
            try:
                await self.generate_plan(execute=self.config.execute_plans)
            except Exception:
                _log.exception("planning cycle failed")
            await asyncio.sleep(max(interval - (time.monotonic() - started), 0.0))

    def _start_execution(self, plan: Plan) -> None:
        task = asyncio.ensure_future(self._execute_logged(plan))
        self._executions.add(task)
        task.add_done_callback(self._executions.discard)

    async def _execute_logged(self, plan: Plan) -> None:
        try:
            final = await self.execute(plan)
            _log.info(
                "plan executed",
                sequence=plan.sequence,
                statuses={k: v.name for k, v in final.items()},
            )
        except Exception:
            _log.exception("plan execution failed", sequence=plan.sequence)

    async def wait_for_executions(self, timeout: float | None = None) -> bool:
        """Waits until no execution runs (executions started meanwhile included), at most
        ``timeout`` seconds; True if none is left."""
        try:
            async with asyncio.timeout(timeout):
                while self._executions:
                    await asyncio.wait(list(self._executions))
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Lets executions finish within ``shutdown_grace_seconds``, then cancels the rest and
        records each action they left unfinished as FAILED, so no action stays EXECUTING or
        PENDING in the history forever. A follower executes nothing and writes nothing."""
        if not self.leading:
            self.hub.close_all()
            return
        if not await self.wait_for_executions(self.config.shutdown_grace_seconds):
            for task in list(self._executions):
                task.cancel()
            await asyncio.gather(*self._executions, return_exceptions=True)
        # Status writes in flight land before the interrupted actions are recorded after them.
        await asyncio.gather(*self._writes, return_exceptions=True)
        interrupted = sorted(self._unfinished.items())
        failed = set()
        for (plan_sequence, action_id), attempts in interrupted:
            try:
                await self.record_status(
                    plan_sequence, action_id, ActionStatus.FAILED, INTERRUPTED, attempts
                )
            except Exception:
                failed.add(plan_sequence)
                _log.exception("could not record an interrupted action", action=action_id)
        # A plan whose actions are all recorded is finished; the others the next start resumes.
        for plan_sequence in sorted({p for (p, _), _ in interrupted} - failed):
            try:
                await self.store.run_short(self.store.finish_execution, plan_sequence)
            except Exception:
                _log.exception("could not record an execution's end", sequence=plan_sequence)
        self._unfinished.clear()
        self.hub.close_all()

    def _clock(self) -> tuple[int, int]:
        """(as_of_time, market position): the market's clock, else the wall clock and 0."""
        latest = self._market_clock() if self._market_clock is not None else None
        # A market that cannot be reached costs the context its replay clock, not the plan.
        return latest if latest is not None else (self._wall_clock(), 0)

    def _now(self) -> tuple[int, str]:
        """The time windows are checked against, and which clock it is."""
        latest = self._market_clock() if self._market_clock is not None else None
        if latest is None:
            return self._wall_clock(), "wall clock"
        return latest[0], "market clock"
