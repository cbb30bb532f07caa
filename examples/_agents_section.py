"""The demo's section on the world model and the memory engine, for the current replayed market.

World model: each sector's regime, its exposure recommendations and a one-day scenario per
sector. Memory engine: episodes backfilled from the market's history (see
:func:`backfill_episodes`), what they add up to per regime and sector, and what memory recommends
for today's contexts.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from market.client import MarketClient
from market.replay import Replay
from memory.advice import decision_text
from memory.client import MemoryClient
from memory.context import sector_features
from memory.episodes import Episode
from qtmesh.base.bars import BarSeries
from qtmesh.base.contract import AdjustExposure, AgentContext, Recommendation
from qtmesh.base.errors import AlreadyExists
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import open_channel
from world_model.client import WorldModelClient

BARS_PER_DAY = 1440
STEP_BARS = 360  # one decision every six hours
HISTORY_DAYS = 7
SCENARIO_HORIZON = BARS_PER_DAY
SCENARIO_PATHS = 2000
EXPOSURE_CHOICES = (0.8, None, 1.25)  # None: hold


async def show(console: Console, addresses: Mapping[str, str]) -> None:
    """Prints the section; needs the market, memory and world-model services at ``addresses``."""
    async with (
        open_channel(addresses["market"]) as market_channel,
        open_channel(addresses["world-model"]) as world_channel,
        open_channel(addresses["memory"]) as memory_channel,
    ):
        market = MarketClient(market_channel)
        snapshot = await market.snapshot()
        context = AgentContext(
            cycle_id="demo", as_of_time=snapshot.clock_time, market_position=snapshot.position
        )
        sectors = [s.sector for s in snapshot.sectors]

        console.rule("World model")
        world = WorldModelClient(world_channel)
        reports = await asyncio.gather(*(world.detect_regime(sector=s) for s in sectors))
        console.print(_regime_table(reports))
        world_agent = AgentClient(world_channel, name="world-model")
        _print_recommendations(console, "world-model", await world_agent.recommend(context))
        scenarios = await asyncio.gather(
            *(
                world.simulate(
                    sector=s,
                    horizon=SCENARIO_HORIZON,
                    num_paths=SCENARIO_PATHS,
                    seed=1,
                    regime_conditioned=True,
                )
                for s in sectors
            )
        )
        console.print(_scenario_table(scenarios))

        console.rule("Memory engine")
        memory = MemoryClient(memory_channel)
        series = await _history(market)
        episodes = backfill_episodes(series, rng=np.random.default_rng(7))
        stored = 0
        for episode in episodes:
            try:
                await memory.store(episode)
                stored += 1
            except AlreadyExists:
                pass  # remembered from an earlier run
        days = len(series[0]) / BARS_PER_DAY
        console.print(
            f"Backfilled {len(episodes)} episodes from {days:.0f} days of history "
            f"({stored} new): every 6 h per sector, a seeded exploratory exposure decision "
            "and its 6 h outcome."
        )
        console.print(_summary_table(await memory.summarize()))
        memory_agent = AgentClient(memory_channel, name="memory")
        _print_recommendations(console, "memory", await memory_agent.recommend(context))


async def _history(market: MarketClient) -> list[BarSeries]:
    infos = await market.list_symbols()
    lookback = min(HISTORY_DAYS * BARS_PER_DAY, min(i.bar_count for i in infos))
    return list(await asyncio.gather(*(market.bars(i.symbol, lookback=lookback) for i in infos)))


def backfill_episodes(series: Sequence[BarSeries], *, rng: np.random.Generator) -> list[Episode]:
    """Episodes from replaying ``series`` in-process: every ``STEP_BARS`` after the first day,
    per sector, the context is :func:`memory.context.sector_features` of the replay's
    snapshot, the decision an exploratory exposure factor drawn from ``rng`` (0.8, hold or 1.25)
    and the outcome the P&L of that change over the next step, (factor - 1) x the sector's
    return. The regime label is the tercile of the sector's 24 h volatility over the history.
    """
    replay = Replay(series, start_position=1)
    if replay.length <= BARS_PER_DAY + STEP_BARS:
        return []
    replay.advance(BARS_PER_DAY)
    snapshots = [replay.snapshot()]
    while replay.length - replay.position >= STEP_BARS:
        replay.advance(STEP_BARS)
        snapshots.append(replay.snapshot())
    sectors = sorted({s.sector for s in series})
    vols = {s: [_sector(snap, s).volatility_24h for snap in snapshots] for s in sectors}
    terciles = {s: np.quantile(v, [1 / 3, 2 / 3]) for s, v in vols.items()}
    episodes = []
    for before, after in itertools.pairwise(snapshots):
        closes_before = {q.bar.symbol: q.bar.close for q in before.quotes}
        for sector in sectors:
            moves = [
                q.bar.close / closes_before[q.bar.symbol] - 1
                for q in after.quotes
                if q.sector == sector
            ]
            factor = EXPOSURE_CHOICES[int(rng.integers(len(EXPOSURE_CHOICES)))]
            decision = decision_text(None if factor is None else AdjustExposure(sector, factor))
            outcome = 0.0 if factor is None else (factor - 1) * float(np.mean(moves))
            vol = _sector(before, sector).volatility_24h
            regime = ("calm", "normal", "volatile")[int(np.searchsorted(terciles[sector], vol))]
            episodes.append(
                Episode(
                    id=f"demo-{sector}-{before.clock_time}",
                    time=before.clock_time,
                    features=sector_features(before, sector),
                    decision=decision,
                    outcome=outcome,
                    regime=regime,
                    sector=sector,
                    tags={"source": "demo-backfill"},
                )
            )
    return episodes


def _sector(snapshot, sector: str):
    return next(s for s in snapshot.sectors if s.sector == sector)


def _regime_table(reports) -> Table:
    table = Table(title="Regimes (Gaussian HMM on each sector's equal-weighted index)")
    for column in ("sector", "regime", "p(calm)", "p(normal)", "p(volatile)", "bp/bar by state"):
        table.add_column(column, justify="left" if column in ("sector", "regime") else "right")
    for r in reports:
        colour = {"calm": "green", "normal": "yellow", "volatile": "red"}.get(r.regime, "white")
        table.add_row(
            r.sector,
            f"[{colour}]{r.regime}[/]",
            *(f"{p:.2f}" for p in r.probabilities),
            "/".join(f"{s * 1e4:.1f}" for s in r.stddevs),
        )
    return table


def _scenario_table(scenarios) -> Table:
    table = Table(
        title=f"One-day scenarios: {SCENARIO_PATHS} block-bootstrapped paths from the bars "
        "of each sector's current regime"
    )
    for column in ("sector", "regime", "5%", "25%", "median", "75%", "95%", "bars"):
        table.add_column(column, justify="left" if column in ("sector", "regime") else "right")
    for s in scenarios:
        table.add_row(
            s.sector,
            s.regime,
            *(f"{math.expm1(v):+.2%}" for v in s.terminal_returns),
            f"{s.history:,}",
        )
    return table


def _summary_table(summaries) -> Table:
    table = Table(title="Semantic memory: outcomes per regime and sector (x: exposure factor)")
    for column in ("regime", "sector", "episodes", "mean", "hit rate", "best decision"):
        table.add_column(column, justify="left" if column in ("regime", "sector") else "right")
    for s in summaries:
        best = max(s.decision_outcomes.items(), key=lambda item: item[1], default=("-", 0.0))
        table.add_row(
            s.regime,
            s.sector,
            str(s.episode_count),
            f"{s.mean_outcome:+.3%}",
            f"{s.hit_rate:.0%}",
            f"{_short(best[0])} ({best[1]:+.3%})",
        )
    return table


def _print_recommendations(
    console: Console, agent: str, recommendations: Sequence[Recommendation]
) -> None:
    if not recommendations:
        console.print(f"[bold]{agent}[/] recommends nothing for the current market.")
        return
    console.print(f"[bold]{agent}[/] recommends:")
    for r in recommendations:
        # Rationales and targets are agents' free text: brackets in them are not markup.
        console.print(
            f"  [{r.priority.name}] {escape(r.target)}: {_action(r)} "
            f"(confidence {r.confidence:.2f})\n    [dim]{escape(r.rationale)}[/]",
            highlight=False,
        )


def _action(r: Recommendation) -> str:
    if isinstance(r.parameters, AdjustExposure):
        return f"exposure x{r.parameters.factor:.2f}"
    return r.action_type.name.lower()


def _short(decision: str) -> str:
    """``adjust_exposure factor=0.8`` as ``x0.8``, for narrow tables."""
    return decision.replace("adjust_exposure factor=", "x")
