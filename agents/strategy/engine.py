"""The strategy officer as an agent: the book it owns, its strategies' performance kept fresh in
the background, and the recommendations read from them.

Whenever the market's clock completes a period (and when ListStrategies asks), a refresh reads
the fleet's new periods, measures the fleet's strategies from them, and has SESA evaluate every
other strategy of the book once per period (bounded by ``sesa_timeout_seconds`` each; a SESA
that does not answer leaves those strategies unmeasured, so nothing is promoted on stale
numbers). Recommend only reads what the last refresh computed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from agents.fleet_history import FleetHistory
from agents.officer import Market, Officer
from agents.policy_log import OwnedPolicy
from agents.strategy.advice import advise
from agents.strategy.book import ACTION, BookPolicy, Entry, Universe
from agents.strategy.config import StrategyConfig
from agents.strategy.performance import Performance, fleet_performance
from qtmesh.base.contract import (
    Action,
    ActionType,
    DisableStrategy,
    EnableStrategy,
    PromoteStrategy,
    Recommendation,
    ReweightStrategies,
)
from qtmesh.base.errors import FailedPrecondition, InvalidArgument, MeshError
from qtmesh.base.genome import StrategyGenome
from qtmesh.base.paging import decode_token, encode_token, page_size

EXECUTES = (
    ActionType.ENABLE_STRATEGY,
    ActionType.DISABLE_STRATEGY,
    ActionType.REWEIGHT_STRATEGIES,
    ActionType.PROMOTE_STRATEGY,
)
_log = structlog.get_logger("agents.strategy")


class ShadowEvaluator(Protocol):
    """Evaluates a genome on a symbol's bars since a market time (SESA, in the service)."""

    async def evaluate(
        self, genome: StrategyGenome, *, symbol: str, since: int, trials: int
    ) -> Performance | None:
        """None while the symbol has too few bars since ``since`` to evaluate."""
        ...


class StrategyOfficer(Officer[BookPolicy]):
    """Implements :class:`~qtmesh.base.contract.Agent` plus ListStrategies."""

    name = "strategy"

    def __init__(
        self,
        *,
        market: Market,
        evaluator: ShadowEvaluator | None,
        book: OwnedPolicy[BookPolicy],
        config: StrategyConfig,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(market=market, policy=book, periods=config, wall_clock=wall_clock)
        self._evaluator = evaluator
        self._config = config
        self._rules = config.rules
        self._universe: Universe | None = None
        self._fleet: dict[str, Performance] = {}
        # Per strategy SESA measures: (period evaluated at, stage start evaluated from, result).
        self._sesa: dict[str, tuple[int, int, Performance | None]] = {}
        self._recommendations_now: tuple[Recommendation, ...] = ()

    # -- measures ----------------------------------------------------------------------------

    async def _refresh(self) -> None:
        history = await self._sampler.update()
        self._universe = Universe.of_fleet(history.current)
        self._fleet = fleet_performance(history, self._config.lookback_periods)
        await self._evaluate_others(history)
        self._recompute()

    async def _evaluate_others(self, history: FleetHistory) -> None:
        """SESA measures of the strategies the fleet does not trade, once per period each."""
        entries = self.entries()
        others = {e.strategy_id: e for e in entries if not e.in_fleet}
        self._sesa = {k: v for k, v in self._sesa.items() if k in others}
        if self._evaluator is None:
            return
        trials = max(1, sum(r.origin == ACTION for r in self._policy.value.records.values()))
        for sid, e in others.items():
            seen = self._sesa.get(sid)
            if seen is not None and seen[:2] == (history.next_period, e.record.since):
                continue
            try:
                async with asyncio.timeout(self._config.sesa_timeout_seconds):
                    measured = await self._evaluator.evaluate(
                        e.record.genome, symbol=e.record.symbol, since=e.record.since, trials=trials
                    )
            except (MeshError, TimeoutError) as exc:
                _log.warning(
                    "cannot evaluate a strategy", strategy=sid, error=str(exc) or "timeout"
                )
                continue
            self._sesa[sid] = (history.next_period, e.record.since, measured)

    def performance(self) -> dict[str, Performance]:
        measured = {sid: p for sid, (_, _, p) in self._sesa.items() if p is not None}
        return {**self._fleet, **measured}

    def entries(self) -> list[Entry]:
        if self._universe is None:
            return []
        return self._policy.value.entries(self._universe)

    def _recompute(self) -> None:
        history = self._sampler.history
        if history is None or self._universe is None:
            return
        self._recommendations_now = tuple(
            advise(self.entries(), self.performance(), self._rules, clock_time=history.clock_time)
        )

    async def _ready(self) -> Universe:
        """The fleet's deployment, reading the market if it was never read."""
        if self._universe is None:
            with contextlib.suppress(MeshError):
                await self._refresher.fresh()
        if self._universe is None:
            raise FailedPrecondition("the fleet is not known yet: the market has not answered")
        return self._universe

    # -- the book ------------------------------------------------------------------------------

    async def list(
        self, *, sector: str = "", size: int = 0, token: str = ""
    ) -> tuple[list[tuple[Entry, Performance | None]], str]:
        """A page of the book ordered by (sector, id), and the next page's token ("" at the end).
        The first page refreshes the measures first."""
        if not token:
            with contextlib.suppress(MeshError):
                await self._refresher.fresh()
        universe = await self._ready()
        if sector and sector not in universe.sector_symbols:
            known = ", ".join(universe.sector_symbols)
            raise InvalidArgument("sector", f"unknown sector {sector!r} (known: {known})")
        limit = page_size(
            size, default=self._config.default_page_size, maximum=self._config.max_page_size
        )
        after: tuple[str, str] | None = None
        if token:
            cursor = decode_token(token, expect={"sector": sector}).get("after")
            # A well-formed token of another shape must not reach the comparison below.
            if not (
                isinstance(cursor, list)
                and len(cursor) == 2
                and all(isinstance(part, str) for part in cursor)
            ):
                raise InvalidArgument("page_token", "is not a token this server issued")
            after = (cursor[0], cursor[1])
        entries = [
            e
            for e in self.entries()
            if (not sector or e.record.sector == sector)
            and (after is None or (e.record.sector, e.strategy_id) > after)
        ]
        page = entries[:limit]
        performance = self.performance()
        next_token = ""
        if len(entries) > limit:
            last = page[-1]
            next_token = encode_token(sector=sector, after=[last.record.sector, last.strategy_id])
        return [(e, performance.get(e.strategy_id)) for e in page], next_token

    # -- the agent -----------------------------------------------------------------------------

    # ``list`` names the method above inside this class.
    def _recommendations(self) -> builtins.list[Recommendation]:
        return builtins.list(self._recommendations_now)

    async def _policy_update(
        self, action: Action, plan_sequence: int
    ) -> tuple[Callable[[BookPolicy], tuple[BookPolicy, str]], int]:
        universe = await self._ready()
        at = self._market_time()
        field = "action.parameters"
        match action.parameters:
            case EnableStrategy(strategy_id=sid, sector=sector, genome=genome, weight=weight):

                def update(book: BookPolicy) -> tuple[BookPolicy, str]:
                    return book.enable(
                        universe,
                        strategy_id=sid,
                        sector=sector,
                        genome=genome,
                        weight=weight,
                        at=at,
                        field=f"{field}.enable_strategy",
                    )

            case DisableStrategy(strategy_id=sid):

                def update(book: BookPolicy) -> tuple[BookPolicy, str]:
                    return book.disable(
                        universe, strategy_id=sid, field=f"{field}.disable_strategy"
                    )

            case ReweightStrategies(weights=weights):

                def update(book: BookPolicy) -> tuple[BookPolicy, str]:
                    return book.reweight(
                        universe, weights=weights, field=f"{field}.reweight_strategies"
                    )

            case PromoteStrategy(strategy_id=sid):

                def update(book: BookPolicy) -> tuple[BookPolicy, str]:
                    return book.promote(
                        universe, strategy_id=sid, at=at, field=f"{field}.promote_strategy"
                    )

            case _:
                raise InvalidArgument(
                    "action.type",
                    "the strategy officer executes ENABLE_STRATEGY, DISABLE_STRATEGY, "
                    "REWEIGHT_STRATEGIES and PROMOTE_STRATEGY",
                )
        return update, at
