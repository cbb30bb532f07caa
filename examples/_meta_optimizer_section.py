"""The meta optimizer section of `make demo`: a few replayed days of encrypted sector reports,
one optimization cycle (sector table, dominant sector, proposals with their rationale), the
ledger's verification, and the proposals executed on the paper fleet as the federation would.

:func:`show` needs a running mesh with the market, alpha-reporting and meta-optimizer services.
It advances the market's replay clock until ``days`` whole days have passed since the fleet's
deployment, waits (on the report stream, not a timer) until alpha-reporting has sealed every
sector's report of those days, and runs the cycle over exactly those days.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alpha_reporting.client import AlphaReportingClient
from alpha_reporting.report import date_of
from market.client import MarketClient
from market.fleet import FleetReport
from meta_optimizer.client import MetaOptimizerClient
from meta_optimizer.ledger import Cycle
from qtmesh.base.bars import format_time
from qtmesh.base.contract import Action, AgentContext, Recommendation
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import open_channel

STEPS_PER_ADVANCE = 1440

# Reports of the replayed days arrive within seconds; two minutes means they are not coming.
REPORT_TIMEOUT_SECONDS = 120.0


async def replay_days(market: MarketClient, days: int) -> tuple[datetime.date, datetime.date]:
    """Advances the clock until ``days`` whole days after the deployment are over (fewer if the
    data ends first); returns the first and last of them."""
    fleet = await market.fleet()
    if fleet.start_time is None:  # nothing traded since the deployment yet
        await market.advance(1)
        fleet = await market.fleet()
    first = date_of(fleet.start_time)
    target = first + datetime.timedelta(days=days)
    clock = fleet.clock_time
    while date_of(clock) < target:
        snapshot = await market.snapshot()
        remaining = snapshot.length - snapshot.position
        if remaining == 0:
            break
        clock = (await market.advance(min(STEPS_PER_ADVANCE, remaining))).clock_time
    return first, date_of(clock) - datetime.timedelta(days=1)


async def wait_for_reports(
    alpha: AlphaReportingClient,
    sectors: set[str],
    first: datetime.date,
    last: datetime.date,
    *,
    timeout: float = REPORT_TIMEOUT_SECONDS,
) -> int:
    """Waits until every sector's report of every day first..last is stored; their number.
    A demo must end: reports still missing after ``timeout`` seconds raise TimeoutError."""
    wanted = {
        (sector, (first + datetime.timedelta(days=k)).isoformat())
        for sector in sectors
        for k in range((last - first).days + 1)
    }
    seen: set[tuple[str, str]] = set()
    if not wanted:
        return 0

    async def watch() -> None:
        async for report in alpha.watch(after_sequence=0):
            seen.add((report.sector, report.trading_date))
            if wanted <= seen:
                return

    try:
        await asyncio.wait_for(watch(), timeout)
    except TimeoutError:
        missing = ", ".join(f"{sector} {day}" for sector, day in sorted(wanted - seen))
        raise TimeoutError(
            f"alpha stored no report for {missing} within {timeout:.0f} s; "
            "is the day reporter running?"
        ) from None
    return len(wanted)


def _percent(value: float) -> str:
    colour = "green" if value >= 0 else "red"
    return f"[{colour}]{value:+.2%}[/]"


def _t(value: float) -> str:
    return f"{value:+.2f}" if abs(value) != float("inf") else ("+inf" if value > 0 else "-inf")


def sector_table(cycle: Cycle) -> Table:
    table = Table(title=f"Alpha audit {cycle.start_date} .. {cycle.end_date} ({cycle.id})")
    for column in (
        "sector",
        "days",
        "ROI",
        "benchmark",
        "alpha",
        "mean alpha/day",
        "t",
        "p(>0)",
        "p(<0)",
        "volatility",
        "max DD",
        "fleet",
    ):
        table.add_column(column, justify="left" if column == "sector" else "right")
    for a in cycle.sectors:
        name = f"[bold]{a.sector}[/]" if a.sector == cycle.dominant_sector else a.sector
        table.add_row(
            name,
            str(a.report_count),
            _percent(a.roi),
            f"{a.benchmark_return:+.2%}",
            _percent(a.alpha),
            _percent(a.mean_daily_alpha),
            _t(a.alpha_t_stat),
            f"{a.p_value_positive:.3f}",
            f"{a.p_value_negative:.3f}",
            f"{a.volatility:.1%}",
            f"{a.max_drawdown:.2%}",
            str(a.fleet_size),
        )
    return table


def proposal_table(cycle: Cycle) -> Table:
    table = Table(title="Sovereign strategy proposals", show_lines=True)
    table.add_column("proposal")
    table.add_column("type")
    table.add_column("action")
    table.add_column("confidence", justify="right")
    table.add_column("rationale", ratio=1)
    for p in cycle.proposals:
        table.add_row(
            f"{p.id}\n#{p.ledger_index} {p.entry_hash[:10]}",
            p.type.name.replace("_", " ").lower(),
            escape(p.action),
            f"{p.confidence:.3f}",
            escape(p.rationale),
        )
    return table


def allocation_table(before: FleetReport, after: FleetReport) -> Table:
    table = Table(title="Paper fleet allocations (fraction of equity)")
    for column in ("sector", "before", "after"):
        table.add_column(column, justify="left" if column == "sector" else "right")
    old = {s.sector: s.allocation for s in before.sectors}
    for s in after.sectors:
        table.add_row(s.sector, f"{old[s.sector]:.1%}", f"{s.allocation:.1%}")
    for m in after.missions:
        if m.active:
            table.add_row(
                f"arb {m.mission.long_sector}/{m.mission.short_sector}",
                "",
                f"{m.mission.allocation:.1%} per leg",
            )
    return table


def as_action(r: Recommendation) -> Action:
    """The action the federation would execute for a recommendation it adopted."""
    return Action(
        id=r.id,
        priority=r.priority,
        target=r.target,
        parameters=r.parameters,
        confidence=r.confidence,
        rationale=r.rationale,
        source_agents=("meta-optimizer",),
        # The key the federation gives it: the fleet applies an intent once, whoever asks.
        idempotency_key=f"meta-optimizer/{r.intent_key}",
    )


async def show(
    console: Console, addresses: Mapping[str, str], *, days: int = 5, apply: bool = True
) -> Cycle:
    """Replays ``days`` days, runs one optimization cycle over their reports and prints it;
    with ``apply``, executes its proposals on the market's fleet."""
    async with (
        open_channel(addresses["market"]) as market_channel,
        open_channel(addresses["alpha-reporting"]) as alpha_channel,
        open_channel(addresses["meta-optimizer"]) as optimizer_channel,
    ):
        market, alpha = MarketClient(market_channel), AlphaReportingClient(alpha_channel)
        optimizer = MetaOptimizerClient(optimizer_channel)
        console.rule("Meta optimizer: alpha audit and sovereign proposals")
        first, last = await replay_days(market, days)
        before = await market.fleet()
        count = await wait_for_reports(alpha, {s.sector for s in before.sectors}, first, last)
        sealed = await alpha.reports(start_date=first.isoformat(), end_date=last.isoformat())
        keys = sorted({r.key_id for r in sealed})
        console.print(
            f"Paper fleet: {len(before.strategies)} strategies in {len(before.sectors)} sectors, "
            f"deployed at {format_time(before.deployment_time)}; equity "
            f"{before.equity:,.0f} ({before.total_return:+.2%}). Alpha reporting sealed "
            f"{count} end-of-day reports for {first} .. {last} (AES-GCM, key "
            f"{', '.join(keys)}).",
            highlight=False,
        )
        cycle = await optimizer.run_cycle(start_date=first.isoformat(), end_date=last.isoformat())
        console.print(sector_table(cycle))
        dominant = next((a for a in cycle.sectors if a.sector == cycle.dominant_sector), None)
        if dominant is not None:
            console.print(
                f"Alpha-dominant sector: [bold]{dominant.sector}[/] "
                f"({dominant.mean_daily_alpha:+.2%} alpha a day, t = "
                f"{_t(dominant.alpha_t_stat)}).",
                highlight=False,
            )
        gap = cycle.gap_test
        if gap is not None:
            verdict = "an arb-mission" if gap.significant else "no arb-mission"
            console.print(
                f"Best-worst gap {gap.best_sector} - {gap.worst_sector}: {gap.gap:.2%} a day, "
                f"studentized range q = {gap.q_statistic:.2f} over {gap.sector_count} sectors, "
                f"p = {gap.p_value:.3f}: {verdict}.",
                highlight=False,
            )
        if cycle.proposals:
            console.print(proposal_table(cycle))
        else:
            console.print("No proposal: no sector's alpha is significant over these days.")
        verified = await optimizer.verify()
        pulse = await optimizer.pulse()
        state = "intact" if verified.intact else f"BROKEN at entry {verified.first_bad_index}"
        console.print(
            f"Cycle {cycle.id}: {cycle.status.name.lower()}, {cycle.reports_audited} reports "
            f"audited, {cycle.reports_rejected} rejected, {cycle.duration_seconds * 1000:.0f} ms. "
            f"Ledger {state}: {verified.entry_count} entries over {pulse.cycle_count} cycle(s), "
            f"head {verified.head_hash[:16]}.",
            highlight=False,
        )
        if apply and cycle.proposals:
            agent = AgentClient(optimizer_channel, name="meta-optimizer")
            fleet_agent = AgentClient(market_channel, name="market")
            recommendations = await agent.recommend(AgentContext(cycle_id=f"demo-{cycle.id}"))
            console.print(
                "Executing the proposals on the fleet's AgentService, as the federation would "
                "once the Global Action Plan adopts them:",
                highlight=False,
            )
            for r in recommendations:
                result = await fleet_agent.execute(as_action(r), plan_sequence=0)
                console.print(f"  {escape(r.id)}: {escape(result.detail)}", highlight=False)
            console.print(allocation_table(before, await market.fleet()))
    return cycle
