"""A seeded multi-sector synthetic market: regime switches, volatility clustering and jumps.

The embedded default when no data is given. Per bar, for a sector with annual volatility
``sigma`` and drift ``mu``:

* a market-wide regime (bull, bear, crisis) follows a Markov chain with geometric durations;
  each regime adds an annual drift (scaled by the sector's volatility) and multiplies volatility;
* volatility clusters: log-volatility of each sector is a stationary AR(1) with half-life
  ``vol_half_life_bars`` and standard deviation ``vol_of_vol``; a diurnal cycle peaks at 15:00 UTC;
* log return = (mu + regime drift) dt - var/2 + sector shock * beta + idiosyncratic shock + jumps,
  where jumps arrive as a Poisson process (three times as often in a crisis) with normal sizes;
* bars: open is the previous close, high and low extend beyond open/close by a half-normal
  excursion, volume grows with the absolute return.

The market trades around the clock (like crypto), one bar every ``bar_seconds``. Everything is
drawn from ``numpy.random.default_rng(seed)``: the same spec gives the same bars.

A ``noise`` market is the null hypothesis a strategy should find nothing in: no regimes (regime
drift 0, volatility and jump multipliers 1, its ``regimes`` are -1 throughout), no sector drift,
and jumps of mean zero; volatility clustering, the diurnal cycle, sector correlation and jump
arrivals stay as above.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np

from qtmesh.base.bars import BarSeries, make_series

SECONDS_PER_YEAR = 365 * 24 * 3600
DEFAULT_START = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp()) * 10**9


@dataclasses.dataclass(frozen=True, kw_only=True)
class SectorProfile:
    name: str
    symbols: tuple[str, ...]
    annual_volatility: float
    annual_drift: float
    jumps_per_day: float
    jump_stddev: float
    start_price: float
    volume_per_bar: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Regime:
    name: str
    annual_drift: float
    volatility_multiplier: float
    mean_duration_days: float
    jump_multiplier: float


DEFAULT_SECTORS = (
    SectorProfile(
        name="Tech",
        symbols=("ORBT", "NOVA", "QBIT"),
        annual_volatility=0.30,
        annual_drift=0.12,
        jumps_per_day=0.5,
        jump_stddev=0.010,
        start_price=180.0,
        volume_per_bar=12_000,
    ),
    SectorProfile(
        name="Energy",
        symbols=("PTRL", "SOLR"),
        annual_volatility=0.35,
        annual_drift=0.05,
        jumps_per_day=0.4,
        jump_stddev=0.012,
        start_price=75.0,
        volume_per_bar=9_000,
    ),
    SectorProfile(
        name="Crypto",
        symbols=("BTCX", "ETHX"),
        annual_volatility=0.75,
        annual_drift=0.20,
        jumps_per_day=1.5,
        jump_stddev=0.020,
        start_price=9_000.0,
        volume_per_bar=300,
    ),
    SectorProfile(
        name="Financials",
        symbols=("BANK", "INSR"),
        annual_volatility=0.25,
        annual_drift=0.07,
        jumps_per_day=0.3,
        jump_stddev=0.008,
        start_price=95.0,
        volume_per_bar=8_000,
    ),
)

REGIMES = (
    Regime(
        name="bull",
        annual_drift=0.30,
        volatility_multiplier=0.85,
        mean_duration_days=8.0,
        jump_multiplier=1.0,
    ),
    Regime(
        name="bear",
        annual_drift=-0.25,
        volatility_multiplier=1.25,
        mean_duration_days=5.0,
        jump_multiplier=1.5,
    ),
    Regime(
        name="crisis",
        annual_drift=-1.50,
        volatility_multiplier=2.50,
        mean_duration_days=1.0,
        jump_multiplier=3.0,
    ),
)

# Where a regime goes when it ends (rows: from; columns: to; the diagonal is the duration).
REGIME_EXITS = np.array([[0.0, 0.8, 0.2], [0.7, 0.0, 0.3], [0.4, 0.6, 0.0]])


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticMarketSpec:
    seed: int = 7
    days: int = 60
    bar_seconds: int = 60
    start_time_ns: int = DEFAULT_START
    sectors: tuple[SectorProfile, ...] = DEFAULT_SECTORS
    vol_of_vol: float = 0.5
    vol_half_life_bars: float = 720.0
    idiosyncratic_share: float = 0.35
    noise: bool = False  # zero drift, no regimes (module docstring)

    @property
    def bar_count(self) -> int:
        return self.days * 86_400 // self.bar_seconds


@dataclasses.dataclass(frozen=True)
class SyntheticMarket:
    series: tuple[BarSeries, ...]
    # Index into REGIMES for every bar (the ground truth a regime detector should find); -1 in a
    # noise market.
    regimes: np.ndarray


def generate(spec: SyntheticMarketSpec | None = None) -> SyntheticMarket:
    """Draws the whole market of ``spec`` (vectorised; about 0.1 s for the 60-day default)."""
    spec = spec or SyntheticMarketSpec()
    rng = np.random.default_rng(spec.seed)
    n = spec.bar_count
    bars_per_day = 86_400 / spec.bar_seconds
    dt = spec.bar_seconds / SECONDS_PER_YEAR
    time = spec.start_time_ns + np.arange(n, dtype=np.int64) * spec.bar_seconds * 10**9
    if spec.noise:
        regimes = np.full(n, -1, dtype=np.int8)
        regime_drift, regime_vol, regime_jumps = np.zeros(n), np.ones(n), np.ones(n)
    else:
        regimes = _regime_path(rng, n, bars_per_day)
        regime_drift = np.array([r.annual_drift for r in REGIMES])[regimes]
        regime_vol = np.array([r.volatility_multiplier for r in REGIMES])[regimes]
        regime_jumps = np.array([r.jump_multiplier for r in REGIMES])[regimes]
    jump_bias = 0.0 if spec.noise else -0.2
    hour = (time // 10**9 % 86_400) / 3600
    diurnal = 1 + 0.25 * np.cos(2 * np.pi * (hour - 15) / 24)

    # scipy.signal costs a process 0.6 s to import: only a process that generates bars pays it.
    from scipy.signal import lfilter

    series: list[BarSeries] = []
    for sector in spec.sectors:
        phi = 0.5 ** (1 / spec.vol_half_life_bars)
        log_vol = lfilter(
            [spec.vol_of_vol * np.sqrt(1 - phi**2)], [1, -phi], rng.standard_normal(n)
        )
        sigma = (
            sector.annual_volatility
            * regime_vol
            * np.exp(log_vol - spec.vol_of_vol**2 / 2)
            * diurnal
            * np.sqrt(dt)
        )
        annual_drift = 0.0 if spec.noise else sector.annual_drift
        drift = (annual_drift + regime_drift * sector.annual_volatility / 0.30) * dt
        common_shock = rng.standard_normal(n)
        sector_jumps = _jumps(rng, n, sector, regime_jumps / bars_per_day, jump_bias)
        for symbol in sector.symbols:
            beta = rng.uniform(0.8, 1.2)
            idio = np.sqrt(spec.idiosyncratic_share)
            systematic = np.sqrt(1 - spec.idiosyncratic_share)
            shock = beta * systematic * common_shock + idio * rng.standard_normal(n)
            own_jumps = _jumps(rng, n, sector, 0.3 * regime_jumps / bars_per_day, jump_bias)
            returns = drift - 0.5 * sigma**2 + sigma * shock + beta * sector_jumps + own_jumps
            start = sector.start_price * rng.uniform(0.5, 2.0)
            close = start * np.exp(np.cumsum(returns))
            open_ = np.concatenate([[start], close[:-1]])
            excursion = 0.6 * sigma
            high = np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal(n)) * excursion)
            low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(n)) * excursion)
            activity = 0.5 + np.abs(returns) / sigma
            volume = np.round(
                sector.volume_per_bar * np.exp(0.4 * rng.standard_normal(n)) * activity * diurnal
            )
            series.append(
                make_series(
                    symbol,
                    sector.name,
                    time=time,
                    open=open_,
                    high=high,
                    low=low,
                    close=close,
                    volume=volume,
                )
            )
    return SyntheticMarket(series=tuple(series), regimes=regimes)


def _regime_path(rng: np.random.Generator, n: int, bars_per_day: float) -> np.ndarray:
    path = np.empty(n, dtype=np.int8)
    state = 0
    i = 0
    while i < n:
        mean_bars = REGIMES[state].mean_duration_days * bars_per_day
        duration = int(rng.geometric(1 / mean_bars))
        path[i : i + duration] = state
        i += duration
        state = int(rng.choice(len(REGIMES), p=REGIME_EXITS[state]))
    return path


def _jumps(
    rng: np.random.Generator, n: int, sector: SectorProfile, intensity: np.ndarray, bias: float
) -> np.ndarray:
    """Jumps of ``bias`` x jump_stddev mean each (the default market's are negative)."""
    counts = rng.poisson(sector.jumps_per_day * intensity)
    sizes = rng.normal(bias * sector.jump_stddev * counts, sector.jump_stddev * np.sqrt(counts))
    return np.where(counts > 0, sizes, 0.0)
