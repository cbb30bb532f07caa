"""The replay engine: bars of many symbols on one timeline, and a clock moving along it.

The timeline is the sorted union of every symbol's bar times; ``position`` counts the timeline
steps revealed, so the clock stands at ``timeline[position - 1]``. Bars after the clock are the
future: no query returns them. The past is immutable (new bars must be later than the clock), so
positions at or before the clock never move and a stream can be resumed by position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from qtmesh.base.bars import (
    NANOS_PER_YEAR,
    Bar,
    BarSeries,
    Quote,
    SectorSummary,
    Snapshot,
    SymbolInfo,
    format_time,
    validate_bars,
    validate_sector,
    validate_symbol,
)
from qtmesh.base.errors import InvalidArgument

DAY_NANOS = 86_400 * 10**9


@dataclasses.dataclass(frozen=True)
class AdvanceResult:
    position: int
    clock_time: int
    revealed_bars: int
    at_end: bool


@dataclasses.dataclass(frozen=True)
class IngestResult:
    bars_added: int
    new_symbols: tuple[str, ...]
    length: int


class Replay:
    """Bars of several symbols and the replay clock over them."""

    def __init__(self, series: Iterable[BarSeries], *, start_position: int) -> None:
        self._series: dict[str, BarSeries] = {}
        for s in series:
            if s.symbol in self._series:
                raise InvalidArgument(s.symbol, "symbol appears twice")
            self._series[s.symbol] = s
        if not self._series:
            raise InvalidArgument("series", "no symbols given")
        self._timeline = np.unique(np.concatenate([s.time for s in self._series.values()]))
        if not 1 <= start_position <= len(self._timeline):
            raise InvalidArgument(
                "start_position", f"must be in 1..{len(self._timeline)} (got {start_position})"
            )
        self._position = start_position

    # -- clock ---------------------------------------------------------------------------

    @property
    def position(self) -> int:
        return self._position

    @property
    def length(self) -> int:
        return int(self._timeline.shape[0])

    @property
    def clock_time(self) -> int:
        return int(self._timeline[self._position - 1])

    def time_at(self, position: int) -> int:
        return int(self._timeline[position - 1])

    def advance(self, steps: int) -> AdvanceResult:
        if steps < 1:
            raise InvalidArgument("steps", f"must be at least 1 (got {steps})")
        remaining = self.length - self._position
        if steps > remaining:
            raise InvalidArgument(
                "steps",
                f"{steps} steps would pass the end of the data: {remaining} remain after "
                f"position {self._position} of {self.length}",
            )
        before = self.clock_time
        self._position += steps
        after = self.clock_time
        revealed = sum(
            int(np.searchsorted(s.time, after, "right") - np.searchsorted(s.time, before, "right"))
            for s in self._series.values()
        )
        return AdvanceResult(self._position, after, revealed, self._position == self.length)

    # -- queries -------------------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        return list(self._series)

    def sector_of(self, symbol: str, *, field: str = "symbol") -> str:
        return self._get(symbol, field).sector

    def symbol_infos(self, sector: str = "") -> list[SymbolInfo]:
        infos = []
        for s in self._series.values():
            if sector and s.sector != sector:
                continue
            visible = self._visible(s)
            if visible == 0:
                continue
            infos.append(
                SymbolInfo(s.symbol, s.sector, visible, int(s.time[0]), int(s.time[visible - 1]))
            )
        if sector and not infos and sector not in {s.sector for s in self._series.values()}:
            raise InvalidArgument("sector", f"unknown sector {sector!r}; known: {self.sectors}")
        return infos

    @property
    def sectors(self) -> list[str]:
        return sorted({s.sector for s in self._series.values()})

    def window(
        self,
        symbol: str,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        lookback: int = 0,
    ) -> tuple[int, int]:
        """Index range ``[first, stop)`` into ``symbol``'s bars for a window at or before the clock.

        ``start_time`` and ``lookback`` are exclusive; neither means from the first bar.
        """
        series = self._get(symbol, "symbol")
        clock = self.clock_time
        if end_time is None:
            end_time = clock
        elif end_time > clock:
            raise InvalidArgument(
                "end_time",
                f"{format_time(end_time)} is after the replay clock {format_time(clock)}; "
                "bars after the clock are not served",
            )
        stop = int(np.searchsorted(series.time, end_time, "right"))
        if lookback < 0:
            raise InvalidArgument("lookback", f"must not be negative (got {lookback})")
        if lookback and start_time is not None:
            raise InvalidArgument("lookback", "give either start_time or lookback, not both")
        if lookback:
            if lookback > stop:
                raise InvalidArgument(
                    "lookback",
                    f"{lookback} bars requested but {symbol} has {stop} up to "
                    f"{format_time(end_time)}",
                )
            return stop - lookback, stop
        if start_time is None:
            return 0, stop
        if start_time > end_time:
            raise InvalidArgument(
                "start_time",
                f"{format_time(start_time)} is after end_time {format_time(end_time)}",
            )
        return int(np.searchsorted(series.time, start_time, "left")), stop

    def bars(self, symbol: str, first: int, stop: int) -> BarSeries:
        """Bars ``[first, stop)`` of ``symbol``; the range must lie at or before the clock."""
        series = self._get(symbol, "symbol")
        if not 0 <= first <= stop <= self._visible(series):
            raise InvalidArgument("range", f"[{first}, {stop}) is outside the visible bars")
        return series.slice(first, stop)

    def loaded_bars(self, symbol: str) -> BarSeries:
        """Every bar of ``symbol`` the replay holds, those after the clock included: for causal
        computations (the fleet's backtests) that read nothing after the clock from what they
        compute. Never served."""
        return self._get(symbol, "symbol")

    def snapshot(self, symbols: Sequence[str] = ()) -> Snapshot:
        chosen = [self._get(sym, f"symbols[{i}]") for i, sym in enumerate(symbols)] or list(
            self._series.values()
        )
        quotes = [q for q in (self._quote(s) for s in chosen) if q is not None]
        by_sector: dict[str, list[Quote]] = {}
        for q in quotes:
            by_sector.setdefault(q.sector, []).append(q)
        sectors = tuple(
            SectorSummary(
                sector,
                len(members),
                float(np.mean([q.return_24h for q in members])),
                float(np.mean([q.volatility_24h for q in members])),
            )
            for sector, members in sorted(by_sector.items())
        )
        return Snapshot(self._position, self.length, self.clock_time, tuple(quotes), sectors)

    def bars_at(self, position: int, symbols: Sequence[str] = ()) -> list[Bar]:
        """The bars whose time is the timeline time at ``position`` (for streaming)."""
        if not 1 <= position <= self._position:
            raise InvalidArgument("position", f"must be in 1..{self._position} (got {position})")
        t = self.time_at(position)
        chosen = [self._series[s] for s in symbols] if symbols else self._series.values()
        found = []
        for s in chosen:
            i = int(np.searchsorted(s.time, t, "left"))
            if i < len(s) and s.time[i] == t:
                found.append(_bar(s, i))
        return found

    def check_symbols(self, symbols: Sequence[str], *, field: str = "symbols") -> None:
        for i, symbol in enumerate(symbols):
            self._get(symbol, f"{field}[{i}]")

    # -- ingestion -----------------------------------------------------------------------

    def ingest(self, batch: Sequence[BarSeries]) -> IngestResult:
        """Validates every series first, then adds them all, or nothing.

        Each bar must be later than the clock and than the symbol's last bar; a new symbol
        needs a sector, a known one keeps its sector.
        """
        if not batch:
            raise InvalidArgument("series", "no series given")
        seen: set[str] = set()
        clock = self.clock_time
        for k, s in enumerate(batch):
            prefix = f"series[{k}]"
            validate_symbol(s.symbol, field=f"{prefix}.symbol")
            if s.symbol in seen:
                raise InvalidArgument(f"{prefix}.symbol", f"{s.symbol} appears twice in the batch")
            seen.add(s.symbol)
            known = self._series.get(s.symbol)
            if known is None:
                validate_sector(s.sector, field=f"{prefix}.sector")
            elif s.sector and s.sector != known.sector:
                raise InvalidArgument(
                    f"{prefix}.sector",
                    f"{s.symbol} is in sector {known.sector!r}, not {s.sector!r}",
                )

            def where(column: str, index: int | None, prefix: str = prefix) -> str:
                name = "time_unix_nanos" if column == "time" else column
                return f"{prefix}.{name}" if index is None else f"{prefix}.{name}[{index}]"

            validate_bars(s, where)
            floor = max(clock, int(known.time[-1])) if known is not None else clock
            if s.time[0] <= floor:
                reason = (
                    f"the replay clock {format_time(clock)}"
                    if floor == clock
                    else f"the last bar of {s.symbol} at {format_time(floor)}"
                )
                raise InvalidArgument(
                    where("time", 0),
                    f"{format_time(s.time[0])} is not after {reason}; the past is immutable",
                )
        new_symbols = []
        for s in batch:
            known = self._series.get(s.symbol)
            if known is None:
                self._series[s.symbol] = s
                new_symbols.append(s.symbol)
            else:
                self._series[s.symbol] = known.append(s)
        self._timeline = np.union1d(self._timeline, np.concatenate([s.time for s in batch]))
        return IngestResult(sum(len(s) for s in batch), tuple(new_symbols), self.length)

    # -- internals -----------------------------------------------------------------------

    def _get(self, symbol: str, field: str) -> BarSeries:
        try:
            return self._series[symbol]
        except KeyError:
            known = ", ".join(self._series) if len(self._series) <= 20 else f"{len(self._series)}"
            raise InvalidArgument(field, f"unknown symbol {symbol!r} (known: {known})") from None

    def _visible(self, series: BarSeries) -> int:
        return int(np.searchsorted(series.time, self.clock_time, "right"))

    def _quote(self, series: BarSeries) -> Quote | None:
        stop = self._visible(series)
        if stop == 0:
            return None
        last = stop - 1
        since = int(np.searchsorted(series.time, series.time[last] - DAY_NANOS, "right"))
        base = max(since - 1, 0)
        day_return = float(series.close[last] / series.close[base] - 1)
        closes = series.close[base:stop]
        if closes.size > 2:
            spacing = float(np.median(np.diff(series.time[base:stop])))
            per_bar = float(np.std(np.diff(np.log(closes)), ddof=1))
            vol = per_bar * float(np.sqrt(NANOS_PER_YEAR / spacing))
        else:
            vol = 0.0
        return Quote(series.sector, _bar(series, last), day_return, vol)


def _bar(series: BarSeries, i: int) -> Bar:
    return Bar(
        series.symbol,
        int(series.time[i]),
        float(series.open[i]),
        float(series.high[i]),
        float(series.low[i]),
        float(series.close[i]),
        float(series.volume[i]),
    )
