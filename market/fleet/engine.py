"""The paper fleet in the running market: simulates it on the replay's bars when asked (cached
until the clock moves; an action executed at the clock only restates the cached run, see
``simulation.restated``) and applies executed actions, once per
idempotency key, persisting each change before it takes effect. It owns the strategy book: the
strategy actions, the halts and an evolution's shadows all change it here and nowhere else.
No gRPC here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from market.fleet.book import Candidate
from market.fleet.report import FleetReport, Trade, TradeQuery
from market.fleet.setup import FleetSetup
from market.fleet.simulation import Backtester, FleetRun, restated, simulate
from market.fleet.state import Cause, FleetChange, FleetState
from market.fleet.store import FleetStore
from market.replay import Replay
from qtmesh.base.bars import BarSeries, format_time
from qtmesh.base.concurrency import CancelToken, run_cancellable
from qtmesh.base.contract import (
    NOT_APPLIED,
    Action,
    ActionType,
    AdjustExposure,
    DisableStrategy,
    EnableStrategy,
    Execution,
    ExecutionResult,
    HaltTrading,
    PromoteStrategy,
    ResumeTrading,
    ReweightStrategies,
    SpawnArbMission,
)
from qtmesh.base.errors import InvalidArgument

Clock = Callable[[], int]
# Reports kept per run, at most: the officers' windows of one clock step are far fewer.
_CACHED_REPORTS = 256
# Most samples of a report's equity curve (GetFleetRequest.curve_points).
MAX_CURVE_POINTS = 10_000
# The action types the fleet executes.
EXECUTABLE = (
    ActionType.ADJUST_EXPOSURE,
    ActionType.SPAWN_ARB_MISSION,
    ActionType.ENABLE_STRATEGY,
    ActionType.DISABLE_STRATEGY,
    ActionType.REWEIGHT_STRATEGIES,
    ActionType.PROMOTE_STRATEGY,
    ActionType.HALT_TRADING,
    ActionType.RESUME_TRADING,
)


def _applied(change: FleetChange) -> ExecutionResult:
    return ExecutionResult(
        True,
        f"fleet change {change.sequence} from {format_time(change.time)}: {change.detail}",
        {"fleet_change": str(change.sequence)},
    )


class FleetEngine:
    def __init__(
        self,
        *,
        replay: Replay,
        state: FleetState,
        store: FleetStore,
        clock: Clock,
        on_run: Callable[[FleetRun], None] | None = None,
    ) -> None:
        """``on_run`` is told each new run of the fleet at the clock, once it is computed."""
        self.replay = replay
        self.store = store
        self._state = state
        self._fingerprint = state.setup.fingerprint()
        self._clock = clock
        self._backtester = Backtester(state.setup)
        self._on_run = on_run
        self._run: FleetRun | None = None
        self._run_key: tuple[int, int] | None = None
        # The static fleet of the last run asked for (by its position and clock).
        self._static: tuple[tuple[int, int], FleetRun] | None = None
        # The reports of one run (a run never changes): the officers read the same windows.
        self._reports_of: FleetRun | None = None
        self._reports: dict[tuple[int | None, int | None, str, int], FleetReport] = {}
        self._computing = asyncio.Lock()
        self._changing = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        *,
        replay: Replay,
        setup: FleetSetup,
        store: FleetStore,
        clock: Clock,
        on_run: Callable[[FleetRun], None] | None = None,
    ) -> FleetEngine:
        """The engine of ``setup``'s deployment, with the changes stored for it."""
        changes = await store.run(
            store.open_deployment, setup.fingerprint(), setup.deployment_time, clock()
        )
        return cls(
            replay=replay,
            state=FleetState(setup, tuple(changes)),
            store=store,
            clock=clock,
            on_run=on_run,
        )

    @property
    def state(self) -> FleetState:
        return self._state

    @property
    def setup(self) -> FleetSetup:
        return self._state.setup

    # -- reads ----------------------------------------------------------------------------------

    async def report(
        self,
        *,
        start_time: int | None,
        end_time: int | None,
        sector: str = "",
        curve_points: int = 0,
    ) -> FleetReport:
        clock = self.replay.clock_time
        if not 0 <= curve_points <= MAX_CURVE_POINTS:
            raise InvalidArgument("curve_points", f"{curve_points} is not in 0..{MAX_CURVE_POINTS}")
        if end_time is not None and end_time > clock:
            raise InvalidArgument(
                "end_time",
                f"{format_time(end_time)} is after the replay clock {format_time(clock)}",
            )
        if start_time is not None and start_time > (end_time if end_time is not None else clock):
            raise InvalidArgument(
                "start_time", f"{format_time(start_time)} is after the window's end"
            )
        if sector:
            self.setup.check_sector(sector, field="sector")
        run = await self.run()
        if self._reports_of is not run or len(self._reports) >= _CACHED_REPORTS:
            self._reports_of, self._reports = run, {}
        key = (start_time, end_time, sector, curve_points)
        report = self._reports.get(key)
        if report is None:
            static = await self._static_run(run) if curve_points else None
            report = run.report(
                start_time=start_time,
                end_time=end_time,
                sector=sector,
                curve_points=curve_points,
                static=static,
            )
            self._reports[key] = report
        return report

    async def trades(self, query: TradeQuery, limit: int) -> tuple[list[Trade], bool]:
        if query.sector:
            self.setup.check_sector(query.sector, field="sector")
        if query.strategy_id and query.strategy_id not in set(self._state.strategy_ids()):
            raise InvalidArgument("strategy_id", f"unknown strategy {query.strategy_id!r}")
        if (
            query.start_time is not None
            and query.end_time is not None
            and query.start_time > query.end_time
        ):
            raise InvalidArgument("start_time", "is after end_time")
        run = await self.run()
        return run.list_trades(query, limit)

    async def closed_trades(self, after: tuple[int, str] | None) -> tuple[FleetRun, list[Trade]]:
        """The fleet at the clock and its trades closed after the keyset ``after`` (exit time,
        strategy id), in the order they closed."""
        run = await self.run()
        return run, run.closed_trades(after)

    async def run(self) -> FleetRun:
        """The fleet simulated up to the clock; recomputed only when the clock or the changes
        moved. The backtests run off the event loop and stop if the caller is cancelled."""
        async with self._computing:
            key = (self.replay.position, len(self._state.changes))
            if self._run is not None and self._run_key == key:
                return self._run
            state = self._state
            if self._run is not None and self._run_key is not None and self._run_key[0] == key[0]:
                # Actions executed at the clock reach no bar yet: no backtest to run again.
                again = restated(self._run, state)
                if again is not None:
                    return self._ran(again, key)
            clock, position = self.replay.clock_time, self.replay.position
            series = self._series(state.setup)

            def work(token: CancelToken) -> FleetRun:
                return simulate(
                    state,
                    series,
                    clock_time=clock,
                    position=position,
                    backtester=self._backtester,
                    token=token,
                )

            return self._ran(await run_cancellable(work), key)

    def _ran(self, run: FleetRun, key: tuple[int, int]) -> FleetRun:
        self._run, self._run_key = run, key
        if self._on_run is not None:
            self._on_run(run)
        return run

    def _series(self, setup: FleetSetup) -> dict[str, BarSeries]:
        """Every bar loaded of the fleet's symbols, the clock's future included: each symbol is
        backtested once over them, not again after each advance (simulation.Backtester says why
        that is exact). Read on the loop: ingesting replaces a symbol's arrays, never changes
        them."""
        return {
            symbol: self.replay.loaded_bars(symbol)
            for symbol in sorted({s.symbol for s in setup.strategies})
        }

    async def _static_run(self, run: FleetRun) -> FleetRun:
        """The deployment simulated over ``run``'s bars with none of its changes: the fleet left
        static that the curve compares with. The symbols' backtests are shared with ``run``
        (the backtester keeps them), so this costs the accounting only."""
        if not run.state.changes:
            return run
        key = (run.position, run.clock_time)
        if self._static is not None and self._static[0] == key:
            return self._static[1]
        series = self._series(run.setup)

        def work(token: CancelToken) -> FleetRun:
            return simulate(
                FleetState(run.setup),
                series,
                clock_time=run.clock_time,
                position=run.position,
                backtester=self._backtester,
                token=token,
            )

        static = await run_cancellable(work)
        self._static = (key, static)
        return static

    # -- actions ---------------------------------------------------------------------------------

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        """Applies an action the fleet executes at the replay clock, once per idempotency key: a
        key seen before (even before a restart) changes nothing."""
        field = "action.parameters"

        def change_of(state: FleetState, at: int, cause: Cause) -> FleetChange:
            match action.parameters:
                case AdjustExposure(sector=sector, factor=factor):
                    return state.adjust_exposure(
                        sector, factor, at=at, cause=cause, field=f"{field}.adjust_exposure"
                    )
                case SpawnArbMission(
                    long_sector=long_sector, short_sector=short_sector, allocation=allocation
                ):
                    return state.spawn_arb_mission(
                        long_sector,
                        short_sector,
                        allocation,
                        at=at,
                        cause=cause,
                        field=f"{field}.spawn_arb_mission",
                    )
                case EnableStrategy(strategy_id=sid, sector=sector, genome=genome, weight=weight):
                    return state.enable_strategy(
                        strategy_id=sid,
                        sector=sector,
                        genome=genome,
                        weight=weight,
                        at=at,
                        cause=cause,
                        field=f"{field}.enable_strategy",
                    )
                case DisableStrategy(strategy_id=sid):
                    return state.disable_strategy(
                        strategy_id=sid, at=at, cause=cause, field=f"{field}.disable_strategy"
                    )
                case ReweightStrategies(weights=weights):
                    return state.reweight_strategies(
                        weights=weights, at=at, cause=cause, field=f"{field}.reweight_strategies"
                    )
                case PromoteStrategy(strategy_id=sid, replaces=replaces):
                    return state.promote_strategy(
                        strategy_id=sid,
                        replaces=replaces,
                        at=at,
                        cause=cause,
                        field=f"{field}.promote_strategy",
                    )
                case HaltTrading(scope=scope):
                    return state.halt(scope, at=at, cause=cause, field=f"{field}.halt_trading")
                case ResumeTrading(scope=scope):
                    return state.resume(scope, at=at, cause=cause, field=f"{field}.resume_trading")
            raise InvalidArgument(
                "action.type",
                "the fleet executes " + ", ".join(t.name for t in EXECUTABLE),
            )

        change, applied = await self._apply(
            action.idempotency_key, action.id, plan_sequence, change_of
        )
        if not applied:
            return ExecutionResult(
                False, f"already applied as fleet change {change.sequence}: {change.detail}"
            )
        return _applied(change)

    async def execution(self, key: str) -> Execution:
        """What the fleet applied under ``key``, from its stored changes."""
        change = await self.store.run(self.store.change_of_action, key)
        if change is None:
            return NOT_APPLIED
        return Execution.applied(_applied(change))

    async def add_shadows(
        self,
        candidates: list[Candidate],
        *,
        evolution_id: str,
        trials: int,
        action_key: str,
        action_id: str,
        plan_sequence: int,
    ) -> tuple[FleetChange, bool]:
        """An evolution's candidates join the book as shadows, recorded with the action that ran
        the evolution (or, for one run by hand, the key its caller gives); once per key."""
        if not action_key:
            raise InvalidArgument("action_key", "must be set")

        def change_of(state: FleetState, at: int, cause: Cause) -> FleetChange:
            return state.add_shadows(
                candidates,
                evolution_id=evolution_id,
                trials=trials,
                at=at,
                cause=cause,
                field="request",
            )

        return await self._apply(action_key, action_id, plan_sequence, change_of)

    async def apply_meta(
        self, *, version: int, risk_multiplier: float, position_size_scale: float
    ) -> tuple[FleetChange, bool]:
        """Meta's parameters of ``version`` scale every position from the next bar; once per
        version (the key ``meta/parameters/<version>``)."""
        key = f"meta/parameters/{version}"

        def change_of(state: FleetState, at: int, cause: Cause) -> FleetChange:
            return state.apply_meta(
                version=version,
                risk_multiplier=risk_multiplier,
                position_size_scale=position_size_scale,
                at=at,
                cause=cause,
            )

        return await self._apply(key, f"meta-v{version}", 0, change_of)

    async def _apply(
        self,
        key: str,
        action_id: str,
        plan_sequence: int,
        change_of: Callable[[FleetState, int, Cause], FleetChange],
    ) -> tuple[FleetChange, bool]:
        """(the change ``change_of`` makes, persisted and in effect, True), or (the change
        ``key`` made before, False)."""
        if not key:
            raise InvalidArgument("action.idempotency_key", "must be set")
        async with self._changing:
            seen = await self.store.run(self.store.change_of_action, key)
            if seen is not None:
                return seen, False
            state = self._state
            at = state.next_time(self.replay.clock_time)
            change = change_of(state, at, Cause(key, action_id, plan_sequence))
            await self.store.run(self.store.append, self._fingerprint, change, self._clock())
            self._state = state.with_change(change)
        return change, True
