"""The market's regime as the replay clock moves: the events WatchRegimes streams.

Rules:

* **What.** The whole market's regime: the regime model of the equal-weighted index of every
  symbol (:data:`world_model.engine.MARKET`), reported with the engine's hysteresis. An event
  is logged each time the reported regime differs from the last one logged; the first event
  after start-up is the regime found (``previous_regime`` empty), not a change.
* **When.** On the market clock, never the wall clock: :class:`RegimeWatcher` follows the
  market's bar stream from the clock's step on (one symbol's bars, so a step's message stays
  small) and detects at most once per clock step, and only once ``interval`` nanoseconds of
  market time have passed since the last detection. A detection reads the engine's cached model
  and refits only when the market has ``refit_bars`` new bars (:meth:`WorldModel.detect`), so
  most steps cost nothing. Detections run one at a time in the follower; steps that arrive
  meanwhile are read after it and skipped while inside the interval. A detection that fails
  (too little history, the market away) is logged and tried again an interval later.
* **Market time of an event.** The last bar of the fitted model that showed the regime (the
  model's ``as_of_time``): a new regime appears only with a refit, on the bars the market had
  then, which may be later than the step that started the detection.
* **Resuming.** Events are numbered from 1 and the last ``keep`` are kept in memory, so a
  follower that reconnects with the last sequence it saw receives every later kept event once.
  Nothing is stored on disk: a restarted world model starts numbering again at 1 (a follower
  past the new last sequence gets INVALID_ARGUMENT and follows live), and each replica of a
  replicated world model numbers its own events. Followers that must not count a change twice
  compare market times (meta does: :mod:`meta.regimes`).
* **Following.** :func:`~qtmesh.base.reconnect.follow_forever` reconnects with backoff while
  the market is away, resuming after the last clock position seen; a market that no longer has
  that position (it restarted) is followed from its clock.

No gRPC here: the market's client is passed in.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import structlog

from qtmesh.base.bars import Bar, Snapshot
from qtmesh.base.errors import InvalidArgument, MeshError
from qtmesh.base.hub import Hub, Subscription
from qtmesh.base.reconnect import follow_forever
from world_model.engine import MARKET, Subject
from world_model.regimes import RegimeReport

_log = structlog.get_logger("world_model.watch")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegimeChange:
    """One event of WatchRegimes: the market's regime changed (or was found) at
    ``market_time``."""

    sequence: int
    market_time: int  # Unix nanoseconds: the last bar of the model that showed it
    regime: str
    previous_regime: str  # "" on the first event since the world model started
    report: RegimeReport

    @property
    def probability(self) -> float:
        return self.report.probability

    @property
    def is_change(self) -> bool:
        """False for the first event, which reports the regime found rather than a change."""
        return bool(self.previous_regime) and self.previous_regime != self.regime


class RegimeLog:
    """The last ``keep`` regime events in memory, offered to live subscribers through a
    :class:`~qtmesh.base.hub.Hub` (a subscriber more than ``queue_size`` events behind is cut
    off and resumes from the log)."""

    def __init__(self, *, keep: int, queue_size: int) -> None:
        if keep < 1 or queue_size < 1:
            raise ValueError("keep and queue_size must be at least 1")
        self.queue_size = queue_size
        self._events: collections.deque[RegimeChange] = collections.deque(maxlen=keep)
        self._last = 0
        self._hub: Hub[RegimeChange] = Hub(queue_size=queue_size)

    def append(
        self, *, market_time: int, regime: str, previous: str, report: RegimeReport
    ) -> RegimeChange:
        self._last += 1
        event = RegimeChange(
            sequence=self._last,
            market_time=market_time,
            regime=regime,
            previous_regime=previous,
            report=report,
        )
        self._events.append(event)
        self._hub.publish(event)
        return event

    @property
    def last_sequence(self) -> int:
        return self._last

    @property
    def oldest_sequence(self) -> int:
        """The oldest kept event's sequence (0 while none was logged)."""
        return self._events[0].sequence if self._events else 0

    @property
    def latest(self) -> RegimeChange | None:
        return self._events[-1] if self._events else None

    def after(self, sequence: int, limit: int) -> list[RegimeChange]:
        """At most ``limit`` kept events after ``sequence``, oldest first."""
        start = max(sequence + 1 - self.oldest_sequence, 0) if self._events else 0
        return [self._events[i] for i in range(start, min(start + limit, len(self._events)))]

    async def bounds(self) -> tuple[int, int]:
        return self.oldest_sequence, self._last

    async def page(self, after: int, limit: int) -> tuple[int, list[RegimeChange]]:
        return self.oldest_sequence, self.after(after, limit)

    @property
    def draining(self) -> bool:
        return self._hub.closed

    def subscribe(self) -> Subscription[RegimeChange]:
        return self._hub.subscribe()

    def unsubscribe(self, subscription: Subscription[RegimeChange]) -> None:
        self._hub.unsubscribe(subscription)

    def drain(self) -> None:
        """Ends every subscription (shutdown)."""
        self._hub.close_all()


class Detector(Protocol):
    """What the watcher asks (implemented by :class:`world_model.engine.WorldModel`)."""

    async def detect(self, subject: Subject, *, lookback: int = 0) -> RegimeReport: ...


class ClockMarket(Protocol):
    """The market's clock as the watcher follows it (implemented by MarketClient)."""

    async def snapshot(self, symbols: Sequence[str] = ()) -> Snapshot: ...

    def stream_bars(
        self, symbols: Sequence[str] = (), *, after_position: int | None = None
    ) -> AsyncIterator[tuple[int, int, list[Bar]]]: ...


class RegimeWatcher:
    """Detects the market's regime on the clock and logs its changes (see the module's rules)."""

    def __init__(
        self, model: Detector, market: ClockMarket, log: RegimeLog, *, interval: int
    ) -> None:
        if interval < 0:
            raise ValueError("interval must not be negative")
        self.log = log
        self._model = model
        self._market = market
        self._interval = interval
        self._after: int | None = None  # the last clock position seen
        self._detected_at: int | None = None  # the clock time of the last detection
        self.detections = 0

    async def step(self, clock_time: int) -> RegimeChange | None:
        """One clock step: detects if the interval has passed; the event logged, if any."""
        if self._detected_at is not None and clock_time - self._detected_at < self._interval:
            return None
        self._detected_at = clock_time
        self.detections += 1
        try:
            report = await self._model.detect(MARKET)
        except MeshError as exc:
            _log.warning("cannot detect the market's regime", error=str(exc))
            return None
        latest = self.log.latest
        previous = latest.regime if latest is not None else ""
        if report.regime == previous:
            return None
        event = self.log.append(
            market_time=report.as_of_time, regime=report.regime, previous=previous, report=report
        )
        _log.info(
            "market regime changed" if previous else "market regime found",
            regime=report.regime,
            previous=previous,
            probability=round(report.probability, 3),
            sequence=event.sequence,
        )
        return event

    async def _follow(self, connected: Callable[[], None]) -> None:
        snapshot = await self._market.snapshot()
        connected()
        symbols = [snapshot.quotes[0].bar.symbol] if snapshot.quotes else []
        if self._after is None and snapshot.position > 0:
            self._after = snapshot.position - 1  # the first step read is the clock's own
        try:
            async for position, clock_time, _bars in self._market.stream_bars(
                symbols, after_position=self._after
            ):
                self._after = position
                await self.step(clock_time)
        except InvalidArgument as exc:
            if exc.field != "after_position":
                raise
            # The market restarted behind the position: follow it from its clock.
            self._after = None
            self._detected_at = None

    async def run(self, *, initial_backoff: float, max_backoff: float) -> None:
        """Runs until cancelled."""
        await follow_forever(
            self._follow,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            log=_log,
            what="following the market clock for the market's regime",
        )
