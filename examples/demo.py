"""The main job on the embedded default: start the mesh, replay a day of the synthetic market
while a subscriber streams it, print the market snapshot, evolve strategies with SESA and print
the best, run one meta-learning update on the result, ask the world model and the memory engine,
replay five days for the encrypted end-of-day sector reports and audit them with the meta
optimizer, show the risk officer's report, the CEO's mode and the strategy book, then run one
federation cycle (the Global Action Plan, executed) while a subscriber
prints the plan stream; then close the loop: replay a few more days with the whole mesh cycling
on the market clock, beside the same fleet left static, and tell what the later cycles did with
the earlier ones. Stop the mesh, or with ``--keep`` leave it running (the console's pages
open at the URL printed) until Ctrl-C.

    python -m examples.demo [--hours N] [--loop-days D] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path

from rich.progress import Progress
from rich.table import Table

from examples import (
    _agents_section,
    _effects_section,
    _federation_section,
    _loop_section,
    _meta_optimizer_section,
    _meta_section,
    _officers_section,
    _sesa_section,
)
from examples._console import console as make_console
from market.client import MarketClient
from meta.model import Evaluation as MetaEvaluation
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.base.bars import Snapshot, format_time
from qtmesh.base.genome import StrategyFamily, StrategyStage
from qtmesh.runtime import catalog
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import StartupError, running_mesh
from replay import MarketSource
from replay.mesh import environment

console = make_console()


async def replay_and_stream(market: MarketClient, hours: int) -> tuple[Snapshot, int]:
    """Advances the clock ``hours`` hours, an hour at a time, while a subscriber counts bars."""
    start = (await market.snapshot()).position
    target = start + hours * 60
    streamed = 0

    async def subscriber() -> None:
        nonlocal streamed
        async for position, _clock, bars in market.stream_bars(after_position=start):
            streamed += len(bars)
            if position == target:
                return

    consuming = asyncio.ensure_future(subscriber())
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("replaying", total=hours)
        for _ in range(hours):
            await market.advance(60)
            progress.advance(task)
    await asyncio.wait_for(consuming, timeout=60)
    return await market.snapshot(), streamed


def snapshot_table(snapshot: Snapshot) -> Table:
    table = Table(
        title=f"Market at {format_time(snapshot.clock_time)} "
        f"(step {snapshot.position:,} of {snapshot.length:,})"
    )
    for column, justify in (
        ("symbol", "left"),
        ("sector", "left"),
        ("close", "right"),
        ("24h return", "right"),
        ("24h volatility", "right"),
    ):
        table.add_column(column, justify=justify)
    for quote in sorted(snapshot.quotes, key=lambda q: (q.sector, q.bar.symbol)):
        colour = "green" if quote.return_24h >= 0 else "red"
        table.add_row(
            quote.bar.symbol,
            quote.sector,
            f"{quote.bar.close:,.2f}",
            f"[{colour}]{quote.return_24h:+.2%}[/]",
            f"{quote.volatility_24h:.1%}",
        )
    return table


def sector_table(snapshot: Snapshot) -> Table:
    table = Table(title="Sectors")
    for column in ("sector", "symbols", "24h return", "24h volatility"):
        table.add_column(column, justify="left" if column == "sector" else "right")
    for sector in sorted(snapshot.sectors, key=lambda s: -s.return_24h):
        table.add_row(
            sector.sector,
            str(sector.symbol_count),
            f"{sector.return_24h:+.2%}",
            f"{sector.volatility_24h:.1%}",
        )
    return table


def meta_evaluations(result: pb.EvolutionResult, clock: int) -> list[MetaEvaluation]:
    """What the meta layer reads of the evolution's best and shadow strategies."""
    chosen = {e.genome.id: e for e in (*result.top, *result.shadow_candidates)}
    return [
        MetaEvaluation(
            strategy_id=e.genome.id,
            family=StrategyFamily(e.genome.family),
            generation=e.genome.generation,
            composite_score=e.composite_score,
            sharpe_ratio=e.out_of_sample_metrics.sharpe_ratio,
            deflated_sharpe_ratio=e.out_of_sample_metrics.deflated_sharpe_ratio,
            trade_count=e.out_of_sample_metrics.trade_count,
            stage=StrategyStage(e.stage) if e.stage else None,
            trials=e.trials,
            evaluated_time=clock,
        )
        for e in chosen.values()
    ]


async def main(hours: int, loop_days: float, *, keep: bool = False) -> int:
    with tempfile.TemporaryDirectory(prefix="qtmesh-demo-") as logs:
        console.rule("Quantum Trader Mesh demo")
        try:
            # Fresh stores per run, so every service starts from its seed state every time.
            data = Path(logs) / "data"
            # Planning and audits are the demo's (and then the loop's), not the timers'.
            env = {**os.environ, **environment(data, MarketSource())}
            async with running_mesh(
                catalog.names(), ephemeral=True, log_dir=Path(logs), env=env
            ) as mesh:
                listing = Table(title="Services")
                for column in ("service", "address", "status", "web"):
                    listing.add_column(column)
                for child in mesh.children:
                    listing.add_row(
                        child.name, child.address, child.status, child.endpoints.get("http", "")
                    )
                console.print(listing)
                web = {c.name: c.endpoints["http"] for c in mesh.children if "http" in c.endpoints}
                if "console" in web:
                    console.print(f"Console: {web['console']} (live pages of the mesh below)")

                async with open_channel(mesh.addresses["market"]) as channel:
                    market = MarketClient(channel)
                    symbols = await market.list_symbols()
                    console.print(
                        f"Market: {len(symbols)} symbols in "
                        f"{len({s.sector for s in symbols})} sectors, synthetic one-minute bars."
                    )
                    snapshot, streamed = await replay_and_stream(market, hours)
                    console.print(f"Replayed {hours} h; the subscriber streamed {streamed:,} bars.")
                    console.print(snapshot_table(snapshot))
                    console.print(sector_table(snapshot))
                console.rule("SESA: strategy evolution")
                evolution = await _sesa_section.show(console, mesh.addresses)
                await _meta_section.show(
                    console,
                    mesh.addresses,
                    evaluations=meta_evaluations(evolution, snapshot.clock_time),
                )
                console.rule("World model and memory engine")
                await _agents_section.show(console, mesh.addresses)
                # The federation executes the optimizer's proposals below, as in production.
                await _meta_optimizer_section.show(console, mesh.addresses, apply=False)
                await _officers_section.show(console, mesh.addresses)
                console.rule("Federation: the Global Action Plan")
                async with open_channel(mesh.addresses["market"]) as channel:
                    before = await MarketClient(channel).fleet()
                plan = await _federation_section.show(console, mesh.addresses)
                console.rule("What the plan changed in the fleet")
                await _effects_section.show(
                    console, mesh.addresses, plan_sequence=plan.sequence, before=before, hours=6
                )
                console.rule(f"The loop: {loop_days:g} more days on the market clock")
                await _loop_section.show(console, mesh.addresses, days=loop_days)
                if keep:
                    await _keep_running(web.get("console", ""))
        except StartupError as exc:
            console.print(f"[red]the mesh did not start:[/] {exc}", highlight=False)
            return 1
        console.print("Mesh stopped.", style="dim")
    return 0


async def _keep_running(url: str) -> None:
    """Waits for Ctrl-C (or SIGTERM) with the mesh up, so a person can open the console."""
    console.print(f"The mesh keeps running: open {url or 'the console'}; Ctrl-C stops it.")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=24, help="hours of market to replay")
    parser.add_argument(
        "--loop-days", type=float, default=3.0, help="days the closing loop replays (default 3)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the mesh running after the demo, until Ctrl-C"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.hours, args.loop_days, keep=args.keep)))
