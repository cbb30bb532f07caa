"""The replay's HTML page: the report's figures as plots, one self-contained file.

Plots are drawn with matplotlib (the Agg backend, no display needed) and embedded as PNG data
URIs, so the page opens anywhere without its folder:

1. equity of the closed loop against the static fleet, with promotions and halts marked;
2. their drawdowns;
3. the closed loop's sector allocations over time;
4. actions by type, split by final status;
5. meta's parameters over time (each relative to its first value, so they share an axis).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

_STATUS_COLOURS = {
    "COMPLETED": "#2e7d32",
    "FAILED": "#c62828",
    "EXPIRED": "#ef6c00",
    "BLOCKED": "#6d4c41",
    "SUPERSEDED": "#9e9e9e",
    "HELD": "#5c6bc0",
}


def _times(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """The rows' ISO 8601 UTC times, as numpy datetimes (UTC, which matplotlib plots as is)."""
    return np.array([np.datetime64(r["time"].removesuffix("Z"), "s") for r in rows])


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _time_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)


def _equity(doc: dict[str, Any]) -> str:
    figure, ax = plt.subplots(figsize=(10, 4))
    for arm, colour in (("closed", "#1565c0"), ("static", "#757575")):
        if arm not in doc:
            continue
        samples = doc[arm]["samples"]
        start = samples[0]["equity"]
        ax.plot(
            _times(samples),
            [s["equity"] / start for s in samples],
            label=f"{arm} loop" if arm == "closed" else "static fleet",
            color=colour,
        )
    closed = doc["closed"]
    for rows, marker, colour, label in (
        (closed["promotions"][0], "^", "#2e7d32", "promotion"),
        (closed["promotions"][1], "v", "#c62828", "promotion refused"),
        (closed["halts"], "X", "#000000", "halt"),
    ):
        if rows:
            ax.scatter(_times(rows), [1.0] * len(rows), marker=marker, color=colour, label=label)
    ax.set_ylabel("equity (start = 1)")
    ax.set_title("Fleet equity: closed loop vs static")
    ax.legend(loc="best")
    _time_axis(ax)
    return _png(figure)


def _drawdown(doc: dict[str, Any]) -> str:
    figure, ax = plt.subplots(figsize=(10, 3))
    for arm, colour in (("closed", "#1565c0"), ("static", "#757575")):
        if arm in doc:
            samples = doc[arm]["samples"]
            ax.fill_between(
                _times(samples),
                [-100 * s["drawdown"] for s in samples],
                alpha=0.35,
                color=colour,
                label=arm,
            )
    ax.set_ylabel("drawdown (%)")
    ax.set_title("Drawdown")
    ax.legend(loc="lower left")
    _time_axis(ax)
    return _png(figure)


def _allocations(doc: dict[str, Any]) -> str:
    samples = doc["closed"]["samples"]
    sectors = sorted({k for s in samples for k in s["allocations"]})
    figure, ax = plt.subplots(figsize=(10, 3.5))
    ax.stackplot(
        _times(samples),
        [[100 * s["allocations"].get(k, 0.0) for s in samples] for k in sectors],
        labels=sectors,
        alpha=0.85,
    )
    ax.set_ylabel("% of equity")
    ax.set_title("Closed loop: sector allocations")
    ax.legend(loc="upper left", ncol=len(sectors), fontsize="small")
    _time_axis(ax)
    return _png(figure)


def _actions(doc: dict[str, Any]) -> str | None:
    by_type: dict[str, dict[str, int]] = doc["closed"]["actions_by_type"]
    if not by_type:
        return None
    types = sorted(by_type, key=lambda t: -sum(by_type[t].values()))
    statuses = [s for s in _STATUS_COLOURS if any(s in by_type[t] for t in types)]
    figure, ax = plt.subplots(figsize=(10, 0.45 * len(types) + 1.2))
    left = [0] * len(types)
    for status in statuses:
        counts = [by_type[t].get(status, 0) for t in types]
        ax.barh(types, counts, left=left, color=_STATUS_COLOURS[status], label=status)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("actions")
    ax.set_title("Actions by type and final status")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="x", alpha=0.3)
    return _png(figure)


def _meta(doc: dict[str, Any]) -> str | None:
    rows = doc["closed"]["meta"]
    if not rows:
        return None
    names = [
        k
        for k in (
            "risk_multiplier",
            "position_size_scale",
            "rl_exploration_rate",
            "rl_learning_rate",
            "sesa_mutation_rate",
            "sesa_mutation_magnitude",
        )
        if k in rows[0]
    ]
    figure, ax = plt.subplots(figsize=(10, 3.5))
    times = _times(rows)
    for name in names:
        first = rows[0][name] or 1.0
        ax.step(times, [r[name] / first for r in rows], where="post", label=name)
    ax.set_ylabel("value / first value")
    ax.set_title(f"Meta parameters over time ({len(rows)} versions)")
    ax.legend(loc="best", fontsize="small", ncol=2)
    _time_axis(ax)
    return _png(figure)


def _table(doc: dict[str, Any]) -> str:
    arms = [a for a in ("closed", "static") if a in doc]
    rows = [
        ("Sharpe", "sharpe", "{:.2f}"),
        ("total return", "total_return", "{:+.2%}"),
        ("max drawdown", "max_drawdown", "{:.2%}"),
        ("volatility (annual)", "volatility", "{:.1%}"),
        ("plans", "plans", "{:d}"),
        ("actions", "actions", "{:d}"),
        ("promotions", "promotions", "{:d}"),
        ("halts", "halts", "{:d}"),
        ("wall seconds", "wall_seconds", "{:.0f}"),
    ]
    head = "".join(f"<th>{html.escape(a)}</th>" for a in arms)
    body = "".join(
        f"<tr><td>{label}</td>"
        + "".join(f"<td>{fmt.format(doc[a]['summary'][key])}</td>" for a in arms)
        + "</tr>"
        for label, key, fmt in rows
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def render(doc: dict[str, Any]) -> str:
    """The page of a report document (:func:`replay.report.document`)."""
    figures = [
        _equity(doc),
        _drawdown(doc),
        _allocations(doc),
        _actions(doc),
        _meta(doc),
    ]
    images = "".join(
        f'<img alt="figure {i}" src="data:image/png;base64,{png}">'
        for i, png in enumerate(figures, 1)
        if png is not None
    )
    audits = doc["closed"]["audits"]
    audited = (
        f"<p>{len(audits)} end-of-day audits; "
        f"{sum(a['reports_rejected'] for a in audits)} reports rejected; "
        f"{sum(len(a['proposals']) for a in audits)} proposals.</p>"
    )
    title = f"Replay: {html.escape(str(doc['source']))}, {doc['days']:.1f} days"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1150px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3rem .9rem; text-align: right; }}
td:first-child {{ text-align: left; }}
img {{ display: block; max-width: 100%; margin: 1.2rem 0; }}
</style></head>
<body><h1>{title}</h1>
{_table(doc)}
{audited}
{images}
</body></html>
"""


def write_html(doc: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(doc))
    return path
