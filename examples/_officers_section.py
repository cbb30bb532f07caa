"""The demo's section on the three officers, for the current replayed market.

Risk officer: the fleet's risk report (portfolio and sector VaR/CVaR, exposures against limits,
breaches, and the halts of the fleet's kill switch). CEO: the strategic mode with the inputs it
was chosen from. Strategy officer: the strategy book, which the market's fleet owns and trades,
with each strategy's recent performance (the fleet's periods for a deployed strategy, its own
stage record for a shadow or a promoted one). Then each officer's recommendations; the market
executes the strategy actions and the halts. The reports are asked for first: each refreshes its
officer's cache to the market's clock, so the recommendations that follow are for the market as
it is now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agents.ceo.client import CeoClient
from agents.ceo.engine import ModeReport
from agents.risk.advice import horizon_text
from agents.risk.assessment import RiskReport
from agents.risk.client import RiskClient
from agents.risk.measures import TailRisk
from agents.strategy.book import Entry
from agents.strategy.client import StrategyOfficerClient
from agents.strategy.performance import Performance
from market.client import MarketClient
from qtmesh.base.bars import format_time
from qtmesh.base.contract import (
    AdjustExposure,
    AgentContext,
    Recommendation,
    ReweightStrategies,
    SwitchMode,
)
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import open_channel

OFFICERS = ("risk", "ceo", "strategy")
BOOK_ROWS_PER_SECTOR = 4


async def show(console: Console, addresses: Mapping[str, str]) -> None:
    """Prints the section; needs the market, risk, ceo and strategy services at ``addresses``
    (and, behind the CEO, the world model)."""
    async with (
        open_channel(addresses["market"]) as market_channel,
        open_channel(addresses["risk"], timeout=60) as risk_channel,
        open_channel(addresses["ceo"], timeout=60) as ceo_channel,
        open_channel(addresses["strategy"], timeout=60) as strategy_channel,
    ):
        snapshot = await MarketClient(market_channel).snapshot()
        context = AgentContext(
            cycle_id="demo", as_of_time=snapshot.clock_time, market_position=snapshot.position
        )
        console.rule("Risk officer")
        report = await RiskClient(risk_channel).assess()
        _print_risk(console, report)

        console.rule("CEO")
        _print_mode(console, await CeoClient(ceo_channel).mode())

        console.rule("Strategy officer")
        book = await StrategyOfficerClient(strategy_channel).book()
        console.print(_book_table(book))

        console.rule("The officers' recommendations")
        channels = {"risk": risk_channel, "ceo": ceo_channel, "strategy": strategy_channel}
        for name in OFFICERS:
            agent = AgentClient(channels[name], name=name)
            _print_recommendations(console, name, await agent.recommend(context))


def _tail_row(label: str, tail: TailRisk) -> list[str]:
    return [
        label,
        *(
            f"{v:.2%}"
            for v in (
                tail.historical_var_95,
                tail.historical_cvar_95,
                tail.historical_var_99,
                tail.historical_cvar_99,
                tail.parametric_var_95,
                tail.parametric_cvar_95,
                tail.parametric_var_99,
                tail.parametric_cvar_99,
            )
        ),
    ]


def _print_risk(console: Console, report: RiskReport) -> None:
    horizon = horizon_text(report.horizon)
    tails = Table(
        title=f"Tail risk {horizon} of the paper fleet, from {report.observations} returns "
        f"(as of {format_time(report.as_of_time)}; H historical, P parametric normal)"
    )
    for column in ("", "H VaR95", "H CVaR95", "H VaR99", "H CVaR99", "P VaR95", "P CVaR95"):
        tails.add_column(column, justify="left" if not column else "right")
    tails.add_column("P VaR99", justify="right")
    tails.add_column("P CVaR99", justify="right")
    tails.add_row(*_tail_row("portfolio", report.portfolio), style="bold")
    for sector in report.sectors:
        tails.add_row(*_tail_row(sector.sector, sector.tail))
    console.print(tails)

    limits = Table(title="Exposures and drawdowns against the limits")
    for column in (
        "scope",
        "allocation",
        "exposure",
        "limit",
        "equity VaR95",
        "budget",
        "drawdown",
    ):
        limits.add_column(column, justify="left" if column == "scope" else "right")
    for s in report.sectors:
        over = s.exposure > s.exposure_limit
        limits.add_row(
            s.sector,
            f"{s.allocation:.1%}",
            f"[red]{s.exposure:.1%}[/]" if over else f"{s.exposure:.1%}",
            f"{s.exposure_limit:.1%}",
            f"{s.equity_var_95:.3%}",
            f"{s.var_budget:.3%}",
            f"{s.drawdown:.2%}",
        )
    limits.add_row(
        "portfolio",
        "",
        f"{report.gross_exposure:.1%}",
        f"{report.limits.max_gross_exposure:.1%}",
        f"{report.portfolio.historical_var_95:.3%}",
        f"{report.limits.max_var_95:.3%}",
        f"{report.drawdown:.2%} (limit {report.limits.max_drawdown:.1%})",
        style="bold",
    )
    console.print(limits)
    if report.breaches:
        for b in report.breaches:
            console.print(
                f"[red]breach[/] {b.limit}: {b.value:.3%} over {b.threshold:.3%}", highlight=False
            )
    else:
        console.print("No limit is breached.", style="green")
    for h in report.halts:
        console.print(
            f"[red]kill switch[/] on {h.scope} since {format_time(h.since)}: {escape(h.reason)}",
            highlight=False,
        )


def _print_mode(console: Console, report: ModeReport) -> None:
    indicated = report.indicated.name if report.indicated is not None else "-"
    console.print(
        f"Mode [bold]{report.mode.name}[/]; score {report.score:.2f} of 3 indicates {indicated}; "
        f"the CEO's target after hysteresis is {report.target.name} "
        f"({report.confirmations} confirmation(s)).",
        highlight=False,
    )
    inputs = Table(title="Inputs of the last evaluation")
    inputs.add_column("input")
    inputs.add_column("value", justify="right")
    for name, value in sorted(report.inputs.items()):
        if name in ("drawdown", "volatility"):
            shown = f"{value:.2%}"
        elif name == "observations":
            shown = f"{value:.0f}"
        else:
            shown = f"{value:.3f}"
        inputs.add_row(name, shown)
    console.print(inputs)
    if report.missing:
        console.print(f"Missing inputs: {', '.join(report.missing)}", style="yellow")
    console.print(f"[dim]{escape(report.rationale)}[/]")


def _book_table(book: Sequence[tuple[Entry, Performance | None]]) -> Table:
    table = Table(
        title=f"Strategy book: {len(book)} strategies (the best {BOOK_ROWS_PER_SECTOR} of each "
        "sector by Sharpe, then every one not deployed with the fleet: shadows, promoted)"
    )
    for column in (
        "strategy",
        "sector",
        "stage",
        "on",
        "weight",
        "return",
        "Sharpe",
        "P(SR>0)",
        "trades",
        "measured by",
    ):
        table.add_column(column, justify="left" if column in ("strategy", "sector") else "right")
    shown = []
    for sector in sorted({e.record.sector for e, _ in book}):
        members = [(e, p) for e, p in book if e.record.sector == sector and e.in_fleet]
        members.sort(key=lambda row: -(row[1].sharpe if row[1] is not None else -1e9))
        shown += members[:BOOK_ROWS_PER_SECTOR]
    shown += [(e, p) for e, p in book if not e.in_fleet]
    for e, p in shown:
        table.add_row(
            e.strategy_id,
            e.record.sector,
            e.record.stage.name.lower(),
            "yes" if e.record.enabled else "[red]no[/]",
            f"{e.weight:.1%}",
            f"{p.total_return:+.2%}" if p else "-",
            f"{p.sharpe:.2f}" if p else "-",
            f"{p.psr:.0%}" if p else "-",
            str(p.trade_count) if p else "-",
            p.source if p else "not yet",
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
        console.print(
            f"  {escape(f'[{r.priority.name}]')} {r.target}: {_action(r)} "
            f"(confidence {r.confidence:.2f})\n"
            f"    [dim]{escape(r.rationale)}[/]",
            highlight=False,
        )


def _action(r: Recommendation) -> str:
    match r.parameters:
        case AdjustExposure(factor=factor):
            return f"exposure x{factor:.2f}"
        case SwitchMode(mode=mode):
            return f"switch to {mode.name}"
        case ReweightStrategies(weights=weights):
            return f"reweight {len(weights)} strategies"
    return r.action_type.name.lower()
