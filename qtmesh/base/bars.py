"""OHLCV bar series of one symbol, the validation every bar passes before it is stored, and what
the market reports about its bars: single bars, symbols and snapshots of the replay clock."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from qtmesh.base.errors import InvalidArgument

COLUMNS = ("time", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,31}$")
NANOS_PER_YEAR = 365 * 24 * 3600 * 10**9
# The spacing assumed for fewer than two bars: one minute, the synthetic market's.
DEFAULT_SPACING_SECONDS = 60.0

# Names a location for an error message: (column, bar index or None for the whole column)
# -> e.g. "series[0].high[12]" or "series[0].high".
Locator = Callable[[str, int | None], str]


@dataclasses.dataclass(frozen=True, eq=False)
class BarSeries:
    """Bars of one symbol, oldest first. ``time`` is bar start in int64 nanoseconds, UTC."""

    symbol: str
    sector: str
    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def slice(self, start: int, stop: int) -> BarSeries:
        return self._with({c: getattr(self, c)[start:stop] for c in COLUMNS})

    def append(self, other: BarSeries) -> BarSeries:
        return self._with(
            {c: np.concatenate([getattr(self, c), getattr(other, c)]) for c in COLUMNS}
        )

    def _with(self, columns: dict[str, np.ndarray]) -> BarSeries:
        return BarSeries(symbol=self.symbol, sector=self.sector, **columns)

    def equals(self, other: BarSeries) -> bool:
        return (
            self.symbol == other.symbol
            and self.sector == other.sector
            and all(np.array_equal(getattr(self, c), getattr(other, c)) for c in COLUMNS)
        )


@dataclasses.dataclass(frozen=True)
class Bar:
    symbol: str
    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclasses.dataclass(frozen=True)
class SymbolInfo:
    symbol: str
    sector: str
    bar_count: int
    first_time: int
    last_time: int


@dataclasses.dataclass(frozen=True)
class Quote:
    sector: str
    bar: Bar
    return_24h: float
    volatility_24h: float


@dataclasses.dataclass(frozen=True)
class SectorSummary:
    sector: str
    symbol_count: int
    return_24h: float
    volatility_24h: float


@dataclasses.dataclass(frozen=True)
class Snapshot:
    position: int
    length: int
    clock_time: int
    quotes: tuple[Quote, ...]
    sectors: tuple[SectorSummary, ...]


def make_series(
    symbol: str,
    sector: str,
    *,
    time: object,
    open: object,
    high: object,
    low: object,
    close: object,
    volume: object,
) -> BarSeries:
    """A BarSeries with columns converted to contiguous int64 / float64 arrays (not validated)."""
    return BarSeries(
        symbol=symbol,
        sector=sector,
        time=np.ascontiguousarray(time, dtype=np.int64),
        open=np.ascontiguousarray(open, dtype=np.float64),
        high=np.ascontiguousarray(high, dtype=np.float64),
        low=np.ascontiguousarray(low, dtype=np.float64),
        close=np.ascontiguousarray(close, dtype=np.float64),
        volume=np.ascontiguousarray(volume, dtype=np.float64),
    )


def spacing_seconds(time: np.ndarray) -> float:
    """The bars' typical spacing: the median gap between consecutive bars, in seconds. Gaps
    where the market is closed (nights, weekends) are the minority, so this is the spacing of
    bars in trading time: 60 for minute bars, 3,600 for hourly, 86,400 for daily."""
    if time.shape[0] < 2:
        return DEFAULT_SPACING_SECONDS
    return max(float(np.median(np.diff(time))) / 1e9, 1e-9)


def observed_bars_per_year(time: np.ndarray) -> float:
    """Bars per year as the data's own calendar has them: the bars observed per year of the
    span they cover. Daily equities give about 252, hourly FX about 6,200, the synthetic 24/7
    minute market 525,600, where the spacing alone would say 365 and 8,760 for the first two.
    Spans of a few weeks or less are noisy: pass the figure explicitly for those."""
    n = time.shape[0]
    span = float(time[-1] - time[0]) if n >= 2 else 0.0
    if span <= 0:
        return NANOS_PER_YEAR / (DEFAULT_SPACING_SECONDS * 1e9)
    return float((n - 1) * NANOS_PER_YEAR / span)


def format_time(nanos: int) -> str:
    """ISO 8601 UTC text of a nanosecond timestamp, for messages."""
    seconds, rest = divmod(int(nanos), 10**9)
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{rest:09d}Z".replace(".000000000Z", "Z")


def validate_symbol(symbol: str, *, field: str) -> None:
    if not SYMBOL_PATTERN.match(symbol):
        raise InvalidArgument(
            field,
            f"{symbol!r} is not a valid symbol (1-32 letters, digits, '.', '_', '-' or '/')",
        )


def validate_sector(sector: str, *, field: str) -> None:
    if not sector.strip() or len(sector) > 64:
        raise InvalidArgument(field, "a sector name of 1-64 characters is required")


def validate_bars(series: BarSeries, where: Locator) -> None:
    """Raises InvalidArgument naming the first bad bar: NaN or infinite values, non-positive
    prices, high below low or outside open/close, negative volume, or times that are not
    strictly increasing (unsorted or duplicated)."""
    n = len(series)
    if n == 0:
        raise InvalidArgument(where("time", None), "no bars given")
    for column in COLUMNS[1:]:
        if getattr(series, column).shape != (n,):
            raise InvalidArgument(
                where(column, None),
                f"has {getattr(series, column).shape[0]} values but time has {n}",
            )
    for column in COLUMNS[1:]:
        values = getattr(series, column)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise InvalidArgument(where(column, bad[0]), f"{values[bad[0]]} is not a finite number")
    for column in PRICE_COLUMNS:
        values = getattr(series, column)
        bad = np.flatnonzero(values <= 0)
        if bad.size:
            raise InvalidArgument(where(column, bad[0]), f"price {values[bad[0]]} is not positive")
    _first_violation(
        series.high < series.low,
        lambda i: (where("high", i), f"high {series.high[i]} is below low {series.low[i]}"),
    )
    _first_violation(
        series.high < np.maximum(series.open, series.close),
        lambda i: (
            where("high", i),
            f"high {series.high[i]} is below open {series.open[i]} or close {series.close[i]}",
        ),
    )
    _first_violation(
        series.low > np.minimum(series.open, series.close),
        lambda i: (
            where("low", i),
            f"low {series.low[i]} is above open {series.open[i]} or close {series.close[i]}",
        ),
    )
    _first_violation(
        series.volume < 0,
        lambda i: (where("volume", i), f"volume {series.volume[i]} is negative"),
    )
    steps = np.diff(series.time)
    _first_violation(
        steps == 0,
        lambda i: (
            where("time", i + 1),
            f"duplicated timestamp {format_time(series.time[i + 1])} (also bar {i})",
        ),
    )
    _first_violation(
        steps < 0,
        lambda i: (
            where("time", i + 1),
            f"{format_time(series.time[i + 1])} is before the previous bar "
            f"{format_time(series.time[i])}; timestamps must be sorted ascending",
        ),
    )


def _first_violation(mask: np.ndarray, describe: Callable[[int], tuple[str, str]]) -> None:
    bad = np.flatnonzero(mask)
    if bad.size:
        field, problem = describe(int(bad[0]))
        raise InvalidArgument(field, problem)
