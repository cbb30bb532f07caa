"""The strategy officer as an agent: it reads the strategy book the market's fleet owns and
trades, keeps its strategies' performance fresh in the background, and recommends the actions
that change the book (the market executes them).

Whenever the market's clock completes a period (and when ListStrategies asks), a refresh reads
the fleet's new periods and measures its strategies: a deployed strategy in production by the
fleet's paper P&L per period over the lookback, any other (a shadow, or one promoted or added
later) by its own record since it entered its stage, which the fleet keeps on every bar (for a
shadow, its paper record with no capital). Recommend only reads what the last refresh computed.
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from agents.officer import Market, Officer
from agents.strategy.advice import MetaWeights, advise
from agents.strategy.book import Entry, entries_of
from agents.strategy.config import StrategyConfig
from agents.strategy.performance import Performance, book_performance
from meta.model import MetaParameters
from qtmesh.base.contract import ActionType, Recommendation
from qtmesh.base.errors import FailedPrecondition, InvalidArgument, MeshError
from qtmesh.base.paging import decode_token, encode_token, page_size

# The market executes the strategy actions now: the officer only recommends them.
EXECUTES: tuple[ActionType, ...] = ()
_log = structlog.get_logger("agents.strategy")


class MetaReader(Protocol):
    """Where meta's strategy weights come from (implemented by MetaClient)."""

    async def parameters(self) -> MetaParameters: ...


class StrategyOfficer(Officer[None]):
    """Implements :class:`~qtmesh.base.contract.Agent` plus ListStrategies."""

    name = "strategy"

    def __init__(
        self,
        *,
        market: Market,
        config: StrategyConfig,
        meta: MetaReader | None = None,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """``meta`` gives the strategy weights that tilt reweighting (none: inverse volatility
        alone)."""
        super().__init__(market=market, policy=None, periods=config, wall_clock=wall_clock)
        self._meta = meta
        self._meta_weights: MetaWeights | None = None
        self._config = config
        self._rules = config.rules
        self._entries: list[Entry] | None = None
        self._performance: dict[str, Performance] = {}
        self._recommendations_now: tuple[Recommendation, ...] = ()

    # -- measures ----------------------------------------------------------------------------

    async def _refresh(self) -> None:
        history = await self._sampler.update()
        entries = entries_of(history.current)
        self._performance = book_performance(entries, history, self._config.lookback_periods)
        self._entries = entries
        if self._meta is not None:
            try:
                parameters = await self._meta.parameters()
            except MeshError as exc:
                # Keeps the last weights read: meta away for a while changes no recommendation.
                _log.warning("cannot read meta's strategy weights", error=exc.message)
            else:
                self._meta_weights = MetaWeights(
                    dict(parameters.strategy_weights), parameters.version
                )
        self._recompute()

    def performance(self) -> dict[str, Performance]:
        return dict(self._performance)

    def entries(self) -> list[Entry]:
        return list(self._entries or [])

    def _recompute(self) -> None:
        history = self._sampler.history
        if history is None or self._entries is None:
            return
        self._recommendations_now = tuple(
            advise(
                self._entries,
                self._performance,
                self._rules,
                clock_time=history.clock_time,
                meta=self._meta_weights,
            )
        )

    async def _ready(self) -> list[Entry]:
        """The fleet's book, reading the market if it was never read."""
        if self._entries is None:
            with contextlib.suppress(MeshError):
                await self._refresher.fresh()
        if self._entries is None:
            raise FailedPrecondition("the fleet is not known yet: the market has not answered")
        return self._entries

    # -- the book ------------------------------------------------------------------------------

    async def list(
        self, *, sector: str = "", size: int = 0, token: str = ""
    ) -> tuple[list[tuple[Entry, Performance | None]], str]:
        """A page of the book ordered by (sector, id), and the next page's token ("" at the end).
        The first page refreshes the measures first."""
        if not token:
            with contextlib.suppress(MeshError):
                await self._refresher.fresh()
        entries = await self._ready()
        sectors = sorted({e.record.sector for e in entries})
        if sector and sector not in sectors:
            known = ", ".join(sectors)
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
            for e in entries
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
