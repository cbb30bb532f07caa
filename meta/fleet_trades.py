"""Meta learns from the fleet: it follows the market's stream of the paper fleet's closed trades
and feeds them to the meta-learning OS on the market clock.

Rules:

* **What counts.** Every trade the fleet closed (a trade is known complete only once it exited),
  in the order they closed: by exit time, then strategy id. Its return, times, strategy, symbol,
  sector and family become a :class:`meta.model.Trade`; a trade the OS would refuse (say, a
  return outside its range) is logged and skipped, so it cannot stall the stream.
* **When the OS updates.** On the market clock, never the wall clock: trades are handed over in
  exit-time order, and an update runs at a trade's exit time whenever the OS is due there (its
  interval, ``meta_update_interval_minutes``, has passed since the last adaptation), with every
  trade that closed by then; whatever remains is recorded at the stream's clock once the stream
  caught up with a clock step, where the OS adapts too if it is due. Whether it adapts is the
  OS's own rule: due, and at least ``min_samples_for_update`` trades in the window. A version
  it makes names its cause, :data:`CAUSE`.
* **Resuming.** Each update stores the stream's cursor (the last trade it counted) in the same
  transaction as the trades, so a follower that reconnects, or a meta that restarts, resumes
  after the last trade it counted and counts none twice.
  :func:`~qtmesh.base.reconnect.follow_forever` reconnects with backoff while the market is away.

No gRPC here: the market's client is passed in.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import structlog

from market.fleet import ClosedTrades
from market.fleet import Trade as FleetTrade
from meta.engine import MetaEngine
from meta.model import Trade, validate_trades
from meta.store import StreamCursor
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.reconnect import follow_forever

_log = structlog.get_logger("meta.fleet_trades")

# The stream's name in the store, and the cause of the versions its trades make.
STREAM = "market/fleet-trades"
CAUSE = "fleet trades"


class TradeStream(Protocol):
    """What the follower reads (implemented by MarketClient)."""

    def watch_trades(
        self, *, after: tuple[int, str] | None = None
    ) -> AsyncIterator[ClosedTrades]: ...


def meta_trade(t: FleetTrade) -> Trade | None:
    """The fleet's closed trade as the OS counts it; None when it is still open."""
    if t.exit_time is None:
        return None
    return Trade(
        strategy_id=t.strategy_id,
        symbol=t.symbol,
        sector=t.sector,
        entry_time=t.entry_time,
        exit_time=t.exit_time,
        return_fraction=t.return_fraction,
        family=t.family,
    )


class FleetLearner:
    """Hands one stream message after another to ``engine`` (see the module's rules)."""

    def __init__(self, engine: MetaEngine) -> None:
        self.engine = engine

    async def cursor(self) -> tuple[int, str] | None:
        stored = await self.engine.stream_cursor(STREAM)
        return None if stored is None else (stored.exit_time, stored.strategy_id)

    async def learn(self, message: ClosedTrades) -> None:
        pending: list[Trade] = []
        last: FleetTrade | None = None
        for exit_time, group in itertools.groupby(message.trades, key=lambda t: t.exit_time):
            if exit_time is None:
                continue
            for t in group:
                last = t
                trade = meta_trade(t)
                if trade is not None and _valid(trade):
                    pending.append(trade)
            if self.engine.due(exit_time):
                await self._update(pending, exit_time, last)
                pending = []
                last = None
        if message.caught_up and (last is not None or self.engine.due(message.clock_time)):
            await self._update(pending, message.clock_time, last)
        elif last is not None:
            # More of this clock step follows: record what closed so far at its last exit.
            assert last.exit_time is not None
            await self._update(pending, last.exit_time, last)

    async def _update(self, trades: Sequence[Trade], now: int, last: FleetTrade | None) -> None:
        cursor = None
        if last is not None and last.exit_time is not None:
            cursor = StreamCursor(STREAM, last.exit_time, last.strategy_id)
        result = await self.engine.update(trades, (), now=now, cause=CAUSE, cursor=cursor)
        if result.adapted:
            _log.info(
                "meta parameters adapted from the fleet's trades",
                version=result.parameters.version,
                detail=result.detail,
            )


def _valid(trade: Trade) -> bool:
    try:
        validate_trades([trade], now=trade.exit_time)
    except InvalidArgument as exc:
        _log.warning("skipping a fleet trade meta cannot count", trade=trade.key, problem=str(exc))
        return False
    return True


async def learn_from_fleet(
    engine: MetaEngine,
    market: TradeStream,
    *,
    initial_backoff: float,
    max_backoff: float,
) -> None:
    """Runs until cancelled: follows the fleet's closed trades from the stored cursor on."""
    learner = FleetLearner(engine)

    async def follow(connected: Callable[[], None]) -> None:
        after = await learner.cursor()
        async for message in market.watch_trades(after=after):
            connected()
            await learner.learn(message)

    await follow_forever(
        follow,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        log=_log,
        what="learning from the fleet's trades",
    )
