"""Demo section: the loop. The running mesh replays a few more days on the market clock (a plan
every four market hours, each day's reports audited, evolutions, meta learning from the fleet's
trades) while the same fleet, left static, replays the same days on a market of its own. Then it
tells what later cycles did with what earlier ones left: the shadows evolutions sent and what
the promotion gates make of their records, meta's versions caused by real fleet trades, what the
agents recalled from memory, and the halts.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from alpha_reporting.client import AlphaReportingClient
from federation.client import FederationClient
from market.client import MarketClient
from market.fleet import FleetReport
from meta.client import MetaClient
from meta.config import MetaPolicyRules
from meta.model import ShadowCandidate
from meta.promotion import shadow_decisions
from meta_optimizer.client import MetaOptimizerClient
from qtmesh.base.genome import StrategyStage
from qtmesh.runtime.channels import open_channel
from replay import Arm, MarketSource, MeshClients, ReplayConfig, ReplayRun, run, summary
from replay.driver import Progress as LoopProgress
from replay.driver import trading_date
from replay.mesh import replay_mesh
from replay.report import ArmSummary

DAY_NANOS = 86_400 * 10**9
# Words that mark a rationale resting on what was recalled from memory.
_RECALLED = ("most similar past", " Memory: ")


def _day_table(loop: ReplayRun) -> Table:
    table = Table(title="Day by day")
    for column in ("day", "plans", "completed", "not run", "meta versions", "audit", "equity"):
        table.add_column(column, justify="left" if column in ("day", "audit") else "right")
    days: dict[str, list] = {}
    for plan in loop.plans:
        days.setdefault(trading_date(plan.time), []).append(plan)
    versions = Counter(trading_date(m.time) for m in loop.meta)
    audits = {a.date: a for a in loop.audits}
    last_equity = {trading_date(s.time): s.equity for s in loop.samples}
    for day, plans in days.items():
        actions = [a for p in plans for a in p.actions]
        done = sum(a.status == "COMPLETED" for a in actions)
        audit = audits.get(day)
        table.add_row(
            day,
            str(len(plans)),
            str(done),
            str(len(actions) - done),
            str(versions.get(day, 0)),
            f"{audit.reports_audited} reports, {len(audit.proposals)} proposals" if audit else "",
            f"{last_equity.get(day, 0):,.0f}",
        )
    return table


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shadow_verdicts(fleet: FleetReport) -> list[str]:
    """What the promotion gates (meta's defaults) say of every shadow's paper record now."""
    candidates = [
        ShadowCandidate(
            strategy_id=s.strategy.id,
            days_in_test=max(0, fleet.clock_time - s.record.start_time) / DAY_NANOS,
            trade_count=s.record.trade_count,
            sharpe_ratio=s.record.sharpe,
            deflated_sharpe_ratio=s.record.deflated_sharpe,
        )
        for s in fleet.strategies
        if s.stage is StrategyStage.SHADOW and s.enabled and s.record is not None
    ]
    return [d.rationale for d in shadow_decisions(candidates, MetaPolicyRules())]


def _story(console: Console, loop: ReplayRun, fleet: FleetReport) -> None:
    actions = [(p, a) for p in loop.plans for a in p.actions]
    evolutions = [a for _, a in actions if a.action_type == "RUN_EVOLUTION"]
    console.print(
        f"[bold]Evolutions[/]: {sum(a.status == 'COMPLETED' for a in evolutions)} ran; "
        "their selected candidates entered the book as shadows."
    )
    for a in [a for a in evolutions if a.status == "COMPLETED"][-2:]:
        console.print(f"  {escape(_short(a.detail, 230))}", highlight=False)
    promotions = [(p, a) for p, a in actions if a.action_type == "PROMOTE_STRATEGY"]
    for p, a in promotions:
        console.print(
            f"  plan {p.sequence}: promote {a.target} -> {a.status.lower()}: {escape(a.detail)}",
            highlight=False,
        )
    verdicts = _shadow_verdicts(fleet)
    console.print(f"[bold]Shadows[/] in the book now: {len(verdicts)}; the gates say:")
    for line in verdicts[:4]:
        console.print(f"  {escape(line)}", highlight=False)
    learned = [m for m in loop.meta if m.cause == "fleet trades"]
    if learned:
        first, last = learned[0], learned[-1]
        moved = ", ".join(
            f"{k} {first.values[k]:.3g} -> {last.values[k]:.3g}"
            for k in ("risk_multiplier", "position_size_scale", "rl_exploration_rate")
            if k in first.values
        )
        console.print(
            f"[bold]Meta[/]: {len(learned)} versions caused by the fleet's trades "
            f"(v{first.version} .. v{last.version}): {moved}."
        )
    # "action a2 of plan 13" is one executed TUNE_LEARNING: count them together.
    causes = Counter(
        "executed tune_learning actions" if m.cause.startswith("action ") else m.cause
        for m in loop.meta
        if m.cause
    )
    console.print("  versions by cause: " + ", ".join(f"{c} {n}" for c, n in causes.items()))
    # Memory speaks through the memory agent's own recommendations and SESA's recall.
    recalled = [
        a for _, a in actions if "memory" in a.sources or any(w in a.rationale for w in _RECALLED)
    ]
    if recalled:
        told = next(
            (a for a in reversed(recalled) if any(w in a.rationale for w in _RECALLED)), None
        )
        a = told or recalled[-1]
        said = f": {escape(_short(a.rationale, 240))}" if told else ""
        console.print(
            f"[bold]Memory[/] backed {len(recalled)} actions with what it recalled, e.g. "
            f"{a.action_type.lower()} {a.target} ({a.status.lower()}, from "
            f"{', '.join(a.sources)}){said}",
            highlight=False,
        )
    else:
        console.print("[bold]Memory[/]: nothing similar enough was recalled in these plans.")
    # A standing halt is re-asserted every cycle and applied once: one line per scope.
    halts: dict[tuple[str, str], list] = {}
    for p, a in actions:
        if a.action_type in ("HALT_TRADING", "RESUME_TRADING"):
            halts.setdefault((a.action_type, a.target), []).append((p, a))
    for (kind, target), items in halts.items():
        p, a = items[0]
        again = f"; re-asserted in {len(items) - 1} later plans" if len(items) > 1 else ""
        console.print(
            f"[bold]{kind.lower()}[/] {target} in plan {p.sequence}: {a.status.lower()} "
            f"({escape(_short(a.detail, 120))}){again}",
            highlight=False,
        )
    if not halts:
        console.print("[bold]Halts[/]: none fired; no risk limit was breached.")


def _comparison(closed: ArmSummary, static: ArmSummary) -> Table:
    table = Table(title="The same days: closed loop vs the fleet left static")
    for column in ("", "return", "max drawdown", "Sharpe", "plans", "actions"):
        table.add_column(column, justify="left" if not column else "right")
    for name, s in (("closed loop", closed), ("static", static)):
        table.add_row(
            name,
            f"{s.total_return:+.2%}",
            f"{s.max_drawdown:.2%}",
            f"{s.sharpe:+.2f}",
            str(s.plans),
            str(s.actions),
        )
    return table


async def _static(source: MarketSource, position: int, config: ReplayConfig) -> ReplayRun:
    """The fleet left static over the same days: a market of its own, moved to ``position``."""
    with tempfile.TemporaryDirectory(prefix="qtmesh-static-") as work:
        folder = Path(work)
        async with replay_mesh(
            Arm.STATIC, source, data_dir=folder / "data", log_dir=folder / "logs"
        ) as (market, _):
            behind = position - (await market.snapshot()).position
            if behind > 0:
                await market.advance(behind)
            return await run(config, arm=Arm.STATIC, source=source.describe(), market=market)


async def show(console: Console, addresses: Mapping[str, str], *, days: float) -> ReplayRun:
    """Replays ``days`` more days with the mesh at ``addresses`` in the loop, and the static
    fleet beside it; prints the story of the loop."""
    config = ReplayConfig(days=days)
    names = ("market", "federation", "alpha-reporting", "meta-optimizer", "meta")
    async with contextlib.AsyncExitStack() as stack:
        channels = {
            n: await stack.enter_async_context(open_channel(addresses[n], timeout=120))
            for n in names
        }
        market = MarketClient(channels["market"])
        clients = MeshClients(
            federation=FederationClient(channels["federation"]),
            reports=AlphaReportingClient(channels["alpha-reporting"]),
            optimizer=MetaOptimizerClient(channels["meta-optimizer"]),
            meta=MetaClient(channels["meta"]),
        )
        start = (await market.snapshot()).position
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("the loop", total=days * 1440)

            def moved(p: LoopProgress) -> None:
                progress.update(
                    task,
                    completed=p.done_minutes,
                    description=f"{trading_date(p.clock_time)}: {p.plans} plans, "
                    f"{p.actions} actions",
                )

            loop = await run(
                config,
                arm=Arm.CLOSED,
                source="the demo's market",
                market=market,
                mesh=clients,
                progress=moved,
            )
        fleet = await market.fleet()
    static = await _static(MarketSource(), start, config)
    console.print(_day_table(loop))
    _story(console, loop, fleet)
    console.print(_comparison(summary(loop), summary(static)))
    console.print(
        f"The loop ran at {loop.wall_seconds / max(loop.days, 1e-9):.1f} wall seconds per "
        "market day; `qtmesh replay --days N` runs it on any span, with a report and plots.",
        highlight=False,
    )
    return loop
