"""Demo section: what the executed plan changed in the paper fleet. The market replays on after the
plan, and the fleet is read before and after: each change with the plan and action behind it,
the allocations, the strategies disabled, promoted and shadowing (an evolution's candidates
among them, with their paper records), and a halt if one fired."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from market.client import MarketClient
from market.fleet import FleetReport, StrategyBook
from qtmesh.base.bars import format_time
from qtmesh.base.genome import StrategyStage
from qtmesh.runtime.channels import open_channel


def changes_table(fleet: FleetReport, plan_sequence: int) -> Table:
    table = Table(title=f"Fleet changes made by plan #{plan_sequence}")
    for column in ("#", "from", "action", "change"):
        table.add_column(column)
    for change in fleet.changes:
        if change.cause.plan_sequence != plan_sequence:
            continue
        table.add_row(
            str(change.sequence),
            format_time(change.time),
            change.cause.action_id,
            escape(change.detail),
        )
    return table


def allocations_table(before: FleetReport, after: FleetReport) -> Table:
    table = Table(title="Sector allocations (nominal) and what they earned after the plan")
    for column in ("sector", "before", "after", "halted", "trading", "P&L after"):
        table.add_column(column, justify="left" if column == "sector" else "right")
    previous = {s.sector: s for s in before.sectors}
    for s in after.sectors:
        trading = sum(x.weight for x in after.strategies if x.strategy.sector == s.sector)
        table.add_row(
            s.sector,
            f"{previous[s.sector].allocation:.2%}",
            f"{s.allocation:.2%}",
            "yes" if s.halted else "",
            f"{trading:.2%}",
            f"{s.pnl:+,.0f}",
        )
    return table


def _state(s: StrategyBook) -> str:
    if not s.enabled:
        return "disabled"
    return s.stage.name.lower()


def book_table(before: FleetReport, after: FleetReport) -> Table:
    """The strategies whose place in the book changed (added, disabled, promoted), and every
    shadow; allocation changes move every weight and are in the sector table."""
    table = Table(title="Strategy book: what changed, and the shadows")
    for column in ("strategy", "origin", "before", "after", "weight", "trades", "record"):
        table.add_column(column)
    previous = {s.strategy.id: s for s in before.strategies}
    for s in after.strategies:
        old = previous.get(s.strategy.id)
        changed = old is None or _state(old) != _state(s)
        if not changed and s.stage is not StrategyStage.SHADOW:
            continue
        record = s.record
        summary = ""
        if record is not None and record.bar_count:
            deflated = (
                f", DSR {record.deflated_sharpe:.2f}" if record.deflated_sharpe is not None else ""
            )
            summary = (
                f"{record.total_return:+.2%} over {record.bar_count} bars, "
                f"Sharpe {record.sharpe:.2f}{deflated}"
            )
        table.add_row(
            s.strategy.id,
            s.origin,
            _state(old) if old is not None else "-",
            _state(s),
            f"{old.weight:.2%} -> {s.weight:.2%}" if old is not None else f"{s.weight:.2%}",
            str(record.trade_count if record is not None else s.trade_count),
            summary,
        )
    return table


async def show(
    console: Console,
    addresses: Mapping[str, str],
    *,
    plan_sequence: int,
    before: FleetReport,
    hours: int,
) -> FleetReport:
    """Replays ``hours`` more of the market and prints what plan ``plan_sequence`` changed,
    against the fleet as it stood before the plan (``before``)."""
    async with open_channel(addresses["market"], timeout=60) as channel:
        market = MarketClient(channel)
        executed = await market.fleet()
        await market.advance(hours * 60)
        after = await market.fleet(start_time=executed.clock_time + 1)
    console.print(
        f"The market replayed {hours} h more after the plan: fleet P&L "
        f"{after.pnl:+,.0f} ({after.total_return:+.2%}) over {after.bar_count} bars."
    )
    console.print(changes_table(after, plan_sequence))
    console.print(allocations_table(before, after))
    console.print(book_table(before, after))
    if after.halted:
        console.print(f"Halted: {', '.join(sorted(after.halted))} (flat from the next open).")
    shadows = [s for s in after.strategies if s.stage is StrategyStage.SHADOW and s.enabled]
    evolved = [s for s in shadows if s.origin.startswith("evolution/")]
    console.print(
        f"{len(shadows)} shadows paper-trade beside the fleet, {len(evolved)} of them found by an "
        "evolution."
    )
    return after
