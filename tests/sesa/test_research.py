"""Research on a user's bars: every search keeps to its budget and never sees the held-out bars;
``qtmesh evolve`` reads a daily or hourly file (or the synthetic market) and reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from backtest.overfitting import consistency
from qtmesh.base.bars import BarSeries, make_series
from qtmesh.base.genome import StrategyFamily
from qtmesh.cli import main as qtmesh_main
from sesa.research import SEARCHES, Objective, run_study, split_bars
from sesa.research.cli import main

DAY = 86_400 * 10**9
HOUR = 3_600 * 10**9
REQUIRED_KEYS = {
    "search",
    "budget",
    "evaluated",
    "bars_per_year",
    "holdout_sharpe",
    "holdout_return",
    "holdout_max_drawdown",
    "holdout_trades",
    "buy_and_hold_holdout_sharpe",
    "shadow_candidates",
    "production_candidates",
    "pbo",
    "deflated_sharpe",
    "best",
}


def trending(n: int, *, seed: int, step: int = DAY, weekdays: bool = True) -> BarSeries:
    """A random walk with a slow cycle in its drift, on weekdays only for daily bars."""
    rng = np.random.default_rng(seed)
    drift = 0.002 * np.sin(np.arange(n) / 40.0)
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    t = np.datetime64("2010-01-04", "ns").astype(np.int64) + np.arange(n * 2) * step
    if weekdays:
        t = t[((t // DAY) + 3) % 7 < 5]  # 1970-01-01 was a Thursday
    return make_series(
        "TRND",
        "Tech",
        time=t[:n],
        open=open_,
        high=np.maximum(open_, close) * 1.004,
        low=np.minimum(open_, close) * 0.996,
        close=close,
        volume=np.full(n, 1e6),
    )


def write_csv(series: BarSeries, path: Path, *, time_format: str = "%Y-%m-%d") -> Path:
    lines = ["Date,Open,High,Low,Close,Volume"]
    for i in range(len(series)):
        when = np.datetime64(int(series.time[i]), "ns").astype("datetime64[s]").item()
        lines.append(
            f"{when.strftime(time_format)},{series.open[i]},{series.high[i]},{series.low[i]},"
            f"{series.close[i]},{series.volume[i]}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_every_search_evaluates_exactly_its_budget_of_distinct_genomes(name):
    train, _, _ = split_bars(trending(1200, seed=1), 0.3)
    seen = []
    objective = Objective(
        evaluator=Evaluator(),
        data=train,
        families=(StrategyFamily.MA_CROSSOVER, StrategyFamily.BREAKOUT),
        budget=48,
        progress=seen.append,
    )
    SEARCHES[name](rng=np.random.default_rng(3)).run(objective)
    assert len(objective.archive) == 48
    assert objective.trials.count == 48  # each genome one trial, none counted twice
    assert seen[-1] == 48
    assert seen == sorted(seen)
    families = {e.genome.family for e in objective.archive.values()}
    assert families <= {StrategyFamily.MA_CROSSOVER, StrategyFamily.BREAKOUT}


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_the_held_out_bars_never_reach_the_search(name):
    series = trending(1200, seed=2)
    other = trending(1200, seed=99)
    start = len(series) - round(0.3 * len(series))
    # The same first 70%, then a different future (rescaled to join without a gap).
    tail = other.slice(start, len(other))
    scale = series.close[start - 1] / other.close[start - 1]
    changed = make_series(
        series.symbol,
        series.sector,
        time=series.time,
        **{
            c: np.r_[getattr(series, c)[:start], getattr(tail, c) * (scale if c != "volume" else 1)]
            for c in ("open", "high", "low", "close", "volume")
        },
    )
    runs = [
        run_study(
            s,
            SEARCHES[name](rng=np.random.default_rng(5)),
            families=(StrategyFamily.MA_CROSSOVER,),
            budget=32,
        )
        for s in (series, changed)
    ]
    first, second = ([e.genome.id for e in r.evaluations] for r in runs)
    assert first == second
    assert runs[0].best.judgement.genome_id == runs[1].best.judgement.genome_id
    assert runs[0].best.holdout != runs[1].best.holdout  # the holdout itself did change


def test_the_holdout_is_measured_on_its_own_bars_after_a_warm_start():
    series = trending(1000, seed=4)
    data = BarData(series)
    evaluator = Evaluator()
    genome = evaluator.policy.default_genome(StrategyFamily.MA_CROSSOVER)
    genome = type(genome)(
        id="fast", family=genome.family, parameters={**genome.parameters, "fast": 5, "slow": 20}
    )
    (metrics,), run = evaluator.holdout([genome], data, start=700)
    assert metrics.bar_count == 300
    returns = run.returns[0]
    assert metrics.total_return == pytest.approx(np.prod(1 + returns[700:]) - 1, rel=1e-12)
    assert run.positions[0, 700] == 0  # closed at the boundary; the embargo holds it flat
    assert np.any(run.positions[0, 701:] != 0)  # then it trades on warm indicators
    with pytest.raises(Exception, match="inside the 1000 bars"):
        evaluator.holdout([genome], data, start=1000)


def test_a_study_ranks_by_consistency_and_reports_its_overfitting():
    study = run_study(
        trending(1500, seed=6),
        SEARCHES["random"](rng=np.random.default_rng(0)),
        families=(StrategyFamily.MA_CROSSOVER,),
        budget=64,
    )
    assert (study.evaluated, study.train_bars, study.holdout_bars) == (64, 1050, 450)
    assert study.ranking.pbo is not None
    assert 0 <= study.ranking.pbo <= 1
    top = study.candidates
    assert len(top) == len(study.ranking.top) >= 1
    failures = [len(c.judgement.gate_failures) for c in top]
    t = [float(consistency(c.judgement.evaluation.out_of_sample_blocks)[0]) for c in top]
    keys = list(zip(failures, [-x for x in t], strict=True))
    assert keys == sorted(keys)
    assert len(top[0].folds) == 4  # the in-sample fold and three walk-forward folds
    # Annualised on the whole file's calendar: weekday bars are about 261 a year.
    assert 255 < study.bars_per_year < 265


def test_the_same_seed_reproduces_a_study():
    runs = [
        run_study(
            trending(900, seed=7),
            SEARCHES["sesa"](rng=np.random.default_rng(11)),
            families=(StrategyFamily.BREAKOUT,),
            budget=40,
        )
        for _ in range(2)
    ]
    assert [e.genome.id for e in runs[0].evaluations] == [e.genome.id for e in runs[1].evaluations]
    assert runs[0].best.holdout == runs[1].best.holdout


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_evolve_on_a_daily_csv_prints_the_table_json_and_writes_the_report(tmp_path, capsys):
    path = write_csv(trending(900, seed=8), tmp_path / "TRND.csv")
    report = tmp_path / "out" / "report.html"
    argv = [str(path), "--family", "ma,bo", "--budget", "40", "--search", "random"]
    assert main([*argv, "--json", "--report", str(report)]) == 0
    captured = capsys.readouterr()
    doc = last_json(captured.out)
    assert doc.keys() >= REQUIRED_KEYS
    assert (doc["search"], doc["budget"], doc["evaluated"]) == ("random", 40, 40)
    assert doc["best"]["family"] in ("MA_CROSSOVER", "BREAKOUT")
    assert 255 < doc["bars_per_year"] < 265
    assert doc["train_bars"] + doc["holdout_bars"] == 900
    assert "held out" in captured.err  # the table, beside the JSON
    assert doc["best"]["id"] in captured.err
    page = report.read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 6
    assert doc["best"]["id"] in page

    assert main([*argv, "--json", "--bars-per-year", "252"]) == 0
    assert last_json(capsys.readouterr().out)["bars_per_year"] == 252


def test_evolve_on_an_hourly_csv_and_on_the_synthetic_market(tmp_path, capsys):
    hourly = trending(2000, seed=9, step=HOUR, weekdays=False)
    path = write_csv(hourly, tmp_path / "FX.csv", time_format="%Y-%m-%d %H:%M:%S")
    assert main([str(path), "--family", "ma", "--budget", "24", "--search", "tpe", "--json"]) == 0
    doc = last_json(capsys.readouterr().out)
    assert (doc["search"], doc["evaluated"]) == ("tpe", 24)
    assert doc["bars_per_year"] == pytest.approx(8766, rel=0.01)  # every hour of the year

    assert main(["--days", "1", "--symbol", "ORBT", "--budget", "16", "--json"]) == 0
    doc = last_json(capsys.readouterr().out)
    assert (doc["search"], doc["symbol"], doc["evaluated"]) == ("sesa", "ORBT", 16)


def test_evolve_names_what_is_wrong(tmp_path, capsys):
    path = write_csv(trending(900, seed=10), tmp_path / "TRND.csv")
    assert main([str(path), "--family", "momentum"]) == 2
    assert "--family: unknown family momentum" in capsys.readouterr().err
    assert main([str(path), "--holdout", "0.5", "--budget", "8"]) == 2
    assert "leave 450 to search on; at least 500" in capsys.readouterr().err
    assert main(["--days", "1", "--budget", "8"]) == 2
    assert "--symbol: the bars hold" in capsys.readouterr().err
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace(",", ",x", 1)
    path.write_text("\n".join(lines) + "\n")
    assert main([str(path)]) == 2
    assert "TRND.csv" in capsys.readouterr().err


def test_qtmesh_evolve_runs_the_research_command(capsys):
    with pytest.raises(SystemExit) as exited:
        qtmesh_main(["evolve", "--days", "1", "--symbol", "ORBT", "--budget", "8", "--json"])
    assert exited.value.code == 0
    assert last_json(capsys.readouterr().out)["evaluated"] == 8
