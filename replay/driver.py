"""The replay loop: the market's clock moves as fast as the mesh can follow it, not the wall clock.

Each step advances the market by the sample cadence and samples the paper fleet. Then, in the
closed loop:

* **Day ends.** When the clock leaves a trading day, the alpha-reporting service seals that
  day's sector reports; the loop waits until every sector's report of the day is stored, then
  runs one meta-optimizer cycle over the ``audit_window_days`` ending that day (what the
  optimizer's automatic cycles do, which a replay switches off: they wait for wall-clock quiet).
* **Plans.** Every ``plan_every_minutes`` of market time the federation plans once and executes
  the plan; the loop waits until every action that was to run has finished (completed, failed,
  blocked or expired), an evolution included. So what a plan changed is in the fleet before the
  market moves on, as if the mesh thought in no time.
* **Everything else follows by itself**: meta learns from the fleet's trade stream and pushes its
  scale to the fleet, officers and agents refresh on the clock, SESA's shadows enter the book.
  These are not waited for, so the loop is as fast as its slowest wait, and two runs of one seed
  can differ where a follower was still catching up.

Only the market is needed for the static arm: the fleet trades its deployment and nothing acts
on it. Clients are passed in; no gRPC here beyond what they raise.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Protocol

import structlog

from alpha_reporting.report import EncryptedReport
from federation.plan import Plan, StatusUpdate
from market.fleet import FleetReport
from market.replay import AdvanceResult
from meta.model import MetaParameters, ParameterChange
from meta_optimizer.ledger import Cycle
from qtmesh.base.bars import BarSeries, Snapshot
from qtmesh.base.contract import ActionStatus, ActionType
from replay.config import Arm, ReplayConfig

_log = structlog.get_logger("replay")

OPEN = (ActionStatus.PENDING, ActionStatus.EXECUTING)
NANOS_PER_MINUTE = 60 * 10**9


class Market(Protocol):
    async def snapshot(self, symbols: Sequence[str] = ()) -> Snapshot: ...
    async def advance(self, steps: int) -> AdvanceResult: ...
    async def fleet(self) -> FleetReport: ...
    async def bars(self, symbol: str, *, lookback: int = 0) -> BarSeries: ...


class Federation(Protocol):
    async def generate_plan(self, *, execute: bool = False) -> Plan: ...
    def subscribe(
        self, *, after_sequence: int | None = None
    ) -> AsyncIterator[tuple[int, Plan | StatusUpdate]]: ...


class Reports(Protocol):
    def watch(self, *, after_sequence: int | None = None) -> AsyncIterator[EncryptedReport]: ...


class Optimizer(Protocol):
    async def run_cycle(self, *, start_date: str = "", end_date: str = "") -> Cycle: ...


class Meta(Protocol):
    def watch(
        self, *, after_version: int | None = None
    ) -> AsyncIterator[tuple[MetaParameters, tuple[ParameterChange, ...]]]: ...

    async def parameters(self) -> MetaParameters: ...


@dataclasses.dataclass(frozen=True)
class MeshClients:
    """The closed loop's clients (the static arm needs the market only)."""

    federation: Federation
    reports: Reports
    optimizer: Optimizer
    meta: Meta


@dataclasses.dataclass(frozen=True)
class Sample:
    time: int
    equity: float
    allocations: Mapping[str, float]
    halted: tuple[str, ...]
    scale: float


@dataclasses.dataclass(frozen=True)
class ActionRecord:
    action_id: str
    action_type: str
    priority: str
    target: str
    status: str
    detail: str
    rationale: str
    sources: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PlanRecord:
    sequence: int
    time: int  # market time the plan was made at
    summary: str
    actions: tuple[ActionRecord, ...]
    agents: tuple[tuple[str, str, float], ...]  # (agent, outcome, latency seconds)


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    date: str
    status: str
    reports_audited: int
    reports_rejected: int
    proposals: tuple[str, ...]  # "<type> <target>"


@dataclasses.dataclass(frozen=True)
class MetaRecord:
    version: int
    time: int
    cause: str
    values: Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class ReplayRun:
    """What one arm of a replay did."""

    arm: Arm
    source: str
    config: ReplayConfig
    bar_seconds: float
    samples: tuple[Sample, ...]
    plans: tuple[PlanRecord, ...]
    audits: tuple[AuditRecord, ...]
    meta: tuple[MetaRecord, ...]
    wall_seconds: float
    at_end: bool  # the market ran out of bars before the days were replayed
    # Where the wall time went: "plan" (planning and executing until every action is final),
    # "advance" (moving the clock), "sample" (reading the fleet), "audit" (waiting for the
    # day's reports and the optimizer's cycle), "meta" (reading meta's history at the end).
    wall_seconds_by_phase: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def days(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        return (self.samples[-1].time - self.samples[0].time) / (86_400 * 10**9)

    def actions(self, action_type: ActionType, status: ActionStatus) -> list[ActionRecord]:
        return [
            a
            for p in self.plans
            for a in p.actions
            if a.action_type == action_type.name and a.status == status.name
        ]


@dataclasses.dataclass(frozen=True)
class Progress:
    clock_time: int
    done_minutes: float
    total_minutes: float
    plans: int
    actions: int
    completed: int
    equity: float


def sample_of(report: FleetReport) -> Sample:
    return Sample(
        time=report.clock_time,
        equity=report.equity,
        allocations={s.sector: s.allocation for s in report.sectors},
        halted=tuple(sorted(report.halted)),
        scale=report.scale,
    )


def trading_date(nanos: int) -> str:
    return datetime.datetime.fromtimestamp(nanos / 1e9, tz=datetime.UTC).date().isoformat()


class _Follower(abc.ABC):
    """Follows one stream (``_follow``) in a task; ``until`` waits for a condition on what it
    has seen and raises what ended the stream, so a lost service fails the replay instead of
    stalling it."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            await self._follow()
            raise RuntimeError("the stream ended")
        except Exception as exc:  # handed to the waiter, which raises it
            async with self._changed:
                self._error = exc
                self._changed.notify_all()

    @abc.abstractmethod
    async def _follow(self) -> None: ...

    async def _seen(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """True once ``condition`` holds; False if it did not within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self._error is not None or condition())
        except TimeoutError:
            return False
        if self._error is not None:
            raise self._error
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _StatusBoard(_Follower):
    """Follows the plan stream and tells when a plan's actions have all finished."""

    def __init__(self, federation: Federation) -> None:
        super().__init__()
        self._federation = federation
        self._final: dict[tuple[int, str], StatusUpdate] = {}

    async def _follow(self) -> None:
        # From the first event: a fresh mesh has none, and a plan made before the stream
        # answered is replayed to us rather than missed.
        async for _sequence, event in self._federation.subscribe(after_sequence=0):
            if isinstance(event, StatusUpdate) and event.status not in OPEN:
                self._final[(event.plan_sequence, event.action_id)] = event
                await self._seen()

    async def finished(self, plan: Plan, timeout: float) -> dict[str, StatusUpdate]:
        """The final status of each action of ``plan`` that was to run."""
        keys = [(plan.sequence, a.id) for a in plan.actions if a.status in OPEN]
        if not await self.until(lambda: all(k in self._final for k in keys), timeout):
            _log.warning("a plan's actions did not finish in time", plan=plan.sequence)
        return {k[1]: self._final[k] for k in keys if k in self._final}


class _DayReports(_Follower):
    """Follows the report stream and tells when every sector's report of a day is stored."""

    def __init__(self, reports: Reports, sectors: int) -> None:
        super().__init__()
        self._reports = reports
        self._sectors = sectors
        self._by_date: dict[str, set[str]] = defaultdict(set)

    async def _follow(self) -> None:
        async for report in self._reports.watch(after_sequence=0):
            self._by_date[report.trading_date].add(report.sector)
            await self._seen()

    async def sealed(self, date: str, timeout: float) -> bool:
        if await self.until(lambda: len(self._by_date[date]) >= self._sectors, timeout):
            return True
        _log.warning("a day's reports did not all arrive", date=date)
        return False


async def bar_seconds(market: Market) -> float:
    """The spacing of the market's bars (the median over its first symbol's last bars)."""
    snapshot = await market.snapshot()
    if not snapshot.quotes:
        raise ValueError("the market has no symbols")
    series = await market.bars(snapshot.quotes[0].bar.symbol, lookback=64)
    times = series.time
    if len(times) < 2:
        return 60.0
    gaps = sorted(int(b) - int(a) for a, b in itertools.pairwise(times))
    return max(gaps[len(gaps) // 2] / 1e9, 1.0)


async def run(
    config: ReplayConfig,
    *,
    arm: Arm,
    source: str,
    market: Market,
    mesh: MeshClients | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> ReplayRun:
    """Replays ``config.days`` of the market (module docstring); ``mesh`` is needed when
    ``arm`` is CLOSED."""
    if arm is Arm.CLOSED and mesh is None:
        raise ValueError("the closed loop needs the mesh's clients")
    started = time.monotonic()
    phases: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def timed(phase: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            phases[phase] += time.monotonic() - began

    spacing = await bar_seconds(market)
    sample_steps = max(1, round(config.sample_every_minutes * 60 / spacing))
    total_minutes = config.days * 1440
    plan_every = config.plan_every_minutes
    snapshot = await market.snapshot()
    samples = [sample_of(await market.fleet())]
    plans: list[PlanRecord] = []
    audits: list[AuditRecord] = []
    board = days = None
    if mesh is not None and arm is Arm.CLOSED:
        board = _StatusBoard(mesh.federation)
        board.start()
        days = _DayReports(mesh.reports, len(snapshot.sectors))
        days.start()
    done_minutes = 0.0
    since_plan = plan_every  # plan at the start, on what the fleet holds then
    at_end = False
    counts = {"actions": 0, "completed": 0}
    try:
        while True:
            if done_minutes >= total_minutes - 1e-9 or at_end:
                break  # a plan now would have no market left to act on
            if board is not None and since_plan >= plan_every - 1e-9:
                assert mesh is not None
                with timed("plan"):
                    plans.append(await _plan(mesh.federation, board, config, counts))
                since_plan = 0.0
            before = samples[-1].time
            # The last step is cut short so the replay ends on the days asked for.
            remaining = round((total_minutes - done_minutes) * 60 / spacing)
            steps = max(1, min(sample_steps, remaining))
            with timed("advance"):
                advanced = await market.advance(steps)
            at_end = advanced.at_end
            with timed("sample"):
                samples.append(sample_of(await market.fleet()))
            done_minutes += steps * spacing / 60
            since_plan += steps * spacing / 60
            if days is not None:
                assert mesh is not None
                for date in _dates_left(before, samples[-1].time):
                    # The fleet is reported from its deployment on: a day it never traded in
                    # (one that ended with the first bar) has no reports to wait for.
                    if _day_end(date) > samples[0].time + spacing * 1e9:
                        with timed("audit"):
                            audits.append(await _audit(mesh.optimizer, days, date, config))
            if progress is not None:
                progress(
                    Progress(
                        clock_time=samples[-1].time,
                        done_minutes=done_minutes,
                        total_minutes=total_minutes,
                        plans=len(plans),
                        actions=counts["actions"],
                        completed=counts["completed"],
                        equity=samples[-1].equity,
                    )
                )
    finally:
        if board is not None:
            await board.close()
        if days is not None:
            await days.close()
    meta = []
    if mesh is not None and arm is Arm.CLOSED:
        with timed("meta"):
            meta = await _meta_history(mesh.meta, since=samples[0].time)
    return ReplayRun(
        arm=arm,
        source=source,
        config=config,
        bar_seconds=spacing,
        samples=tuple(samples),
        plans=tuple(plans),
        audits=tuple(audits),
        meta=tuple(meta),
        wall_seconds=time.monotonic() - started,
        at_end=at_end,
        wall_seconds_by_phase=dict(phases),
    )


def _day_end(date: str) -> int:
    """The first nanosecond after the UTC day ``date``."""
    day = datetime.datetime.fromisoformat(date).replace(tzinfo=datetime.UTC)
    return int((day + datetime.timedelta(days=1)).timestamp()) * 10**9


def _dates_left(before: int, after: int) -> list[str]:
    """The trading dates the clock left between two times (each ends when the next begins)."""
    first, last = trading_date(before), trading_date(after)
    out = []
    day = datetime.date.fromisoformat(first)
    end = datetime.date.fromisoformat(last)
    while day < end:
        out.append(day.isoformat())
        day += datetime.timedelta(days=1)
    return out


async def _plan(
    federation: Federation, board: _StatusBoard, config: ReplayConfig, counts: dict[str, int]
) -> PlanRecord:
    plan = await federation.generate_plan(execute=True)
    final = await board.finished(plan, config.settle_timeout_seconds)
    actions = []
    for a in plan.actions:
        update = final.get(a.id)
        status = update.status if update is not None else a.status
        detail = update.detail if update is not None else a.status_detail
        if a.status in OPEN:
            counts["actions"] += 1
            counts["completed"] += status is ActionStatus.COMPLETED
        actions.append(
            ActionRecord(
                action_id=a.id,
                action_type=a.action_type.name,
                priority=a.priority.name,
                target=a.target,
                status=status.name,
                detail=detail,
                rationale=a.rationale,
                sources=a.source_agents,
            )
        )
    return PlanRecord(
        sequence=plan.sequence,
        time=plan.context.as_of_time,
        summary=plan.summary,
        actions=tuple(actions),
        agents=tuple((r.agent, r.outcome.name, r.latency_seconds) for r in plan.agents),
    )


async def _audit(
    optimizer: Optimizer, days: _DayReports, date: str, config: ReplayConfig
) -> AuditRecord:
    await days.sealed(date, config.settle_timeout_seconds)
    start = datetime.date.fromisoformat(date) - datetime.timedelta(
        days=config.audit_window_days - 1
    )
    cycle = await optimizer.run_cycle(start_date=start.isoformat(), end_date=date)
    return AuditRecord(
        date=date,
        status=cycle.status.name,
        reports_audited=cycle.reports_audited,
        reports_rejected=cycle.reports_rejected,
        proposals=tuple(f"{p.action} {p.target_sector}" for p in cycle.proposals),
    )


async def _meta_history(meta: Meta, *, since: int) -> list[MetaRecord]:
    """Every parameter version meta wrote, oldest first; the seed version (never updated) is
    dated ``since``."""
    current = (await meta.parameters()).version
    records: list[MetaRecord] = []
    if current == 0:
        return records
    async for parameters, _changes in meta.watch(after_version=0):
        records.append(
            MetaRecord(
                version=parameters.version,
                time=max(parameters.update_time, since),
                cause=parameters.cause,
                values={k: v for k, v in parameters.values().items() if "[" not in k},
            )
        )
        if parameters.version >= current:
            break
    return records
