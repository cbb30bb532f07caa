"""The meta section of `make demo`: one meta update after the evolution, showing the decisions
taken and the parameters that moved, with their reasons.

:func:`show` needs a running mesh with the market and meta services. It runs a small paper fleet
on the market's bars, every variant on every symbol: moving-average crossovers, mean reversion
and a channel breakout. The fleet's trades of the last 24 h are the meta update's trades; each
variant's record over the week before is its evaluation (generation 1, as the evolution's newest
offspring), unless the caller passes the evolution's own evaluations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from market.client import MarketClient
from meta.client import MetaClient
from meta.engine import UpdateResult
from meta.model import NANOS_PER_DAY, Evaluation, Trade
from qtmesh.base.bars import BarSeries, format_time
from qtmesh.base.genome import StrategyFamily, StrategyStage
from qtmesh.runtime.channels import open_channel

EVALUATION_DAYS = 7
SHOWN_WEIGHT_MOVES = 6


@dataclasses.dataclass(frozen=True)
class PaperStrategy:
    id: str
    family: StrategyFamily
    window: int
    parameter: float

    def positions(self, close: np.ndarray) -> np.ndarray:
        """-1, 0 or +1 per bar: the position held from that bar's close to the next."""
        if self.family is StrategyFamily.MA_CROSSOVER:
            fast, slow = (
                _rolling_mean(close, int(self.parameter)),
                _rolling_mean(close, self.window),
            )
            return np.nan_to_num(np.sign(fast - slow))
        if self.family is StrategyFamily.MEAN_REVERSION:
            mean = _rolling_mean(close, self.window)
            std = np.sqrt(np.maximum(_rolling_mean(close**2, self.window) - mean**2, 1e-18))
            z = (close - mean) / std
            # Enter against a band breach, hold until the price crosses its mean.
            signal = np.where(z > self.parameter, -1.0, np.where(z < -self.parameter, 1.0, np.nan))
            signal[np.abs(z) < 0.1] = 0.0
            return _hold(signal)
        high = _rolling_extreme(close, self.window, np.max)
        low = _rolling_extreme(close, self.window, np.min)
        return _hold(np.where(close > high, 1.0, np.where(close < low, -1.0, np.nan)))


FLEET = (
    PaperStrategy("ma-30-120", StrategyFamily.MA_CROSSOVER, 120, 30),
    PaperStrategy("ma-60-360", StrategyFamily.MA_CROSSOVER, 360, 60),
    PaperStrategy("mr-120-2.0", StrategyFamily.MEAN_REVERSION, 120, 2.0),
    PaperStrategy("mr-240-2.5", StrategyFamily.MEAN_REVERSION, 240, 2.5),
    PaperStrategy("bo-240", StrategyFamily.BREAKOUT, 240, 0.0),
)


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    sums = np.cumsum(np.concatenate([[0.0], values]))
    out = np.full(values.shape, np.nan)
    out[window - 1 :] = (sums[window:] - sums[:-window]) / window
    return out


def _rolling_extreme(values: np.ndarray, window: int, how) -> np.ndarray:
    """The extreme of the ``window`` bars *before* each bar (NaN until there are that many)."""
    out = np.full(values.shape, np.nan)
    if values.size > window:
        view = np.lib.stride_tricks.sliding_window_view(values, window)[:-1]
        out[window:] = how(view, axis=1)
    return out


def _hold(signal: np.ndarray) -> np.ndarray:
    """Carries the last signal forward over NaN (no new signal), starting flat."""
    index = np.where(np.isnan(signal), 0, np.arange(signal.size))
    np.maximum.accumulate(index, out=index)
    held = signal[index]
    return np.nan_to_num(held)


def trades_of(strategy: PaperStrategy, series: BarSeries) -> list[Trade]:
    """Every closed trade: a run of one non-zero position, entered and left at bar closes."""
    close = series.close
    position = strategy.positions(close)
    bar_return = np.concatenate([close[1:] / close[:-1] - 1, [0.0]])
    changes = np.flatnonzero(np.diff(position)) + 1
    starts = np.concatenate([[0], changes])
    ends = np.concatenate([changes, [position.size]])
    trades = []
    for start, end in zip(starts, ends, strict=True):
        side = position[start]
        if side == 0 or end >= position.size:
            continue  # flat, or still open at the clock
        value = float(np.prod(1 + side * bar_return[start:end]) - 1)
        trades.append(
            Trade(
                strategy_id=strategy.id,
                symbol=series.symbol,
                sector=series.sector,
                entry_time=int(series.time[start]),
                exit_time=int(series.time[end]),
                return_fraction=value,
            )
        )
    return trades


def evaluation_of(strategy: PaperStrategy, trades: Sequence[Trade], *, at: int) -> Evaluation:
    """A week's record as an evaluation. The composite score is a stand-in for SESA's (a
    logistic of the annualised trade Sharpe); strategies that lost money are rejected."""
    returns = np.array([t.return_fraction for t in trades])
    sharpe = 0.0
    if returns.size >= 2 and returns.std(ddof=1) > 0:
        per_year = returns.size * 365 / EVALUATION_DAYS
        sharpe = float(returns.mean() / returns.std(ddof=1) * math.sqrt(per_year))
    return Evaluation(
        strategy_id=strategy.id,
        family=strategy.family,
        generation=1,
        composite_score=1 / (1 + math.exp(-sharpe / 4)),
        sharpe_ratio=sharpe,
        trade_count=int(returns.size),
        stage=StrategyStage.PRODUCTION if returns.sum() > 0 else StrategyStage.REJECTED,
        evaluated_time=at,
    )


async def paper_fleet(market: MarketClient) -> tuple[int, list[Trade], list[Evaluation]]:
    """The clock, the fleet's trades of the last 24 h and its evaluations over the week before."""
    clock = (await market.snapshot()).clock_time
    symbols = await market.list_symbols()
    lookback = (EVALUATION_DAYS + 1) * 1440
    series = await asyncio.gather(
        *(market.bars(s.symbol, lookback=min(lookback, s.bar_count)) for s in symbols)
    )
    day_start, week_start = clock - NANOS_PER_DAY, clock - (EVALUATION_DAYS + 1) * NANOS_PER_DAY
    recent: list[Trade] = []
    evaluations = []
    for strategy in FLEET:
        fleet_trades = [t for s in series for t in trades_of(strategy, s)]
        recent += [t for t in fleet_trades if t.exit_time > day_start]
        week = [t for t in fleet_trades if week_start < t.exit_time <= day_start]
        evaluations.append(evaluation_of(strategy, week, at=clock))
    return clock, recent, evaluations


def decisions_table(result: UpdateResult) -> Table:
    table = Table(title="Meta decisions", show_lines=True)
    for column, kwargs in (
        ("decision", {}),
        ("rule", {}),
        ("confidence", {"justify": "right"}),
        ("rationale", {"ratio": 1}),
    ):
        table.add_column(column, **kwargs)
    for d in result.decisions:
        table.add_row(
            d.type.name.replace("_", " ").lower(),
            d.rule,
            f"{d.confidence:.2f}",
            escape(d.rationale),
        )
    return table


def changes_table(result: UpdateResult) -> Table:
    table = Table(title=f"Parameters that moved (version {result.parameters.version})")
    for column, kwargs in (
        ("parameter", {}),
        ("old", {"justify": "right"}),
        ("new", {"justify": "right"}),
        ("reason", {"ratio": 1}),
    ):
        table.add_column(column, **kwargs)
    scalars = [c for c in result.changes if "[" not in c.name]
    weights = sorted(
        (c for c in result.changes if "[" in c.name),
        key=lambda c: -abs(c.new_value - c.old_value),
    )
    for c in [*scalars, *weights[:SHOWN_WEIGHT_MOVES]]:
        table.add_row(escape(c.name), f"{c.old_value:.5g}", f"{c.new_value:.5g}", escape(c.reason))
    if len(weights) > SHOWN_WEIGHT_MOVES:
        table.add_row(f"... {len(weights) - SHOWN_WEIGHT_MOVES} more weights", "", "", "")
    return table


async def show(
    console: Console,
    addresses: Mapping[str, str],
    *,
    evaluations: Sequence[Evaluation] | None = None,
) -> UpdateResult:
    """Runs one meta update on the paper fleet's last day and prints what it decided and moved.

    ``evaluations`` (e.g. the evolution's) replace the fleet's own when given."""
    async with (
        open_channel(addresses["market"]) as market_channel,
        open_channel(addresses["meta"]) as meta_channel,
    ):
        clock, trades, fleet_evaluations = await paper_fleet(MarketClient(market_channel))
        meta = MetaClient(meta_channel)
        chosen = list(evaluations) if evaluations is not None else fleet_evaluations
        result = await meta.update(trades, chosen, now=clock)
        log = await meta.trials()
    console.rule("Meta-learning OS and meta policy")
    console.print(
        f"Meta update at {format_time(clock)}: {len(trades)} trades of {len(FLEET)} paper "
        f"strategies over the last 24 h, {len(chosen)} evaluations.",
        highlight=False,
    )
    console.print(decisions_table(result))
    if result.adapted:
        console.print(changes_table(result))
    console.print(f"Adaptation: {result.detail}.", highlight=False)
    console.print(
        f"SESA tuner: {log.total_trials} mutation setting(s) tried, {log.total_evaluations} "
        f"offspring credited; current {result.parameters.mutation}.",
        highlight=False,
    )
    return result
