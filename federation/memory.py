"""What the federation remembers: each executed plan's fleet-changing actions and the fleet's
P&L that followed them, as episodes the memory agent recalls and recommends from.

**Which actions.** Those whose decision the memory agent can turn back into an action
(:mod:`memory.advice`): ADJUST_EXPOSURE (``adjust_exposure factor=<f>``), HALT_TRADING
(``halt_trading``) and SWITCH_MODE (``switch_mode mode=<mode>``), once their owner reports them
COMPLETED. Other action types are not remembered: memory could not recommend them again.

**One episode per sector the action acted on**, in memory's vocabulary, so that the memory
agent, which recalls per market sector, finds it:

* ``sector``: the action's sector; every market sector for one of the portfolio's (an exposure
  change or halt of the whole portfolio acts on each sector) and for a mode switch;
* ``features``: :func:`memory.context.sector_features` of that sector in the market snapshot
  read when the plan was published (the plan's time), plus the plan's ``feature.<name>`` hints:
  exactly what the memory agent computes for a context, so today's context recalls them;
* ``regime``: the plan's ``regime.<sector>`` hint, when it names one;
* ``decision``: :func:`memory.advice.decision_text` of the action's parameters;
* ``outcome``: the return over the window of ``window`` market time after the action took
  effect (from the first bar after the fleet change it made, else after the market time at
  which it completed): the sector's return (``SectorBook.roi`` of GetFleet over that window)
  for a sector's action, the fleet's total return for the portfolio's and for a mode switch;
* ``time``: when the action took effect (market time); ``tags``: ``source=federation``, the
  plan's id and sequence, the action's id, type and source agents, ``fleet_change``,
  ``window_hours`` and the window's ``sector_return``, ``fleet_return`` and
  ``benchmark_return`` (the sector's symbols held equally weighted).

The outcome is the return that followed the decision, not its effect relative to not taking
it: that counterfactual needs what-if accounting the fleet does not report. A halted sector
returns about nothing (less the cost of flattening), so memory never recommends a halt for
its own return; it recommends what made money in similar contexts and names what lost.

**When.** :meth:`PlanOutcomes.follow` follows the federation's own event hub: a published plan
is noted (with one market snapshot, when it has an action to remember), an action's COMPLETED
update starts its window, and every move of the market clock (the federation's
MarketClockWatcher) settles the windows it closed: one GetFleet per settled action, then the
episodes go to a :class:`memory.recorder.Recorder`, which never makes a plan wait for memory.
What is pending lives in this process only: a restart drops the windows still open. Noted
plans and open windows are bounded (:data:`MAX_NOTED`, :data:`MAX_PENDING`; the oldest go
first). A subscriber that falls behind the hub loses the events it missed (logged). Episode
ids are digests of the plan id, action id and sector, so a retried store is recognised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from federation.engine import MarketClock
from federation.plan import Event, Plan, StatusUpdate
from market.fleet import FleetReport
from memory.advice import decision_text
from memory.context import hinted_features, sector_features
from memory.engine import REGIME_HINT
from memory.episodes import NAME, Episode
from memory.recorder import Recorder
from qtmesh.base.bars import Snapshot
from qtmesh.base.contract import (
    Action,
    ActionStatus,
    AdjustExposure,
    HaltTrading,
    SwitchMode,
)
from qtmesh.base.errors import InvalidArgument, MeshError
from qtmesh.base.hub import Hub
from qtmesh.base.signal import ChangeSignal

PORTFOLIO = "portfolio"
MAX_NOTED = 2000  # actions of published plans waiting for their completion
MAX_PENDING = 10_000  # completed actions waiting for their window to pass
_log = structlog.get_logger("federation.memory")


class FleetMarket(Protocol):
    """What the federation reads from the market to remember a plan (MarketClient)."""

    async def snapshot(self) -> Snapshot: ...

    async def fleet(
        self, *, start_time: int | None = None, end_time: int | None = None, sector: str = ""
    ) -> FleetReport: ...


@dataclasses.dataclass(frozen=True)
class Noted:
    """An action of a published plan that becomes episodes once it completed: its decision
    and, per sector it acts on, that sector's features and regime at the plan's time."""

    plan_id: str
    plan_sequence: int
    action: Action
    decision: str
    whole_fleet: bool  # its outcome is the fleet's total return, not the sector's
    features: Mapping[str, Mapping[str, float]]
    regimes: Mapping[str, str]
    as_of_time: int


@dataclasses.dataclass(frozen=True)
class Pending:
    """A completed action whose window has yet to pass."""

    noted: Noted
    start: int  # market time it took effect (estimated until the fleet change is looked up)
    fleet_change: int  # the fleet change it made (0: none, e.g. a mode switch)
    exact: bool  # whether ``start`` is the fleet change's own time


def remembered(action: Action) -> bool:
    """Whether an action is one memory remembers (see the module)."""
    return isinstance(action.parameters, AdjustExposure | HaltTrading | SwitchMode)


def acted_on(action: Action, sectors: Sequence[str]) -> tuple[list[str], bool]:
    """The market sectors an action acts on, and whether its outcome is the whole fleet's."""
    match action.parameters:
        case AdjustExposure(sector=scope) | HaltTrading(scope=scope):
            if scope in ("", PORTFOLIO):
                return list(sectors), True
            return ([scope], False) if scope in sectors else ([], False)
        case SwitchMode():
            return list(sectors), True
    return [], False


def note(plan: Plan, snapshot: Snapshot) -> list[Noted]:
    """The plan's actions to remember once completed, described at the snapshot's market."""
    sectors = [s.sector for s in snapshot.sectors]
    try:
        extra = hinted_features(plan.context.hints)
    except InvalidArgument:
        extra = {}  # the memory agent refuses such a context too; describe it without them
    noted = []
    for action in plan.actions:
        if action.status is not ActionStatus.PENDING or not remembered(action):
            continue
        acts_on, whole_fleet = acted_on(action, sectors)
        if not acts_on:
            continue  # a sector the market does not have: the owner will refuse it
        regimes = {}
        for sector in acts_on:
            regime = plan.context.hints.get(f"{REGIME_HINT}{sector}", "")
            if regime and NAME.match(regime):
                regimes[sector] = regime
        noted.append(
            Noted(
                plan_id=plan.id,
                plan_sequence=plan.sequence,
                action=action,
                decision=decision_text(action.parameters),
                whole_fleet=whole_fleet,
                features={s: sector_features(snapshot, s) | extra for s in acts_on},
                regimes=regimes,
                as_of_time=plan.context.as_of_time,
            )
        )
    return noted


def episodes(pending: Pending, report: FleetReport, *, window: int) -> list[Episode]:
    """The episodes of a settled action from the fleet's report over its window."""
    noted = pending.noted
    books = {b.sector: b for b in report.sectors}
    made = []
    for sector, features in noted.features.items():
        book = books.get(sector)
        if book is None:
            continue
        outcome = report.total_return if noted.whole_fleet else book.roi
        digest = hashlib.blake2b(
            f"{noted.plan_id}\0{noted.action.id}\0{sector}".encode(), digest_size=12
        ).hexdigest()
        made.append(
            Episode(
                id=f"fed-{digest}",
                time=pending.start,
                features=features,
                decision=noted.decision,
                outcome=outcome,
                regime=noted.regimes.get(sector, ""),
                sector=sector,
                tags={
                    "source": "federation",
                    "plan_id": noted.plan_id,
                    "plan_sequence": str(noted.plan_sequence),
                    "action_id": noted.action.id[:200],
                    "action_type": noted.action.action_type.name,
                    "source_agents": ",".join(noted.action.source_agents)[:200],
                    "fleet_change": str(pending.fleet_change),
                    "window_hours": f"{window / 3.6e12:g}",
                    "sector_return": f"{book.roi:.6g}",
                    "fleet_return": f"{report.total_return:.6g}",
                    "benchmark_return": f"{book.benchmark_return:.6g}",
                },
            )
        )
    return made


class PlanOutcomes:
    """Turns executed plans into episodes after ``window`` nanoseconds of market time (see the
    module). ``clock`` is the federation's market clock (None while the market is away)."""

    def __init__(
        self, *, market: FleetMarket, recorder: Recorder, clock: MarketClock, window: int
    ) -> None:
        self._market = market
        self._recorder = recorder
        self._clock = clock
        self.window = window
        self._noted: OrderedDict[tuple[int, str], Noted] = OrderedDict()
        self._pending: list[tuple[int, int, Pending]] = []  # a heap by the window's end
        self._order = itertools.count()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def follow(self, hub: Hub[Event], moved: ChangeSignal) -> None:
        """Follows the hub's events and the clock's moves, and the recorder, until cancelled."""
        await asyncio.gather(self._events(hub), self._settling(moved), self._recorder.run())

    async def observe(self, event: Event) -> None:
        """Notes a published plan's actions; starts the window of a completed one."""
        if event.plan is not None and any(
            a.status is ActionStatus.PENDING and remembered(a) for a in event.plan.actions
        ):
            try:
                snapshot = await self._market.snapshot()
            except MeshError as exc:
                _log.warning(
                    "market unavailable: the plan's outcome is not remembered",
                    plan=event.plan.sequence,
                    error=exc.message,
                )
                return
            for noted in note(event.plan, snapshot):
                self._noted[(noted.plan_sequence, noted.action.id)] = noted
            while len(self._noted) > MAX_NOTED:
                self._noted.popitem(last=False)
        elif event.update is not None and event.update.status is ActionStatus.COMPLETED:
            self.completed(event.update)

    def completed(self, update: StatusUpdate) -> None:
        noted = self._noted.pop((update.plan_sequence, update.action_id), None)
        if noted is None:
            return
        latest = self._clock()
        start = latest[0] if latest is not None else noted.as_of_time
        try:
            change = int(update.outcome.get("fleet_change", "0") or 0)
        except ValueError:
            change = 0
        self._schedule(Pending(noted, start, change, exact=change == 0))
        while len(self._pending) > MAX_PENDING:
            dropped = max(self._pending)  # the latest window: the others close sooner
            self._pending.remove(dropped)
            heapq.heapify(self._pending)
            _log.warning(
                "too many plan outcomes pending; the latest dropped",
                plan=dropped[2].noted.plan_sequence,
            )

    async def settle(self, now: int) -> int:
        """Records the actions whose window ended by market time ``now``; returns how many."""
        settled = 0
        while self._pending and self._pending[0][0] <= now:
            _, _, pending = heapq.heappop(self._pending)
            try:
                settled += await self._settle(pending, now)
            except MeshError as exc:
                _log.warning(
                    "fleet unavailable: a plan's outcome is not remembered",
                    plan=pending.noted.plan_sequence,
                    action=pending.noted.action.id,
                    error=exc.message,
                )
        return settled

    async def _settle(self, pending: Pending, now: int) -> int:
        report = await self._market.fleet(
            start_time=pending.start + 1, end_time=pending.start + self.window
        )
        if not pending.exact:
            # The fleet change's own time: the stream-fed clock may lag the market.
            made = next((c for c in report.changes if c.sequence == pending.fleet_change), None)
            exact = dataclasses.replace(
                pending, start=made.time if made is not None else pending.start, exact=True
            )
            if exact.start != pending.start:
                if exact.start + self.window > now:
                    self._schedule(exact)
                    return 0
                report = await self._market.fleet(
                    start_time=exact.start + 1, end_time=exact.start + self.window
                )
            pending = exact
        made_episodes = episodes(pending, report, window=self.window)
        for episode in made_episodes:
            self._recorder.record(episode)
        return len(made_episodes)

    def _schedule(self, pending: Pending) -> None:
        heapq.heappush(self._pending, (pending.start + self.window, next(self._order), pending))

    async def _events(self, hub: Hub[Event]) -> None:
        subscription = hub.subscribe()
        try:
            while True:
                event = await subscription.next()
                if event is None:
                    if not subscription.overflowed:
                        return  # the hub closed: the federation is shutting down
                    _log.warning("fell behind the plan events; the outcomes missed are lost")
                    hub.unsubscribe(subscription)
                    subscription = hub.subscribe()
                    continue
                try:
                    await self.observe(event)
                except Exception:
                    _log.exception("noting a plan event failed", sequence=event.sequence)
        finally:
            hub.unsubscribe(subscription)

    async def _settling(self, moved: ChangeSignal) -> None:
        while True:
            changed = moved.current()  # before reading the clock: no move is missed
            latest = self._clock()
            if latest is not None and self._pending:
                try:
                    await self.settle(latest[0])
                except Exception:
                    _log.exception("settling plan outcomes failed")
            await changed.wait()
