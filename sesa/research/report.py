"""The study's HTML page: one self-contained file, its plots drawn with matplotlib (the Agg
backend, no display needed) and embedded as PNG data URIs:

1. equity of the best genome against buy and hold, the held-out bars shaded;
2. their drawdowns;
3. each top genome's Sharpe ratio in every walk-forward fold and in the holdout;
4. the search's progress: every genome's composite score in the order evaluated, the best so
   far, and for an evolution each generation's best and median;
5. the parameters of the most consistent genomes of the best's family, within their bounds,
   and the best's (the best passes the gates, so it need not be the most consistent);
6. deflated Sharpe ratio and consistency of every genome evaluated, the top genomes marked,
   with the probability of backtest overfitting.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from backtest.overfitting import consistency
from sesa.research._study import Study
from sesa.selection import by_consistency, judge

_BEST, _MARKET, _HOLDOUT = "#1565c0", "#757575", "#fff3e0"
# Genomes of the best's family whose parameters are drawn.
_PARAMETER_GENOMES = 20


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _dates(study: Study) -> np.ndarray:
    return study.time.astype("datetime64[ns]")


def _shade_holdout(ax: Axes, study: Study) -> None:
    dates = _dates(study)
    ax.axvspan(dates[study.train_bars], dates[-1], color=_HOLDOUT, label="held out")
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)


def _curves(study: Study) -> dict[str, np.ndarray]:
    return {
        f"best ({study.best.judgement.evaluation.genome.id})": np.cumprod(1 + study.best_returns),
        "buy and hold": np.cumprod(1 + study.buy_and_hold_returns),
    }


def _equity(study: Study) -> str:
    figure, ax = plt.subplots(figsize=(10, 4))
    _shade_holdout(ax, study)
    for (label, equity), colour in zip(_curves(study).items(), (_BEST, _MARKET), strict=True):
        ax.plot(_dates(study), equity, label=label, color=colour)
    curves = np.concatenate(list(_curves(study).values()))
    # A log scale only where growth spans enough to need one; its labels stay plain numbers.
    if curves.max() / curves.min() > 4:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("equity (start = 1)")
    ax.set_title("Equity: searched bars, then held-out bars")
    ax.legend(loc="best")
    return _png(figure)


def _drawdown(study: Study) -> str:
    figure, ax = plt.subplots(figsize=(10, 3))
    _shade_holdout(ax, study)
    for (label, equity), colour in zip(_curves(study).items(), (_BEST, _MARKET), strict=True):
        drawdown = 1 - equity / np.maximum.accumulate(equity)
        ax.fill_between(_dates(study), -100 * drawdown, alpha=0.35, color=colour, label=label)
    ax.set_ylabel("drawdown (%)")
    ax.set_title("Drawdown")
    ax.legend(loc="lower left")
    return _png(figure)


def _folds(study: Study) -> str:
    candidates = study.candidates
    parts = ["in sample"] + [f"fold {i}" for i in range(1, len(study.best.folds))] + ["held out"]
    figure, ax = plt.subplots(figsize=(10, 3.5))
    width = 0.8 / len(candidates)
    for i, c in enumerate(candidates):
        values = [m.sharpe_ratio for m in c.folds] + [c.holdout.sharpe_ratio]
        ax.bar(
            np.arange(len(parts)) + (i - (len(candidates) - 1) / 2) * width,
            values,
            width,
            label=c.judgement.evaluation.genome.id,
        )
    ax.axhline(0, color="#222", linewidth=0.8)
    ax.axvline(len(parts) - 1.5, color="#999", linestyle="--", linewidth=0.8)
    ax.set_xticks(np.arange(len(parts)), parts)
    ax.set_ylabel("Sharpe ratio (annualised)")
    ax.set_title("Walk-forward folds of the searched bars, and the holdout, per top genome")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    return _png(figure)


def _progress(study: Study) -> str:
    scores = np.array([e.composite_score for e in study.evaluations])
    figure, ax = plt.subplots(figsize=(10, 3.5))
    ax.scatter(
        np.arange(1, len(scores) + 1), scores, s=6, alpha=0.35, color=_MARKET, label="genome"
    )
    ax.plot(
        np.arange(1, len(scores) + 1),
        np.maximum.accumulate(scores),
        color=_BEST,
        label="best so far",
    )
    if study.generations:
        # A generation's trial count is the genomes evaluated when it ended.
        ends = [g.trials for g in study.generations]
        ax.plot(
            ends,
            [g.best_composite for g in study.generations],
            "^-",
            color="#2e7d32",
            markersize=4,
            label="generation best",
        )
        ax.plot(
            ends,
            [g.median_composite for g in study.generations],
            "o--",
            color="#ef6c00",
            markersize=3,
            label="generation median",
        )
    ax.set_xlabel("genomes evaluated")
    ax.set_ylabel("composite score")
    ax.set_title(f"Search progress ({study.search})")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return _png(figure)


def _parameters(study: Study) -> str:
    family = study.best.judgement.evaluation.genome.family
    policy = study.policy
    same = [e for e in study.evaluations if e.genome.family is family]
    chosen = sorted(same, key=lambda e: by_consistency(judge(e, study.selection)))
    chosen = chosen[:_PARAMETER_GENOMES]
    specs = [s for s in policy.specs(family) if s.high > s.low]
    units = np.array([[s.to_unit(e.genome.parameters[s.name]) for s in specs] for e in chosen])
    best = study.best.judgement.evaluation.genome
    best_units = [s.to_unit(best.parameters[s.name]) for s in specs]
    figure, ax = plt.subplots(figsize=(10, 0.35 * len(specs) + 1.2))
    rng = np.random.default_rng(0)  # jitter only, so the plot is the same every time
    for row, spec in enumerate(specs):
        jitter = rng.uniform(-0.18, 0.18, len(chosen))
        ax.scatter(units[:, row], row + jitter, s=12, alpha=0.5, color=_MARKET)
        ax.scatter([best_units[row]], [row], s=40, color=_BEST, zorder=3)
        ax.text(1.01, row, f"{spec.low:g} .. {spec.high:g}", va="center", fontsize="x-small")
    ax.set_yticks(np.arange(len(specs)), [s.name for s in specs])
    ax.set_xlim(-0.02, 1.0)
    ax.set_xlabel("position within the bounds (log scale where the parameter is)")
    ax.set_title(
        f"Parameters of the {len(chosen)} most consistent {family.name} genomes (grey) and of "
        "the best (blue)"
    )
    ax.grid(alpha=0.3, axis="x")
    return _png(figure)


def _overfitting(study: Study) -> str:
    blocks = [e.out_of_sample_blocks for e in study.evaluations]
    evaluations = [e for e, b in zip(study.evaluations, blocks, strict=True) if b is not None]
    figure, ax = plt.subplots(figsize=(10, 3.5))
    if evaluations:
        t = consistency(np.stack([b for b in blocks if b is not None]))
        dsr = np.array([e.out_of_sample.deflated_sharpe_ratio for e in evaluations])
        ax.scatter(t, dsr, s=8, alpha=0.35, color=_MARKET, label="genome")
        top = {c.judgement.evaluation.genome.id for c in study.candidates}
        marked = [i for i, e in enumerate(evaluations) if e.genome.id in top]
        ax.scatter(t[marked], dsr[marked], s=40, color=_BEST, label="top genomes")
    ax.axhline(
        study.selection.min_deflated_sharpe,
        color="#c62828",
        linestyle="--",
        linewidth=0.8,
        label="production bar",
    )
    pbo = "n/a" if study.ranking.pbo is None else f"{study.ranking.pbo:.2f}"
    ax.set_xlabel("consistency (t statistic of per-block out-of-sample Sharpe ratios)")
    ax.set_ylabel("deflated Sharpe ratio")
    ax.set_title(f"Deflated Sharpe ratio against consistency; PBO of the search {pbo}")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    return _png(figure)


def _table(study: Study) -> str:
    rows = []
    for i, c in enumerate(study.candidates, 1):
        e = c.judgement.evaluation
        blocks = e.out_of_sample_blocks
        cells = (
            str(i),
            html.escape(e.genome.id),
            c.judgement.stage.name.lower(),
            "-" if blocks is None else f"{consistency(blocks)[0]:.2f}",
            f"{c.walk_forward.deflated_sharpe_ratio:.2f}",
            f"{c.in_sample.sharpe_ratio:+.2f}",
            f"{c.walk_forward.sharpe_ratio:+.2f}",
            f"{c.holdout.sharpe_ratio:+.2f}",
            f"{c.holdout.total_return:+.1%}",
            f"{c.holdout.max_drawdown:.1%}",
            str(c.holdout.trade_count),
        )
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "#",
            "genome",
            "stage",
            "consistency",
            "DSR",
            "in-sample Sharpe",
            "walk-forward Sharpe",
            "held-out Sharpe",
            "held-out return",
            "held-out max DD",
            "held-out trades",
        )
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render(study: Study) -> str:
    figures = (
        _equity(study),
        _drawdown(study),
        _folds(study),
        _progress(study),
        _parameters(study),
        _overfitting(study),
    )
    images = "".join(
        f'<img alt="figure {i}" src="data:image/png;base64,{png}">'
        for i, png in enumerate(figures, 1)
    )
    best = study.best
    pbo = "n/a" if study.ranking.pbo is None else f"{study.ranking.pbo:.2f}"
    title = html.escape(f"{study.search} on {study.symbol}: {study.evaluated} genomes")
    facts = (
        f"<p>{study.train_bars} bars searched, {study.holdout_bars} held out, "
        f"{study.bars_per_year:.0f} bars a year. Best: <code>"
        f"{html.escape(best.judgement.evaluation.genome.id)}</code>, held-out Sharpe "
        f"{best.holdout.sharpe_ratio:+.2f} against buy and hold's "
        f"{study.buy_and_hold.sharpe_ratio:+.2f}. Probability of backtest overfitting {pbo}; "
        f"{len(study.ranking.shadow_candidates)} shadow and "
        f"{len(study.ranking.production_candidates)} production candidates.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1150px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3rem .7rem; text-align: right; }}
td:nth-child(2) {{ text-align: left; font-family: monospace; white-space: nowrap; }}
img {{ display: block; max-width: 100%; margin: 1.2rem 0; }}
</style></head>
<body><h1>{title}</h1>
{facts}
{_table(study)}
{images}
</body></html>
"""


def write_report(study: Study, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(study))
    return path
