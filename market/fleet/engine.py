"""The paper fleet in the running market: simulates it on the replay's bars when asked (cached
until the clock moves or an action changes it) and applies executed actions, once per
idempotency key, persisting each change before it takes effect. No gRPC here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from market.fleet.report import FleetReport, Trade, TradeQuery
from market.fleet.setup import FleetSetup
from market.fleet.simulation import Backtester, FleetRun, simulate
from market.fleet.state import Cause, FleetState
from market.fleet.store import FleetStore
from market.replay import Replay
from qtmesh.base.bars import format_time
from qtmesh.base.concurrency import CancelToken, run_cancellable
from qtmesh.base.contract import Action, AdjustExposure, ExecutionResult, SpawnArbMission
from qtmesh.base.errors import InvalidArgument

Clock = Callable[[], int]


class FleetEngine:
    def __init__(
        self, *, replay: Replay, state: FleetState, store: FleetStore, clock: Clock
    ) -> None:
        self.replay = replay
        self.store = store
        self._state = state
        self._fingerprint = state.setup.fingerprint()
        self._clock = clock
        self._backtester = Backtester(state.setup)
        self._run: FleetRun | None = None
        self._run_key: tuple[int, int] | None = None
        self._computing = asyncio.Lock()
        self._changing = asyncio.Lock()

    @classmethod
    async def open(
        cls, *, replay: Replay, setup: FleetSetup, store: FleetStore, clock: Clock
    ) -> FleetEngine:
        """The engine of ``setup``'s deployment, with the changes stored for it."""
        changes = await store.run(
            store.open_deployment, setup.fingerprint(), setup.deployment_time, clock()
        )
        return cls(replay=replay, state=FleetState(setup, tuple(changes)), store=store, clock=clock)

    @property
    def state(self) -> FleetState:
        return self._state

    @property
    def setup(self) -> FleetSetup:
        return self._state.setup

    # -- reads ----------------------------------------------------------------------------------

    async def report(
        self, *, start_time: int | None, end_time: int | None, sector: str = ""
    ) -> FleetReport:
        clock = self.replay.clock_time
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
        return run.report(start_time=start_time, end_time=end_time, sector=sector)

    async def trades(self, query: TradeQuery, limit: int) -> tuple[list[Trade], bool]:
        if query.sector:
            self.setup.check_sector(query.sector, field="sector")
        if query.strategy_id and query.strategy_id not in {s.id for s in self.setup.strategies}:
            raise InvalidArgument("strategy_id", f"unknown strategy {query.strategy_id!r}")
        if (
            query.start_time is not None
            and query.end_time is not None
            and query.start_time > query.end_time
        ):
            raise InvalidArgument("start_time", "is after end_time")
        run = await self.run()
        return run.list_trades(query, limit)

    async def run(self) -> FleetRun:
        """The fleet simulated up to the clock; recomputed only when the clock or the changes
        moved. The backtests run off the event loop and stop if the caller is cancelled."""
        async with self._computing:
            key = (self.replay.position, len(self._state.changes))
            if self._run is not None and self._run_key == key:
                return self._run
            state = self._state
            clock, position = self.replay.clock_time, self.replay.position
            # Visible bars, sliced on the loop: the replay's arrays never change in place.
            series = {
                symbol: self.replay.bars(symbol, *self.replay.window(symbol))
                for symbol in sorted({s.symbol for s in state.setup.strategies})
            }

            def work(token: CancelToken) -> FleetRun:
                return simulate(
                    state,
                    series,
                    clock_time=clock,
                    position=position,
                    backtester=self._backtester,
                    token=token,
                )

            self._run = await run_cancellable(work)
            self._run_key = key
            return self._run

    # -- actions ---------------------------------------------------------------------------------

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        """Applies AdjustExposure or SpawnArbMission at the replay clock, once per idempotency
        key: a key seen before (even before a restart) changes nothing."""
        key = action.idempotency_key
        if not key:
            raise InvalidArgument("action.idempotency_key", "must be set")
        async with self._changing:
            seen = await self.store.run(self.store.change_of_action, key)
            if seen is not None:
                return ExecutionResult(
                    False, f"already applied as fleet change {seen.sequence}: {seen.detail}"
                )
            state = self._state
            at = state.next_time(self.replay.clock_time)
            cause = Cause(key, action.id, plan_sequence)
            match action.parameters:
                case AdjustExposure(sector=sector, factor=factor):
                    change = state.adjust_exposure(
                        sector,
                        factor,
                        at=at,
                        cause=cause,
                        field="action.parameters.adjust_exposure",
                    )
                case SpawnArbMission(
                    long_sector=long_sector, short_sector=short_sector, allocation=allocation
                ):
                    change = state.spawn_arb_mission(
                        long_sector,
                        short_sector,
                        allocation,
                        at=at,
                        cause=cause,
                        field="action.parameters.spawn_arb_mission",
                    )
                case _:
                    raise InvalidArgument(
                        "action.type", "the fleet executes ADJUST_EXPOSURE and SPAWN_ARB_MISSION"
                    )
            await self.store.run(self.store.append, self._fingerprint, change, self._clock())
            self._state = state.with_change(change)
        return ExecutionResult(
            True, f"fleet change {change.sequence} from {format_time(at)}: {change.detail}"
        )
