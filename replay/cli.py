"""``qtmesh replay``: replay the market N days with the whole mesh in the loop, then the same
fleet left static on the same bars, and write the report (JSON and an HTML page of plots).

    qtmesh replay --days 5                      # the embedded synthetic market
    qtmesh replay --days 20 --data bars.csv     # a file of your own (format: market/sources.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from qtmesh.base.bars import format_time
from qtmesh.base.config import ConfigError
from qtmesh.runtime.supervisor import StartupError
from replay import driver
from replay.config import Arm, MarketSource, ReplayConfig
from replay.html import write_html
from replay.mesh import replay_mesh
from replay.report import document, summary, write_json

OUT_DIR = Path(".qtmesh/replay")
_COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    TextColumn("{task.percentage:>3.0f}%"),
    TimeElapsedColumn(),
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qtmesh replay", description=__doc__.splitlines()[0])
    p.add_argument("--days", type=float, default=5.0, help="market days to replay (default 5)")
    p.add_argument(
        "--plan-every-minutes",
        type=float,
        default=240.0,
        help="market minutes between plans (default 240: six plans a day)",
    )
    p.add_argument(
        "--sample-every-minutes",
        type=float,
        default=240.0,
        help="market minutes between samples of the fleet (default 240, at each plan)",
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic market")
    p.add_argument(
        "--noise", action="store_true", help="a synthetic market with zero drift and no regimes"
    )
    p.add_argument("--data", type=Path, default=None, help="CSV or Parquet file of your bars")
    p.add_argument("--no-static", action="store_true", help="skip the static fleet's replay")
    p.add_argument("--out", type=Path, default=OUT_DIR, help=f"report folder (default {OUT_DIR})")
    return p


async def replay_arm(
    arm: Arm,
    source: MarketSource,
    config: ReplayConfig,
    *,
    work_dir: Path,
    console: Console | None = None,
) -> driver.ReplayRun:
    """One arm on a mesh of its own, with a progress bar on ``console``."""
    folder = work_dir / arm.value
    async with replay_mesh(arm, source, data_dir=folder / "data", log_dir=folder / "logs") as (
        market,
        clients,
    ):
        bar = None if console is None else Progress(*_COLUMNS, console=console, transient=True)
        with bar or contextlib.nullcontext():
            show = None
            if bar is not None:
                task = bar.add_task(f"{arm.value}: starting", total=config.days * 1440)

                def show(p: driver.Progress) -> None:
                    bar.update(
                        task,
                        completed=p.done_minutes,
                        description=f"{arm.value}: {format_time(p.clock_time)[:16]}  "
                        f"plans {p.plans}  actions {p.actions} ({p.completed} completed)  "
                        f"equity {p.equity:,.0f}",
                    )

            return await driver.run(
                config,
                arm=arm,
                source=source.describe(),
                market=market,
                mesh=clients,
                progress=show,
            )


async def _main(args: argparse.Namespace, console: Console) -> int:
    config = ReplayConfig(
        days=args.days,
        plan_every_minutes=args.plan_every_minutes,
        sample_every_minutes=args.sample_every_minutes,
    )
    source = MarketSource(seed=args.seed, noise=args.noise, data_path=args.data)
    if source.data_path is not None and not source.data_path.is_file():
        raise ConfigError("data", f"{source.data_path} is not a file")
    with tempfile.TemporaryDirectory(prefix="qtmesh-replay-") as work:
        console.print(f"Replaying {config.days:g} days of {source.describe()}.")
        closed = await replay_arm(Arm.CLOSED, source, config, work_dir=Path(work), console=console)
        static = None
        if not args.no_static:
            static = await replay_arm(
                Arm.STATIC, source, config, work_dir=Path(work), console=console
            )
    doc = document(closed, static)
    json_path = write_json(doc, args.out / "replay.json")
    html_path = write_html(doc, args.out / "replay.html")
    for run in (closed, static):
        if run is not None:
            s = summary(run)
            console.print(
                f"{run.arm.value:>6}: Sharpe {s.sharpe:+.2f}, return {s.total_return:+.2%}, "
                f"max drawdown {s.max_drawdown:.2%}, {s.plans} plans, {s.promotions} promotions, "
                f"{s.halts} halts, {run.wall_seconds / max(run.days, 1e-9):.2f} s per day"
            )
    console.print(f"Report: {json_path} and {html_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        return asyncio.run(_main(args, console))
    except ConfigError as exc:
        print(f"qtmesh replay: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"qtmesh replay: the mesh did not start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
