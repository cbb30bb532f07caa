"""``qtmesh evolve``: search for strategies on your own bars, in process, and judge the best on
bars the search never saw.

    qtmesh evolve GOOG.csv                          # Date,Open,High,Low,Close,Volume, daily
    qtmesh evolve bars.parquet --symbol EURUSD --family ma_crossover --search tpe
    qtmesh evolve --days 30 --json                  # the embedded synthetic market
    qtmesh evolve GOOG.csv --report goog.html       # a page of plots

The last ``--holdout`` share of the bars is held out; ``--budget`` genomes are evaluated on the
rest by SESA's evolution, random search or Optuna's TPE (the baselines to compare against),
and all three are ranked by SESA's selection (sesa/selection.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from backtest.evaluation import CostModel, EvaluationSettings, Evaluator
from backtest.metrics import Metrics
from backtest.overfitting import consistency
from market.sources import load_bars
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.bars import BarSeries
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import SHORT_NAMES, StrategyFamily
from sesa.research import SEARCHES, Study, run_study
from sesa.research.report import write_report

EXIT_USAGE = 2
_FAMILIES = {f.name.lower(): f for f in StrategyFamily} | {v: k for k, v in SHORT_NAMES.items()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qtmesh evolve",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    p.add_argument(
        "file",
        nargs="?",
        type=Path,
        help="CSV or Parquet bars: the market's long format or Date,Open,High,Low,Close,Volume "
        "(market/sources.py); default: the embedded synthetic market",
    )
    p.add_argument("--symbol", help="the symbol to search on (needed when the file has several)")
    p.add_argument(
        "--family",
        default="all",
        help="strategy families, comma-separated: "
        + ", ".join(f.name.lower() for f in StrategyFamily)
        + " (or ma, mr, bo, ql); default: all",
    )
    p.add_argument("--budget", type=int, default=400, help="genomes evaluated (default 400)")
    p.add_argument(
        "--holdout", type=float, default=0.3, help="share of the last bars held out (0.3)"
    )
    p.add_argument("--search", choices=sorted(SEARCHES), default="sesa", help="default: sesa")
    p.add_argument("--seed", type=int, default=0, help="seeds the search (default 0)")
    p.add_argument(
        "--bars-per-year",
        type=float,
        default=None,
        help="annualisation; default: bars observed per year of the data's own calendar "
        "(about 252 for daily equities, 365 for crypto)",
    )
    p.add_argument("--commission-bps", type=float, default=1.0, help="per unit traded (1)")
    p.add_argument("--slippage-bps", type=float, default=1.0, help="per fill (1)")
    p.add_argument("--days", type=int, default=30, help="synthetic market days without FILE")
    p.add_argument("--top", type=int, default=5, help="genomes in the table (5)")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line of stdout"
    )
    p.add_argument("--report", type=Path, help="write an HTML page of plots here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # With --json the table goes to stderr, so stdout is the JSON alone.
    console = Console(stderr=args.json, width=None if sys.stdout.isatty() else 132)
    try:
        study = _run(args, console)
    except InvalidArgument as exc:
        print(f"qtmesh evolve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    console.print(_table(study, args.top))
    console.print(_summary(study), highlight=False)
    if args.report:
        console.print(f"report: {write_report(study, args.report)}", highlight=False)
    if args.json:
        print(json.dumps(summary(study)))
    return 0


def _run(args: argparse.Namespace, console: Console) -> Study:
    series = _series(args)
    families = _families(args.family)
    settings = EvaluationSettings(
        costs=CostModel(commission_bps=args.commission_bps, slippage_bps=args.slippage_bps)
    )
    search = SEARCHES[args.search](rng=np.random.default_rng(args.seed))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"{args.search} on {series.symbol}", total=args.budget)
        return run_study(
            series,
            search,
            families=families,
            budget=args.budget,
            holdout=args.holdout,
            bars_per_year=args.bars_per_year,
            evaluator=Evaluator(settings=settings),
            progress=lambda evaluated: progress.update(task, completed=evaluated),
        )


def _series(args: argparse.Namespace) -> BarSeries:
    if args.file is None:
        if not 1 <= args.days <= 365:
            raise InvalidArgument("--days", f"{args.days} is not in 1..365")
        market = list(generate(SyntheticMarketSpec(days=args.days)).series)
    else:
        market = load_bars(args.file)
    by_symbol = {s.symbol: s for s in market}
    if args.symbol is not None:
        if args.symbol not in by_symbol:
            raise InvalidArgument("--symbol", f"{args.symbol!r} is not in {', '.join(by_symbol)}")
        return by_symbol[args.symbol]
    if len(market) > 1:
        raise InvalidArgument(
            "--symbol", f"the bars hold {len(market)} symbols; choose one of {', '.join(by_symbol)}"
        )
    return market[0]


def _families(text: str) -> tuple[StrategyFamily, ...]:
    if text.strip().lower() == "all":
        return tuple(StrategyFamily)
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in _FAMILIES]
    if unknown or not names:
        raise InvalidArgument(
            "--family",
            f"unknown family {', '.join(unknown) or repr(text)}; "
            f"known: all, {', '.join(f.name.lower() for f in StrategyFamily)}",
        )
    return tuple(dict.fromkeys(_FAMILIES[n] for n in names))


def summary(study: Study) -> dict[str, Any]:
    """The run as one JSON-ready object (the ``--json`` line)."""
    best = study.best
    evaluation = best.judgement.evaluation
    blocks = evaluation.out_of_sample_blocks
    return {
        "search": study.search,
        "symbol": study.symbol,
        "budget": study.budget,
        "evaluated": study.evaluated,
        "bars_per_year": study.bars_per_year,
        "train_bars": study.train_bars,
        "holdout_bars": study.holdout_bars,
        "holdout_sharpe": _number(best.holdout.sharpe_ratio),
        "holdout_return": _number(best.holdout.total_return),
        "holdout_max_drawdown": _number(best.holdout.max_drawdown),
        "holdout_trades": best.holdout.trade_count,
        "buy_and_hold_holdout_sharpe": _number(study.buy_and_hold.sharpe_ratio),
        "buy_and_hold_holdout_return": _number(study.buy_and_hold.total_return),
        "in_sample_sharpe": _number(best.in_sample.sharpe_ratio),
        "walk_forward_sharpe": _number(best.walk_forward.sharpe_ratio),
        "walk_forward_trades": best.walk_forward.trade_count,
        "deflated_sharpe": _number(best.walk_forward.deflated_sharpe_ratio),
        "consistency": None if blocks is None else _number(float(consistency(blocks)[0])),
        "shadow_candidates": len(study.ranking.shadow_candidates),
        "production_candidates": len(study.ranking.production_candidates),
        "pbo": study.ranking.pbo,
        "best": {
            "id": evaluation.genome.id,
            "family": evaluation.genome.family.name,
            "stage": best.judgement.stage.name,
            "gate_failures": list(best.judgement.gate_failures),
            "parameters": dict(evaluation.genome.parameters),
        },
        "elapsed_seconds": round(study.elapsed_seconds, 3),
    }


def _number(value: float) -> float | None:
    """JSON has no infinity or NaN: an unbounded ratio is null."""
    return value if math.isfinite(value) else None


def _table(study: Study, top: int) -> Table:
    table = Table(
        title=f"{study.search}: best of {study.evaluated} genomes on {study.symbol} "
        f"({study.train_bars} bars searched, {study.holdout_bars} held out)",
        caption="t: consistency (t statistic of per-block out-of-sample Sharpe ratios); "
        "DSR: deflated Sharpe ratio; IS in sample, WF walk-forward (out of sample), "
        "HO held out",
        box=box.SIMPLE_HEAD,
    )
    headers = ("#", "genome", "stage", "t", "DSR", "IS Sharpe", "WF Sharpe", "WF trades")
    for header in (*headers, "HO Sharpe", "HO return", "HO max DD", "HO trades"):
        table.add_column(header, justify="left" if header in ("genome", "stage") else "right")
    for i, c in enumerate(study.candidates[:top], 1):
        e = c.judgement.evaluation
        blocks = e.out_of_sample_blocks
        table.add_row(
            str(i),
            e.genome.id,
            c.judgement.stage.name.lower(),
            "-" if blocks is None else f"{consistency(blocks)[0]:.2f}",
            f"{c.walk_forward.deflated_sharpe_ratio:.2f}",
            _sharpe(c.in_sample),
            _sharpe(c.walk_forward),
            str(c.walk_forward.trade_count),
            _sharpe(c.holdout),
            f"{c.holdout.total_return:+.1%}",
            f"{c.holdout.max_drawdown:.1%}",
            str(c.holdout.trade_count),
        )
    return table


def _sharpe(m: Metrics) -> str:
    return f"{m.sharpe_ratio:+.2f}"


def _summary(study: Study) -> str:
    pbo = "n/a" if study.ranking.pbo is None else f"{study.ranking.pbo:.2f}"
    return (
        f"buy and hold, held out: Sharpe {study.buy_and_hold.sharpe_ratio:+.2f}, return "
        f"{study.buy_and_hold.total_return:+.1%}  |  PBO {pbo}  |  shadow candidates "
        f"{len(study.ranking.shadow_candidates)}, production candidates "
        f"{len(study.ranking.production_candidates)}  |  {study.bars_per_year:.0f} bars a year"
        f"  |  {study.elapsed_seconds:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
