"""The replay's report: one JSON document of what each arm did and how the fleet fared, and the
summary figures a benchmark compares across seeds.

Counts come from the plans' final statuses: a promotion is a completed PROMOTE_STRATEGY, a halt a
completed HALT_TRADING; a refused promotion is one that failed (its detail says why) or never
ran. Times are ISO 8601 UTC strings; fractions are fractions (0.05 is 5 %).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from qtmesh.base.bars import format_time
from qtmesh.base.contract import ActionStatus, ActionType
from replay.driver import ReplayRun
from replay.metrics import curve_metrics, drawdowns


@dataclasses.dataclass(frozen=True)
class ArmSummary:
    """The figures of one arm that a comparison across seeds reads."""

    sharpe: float
    total_return: float
    max_drawdown: float
    volatility: float
    promotions: int
    halts: int
    plans: int
    actions: int
    days: float
    wall_seconds: float


def summary(run: ReplayRun) -> ArmSummary:
    m = curve_metrics([s.time for s in run.samples], [s.equity for s in run.samples])
    return ArmSummary(
        sharpe=m.sharpe,
        total_return=m.total_return,
        max_drawdown=m.max_drawdown,
        volatility=m.volatility,
        promotions=len(run.actions(ActionType.PROMOTE_STRATEGY, ActionStatus.COMPLETED)),
        halts=len(run.actions(ActionType.HALT_TRADING, ActionStatus.COMPLETED)),
        plans=len(run.plans),
        actions=sum(len(p.actions) for p in run.plans),
        days=run.days,
        wall_seconds=run.wall_seconds,
    )


def arm_document(run: ReplayRun) -> dict[str, Any]:
    """Everything one arm did, JSON-ready."""
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for plan in run.plans:
        for action in plan.actions:
            by_type[action.action_type][action.status] += 1
    equity = [s.equity for s in run.samples]
    falls = drawdowns(equity)
    return {
        "arm": run.arm.value,
        "summary": dataclasses.asdict(summary(run)),
        "wall_s_per_day": run.wall_seconds / run.days if run.days else None,
        "wall_seconds_by_phase": {k: round(v, 3) for k, v in run.wall_seconds_by_phase.items()},
        "market_ran_out": run.at_end,
        "samples": [
            {
                "time": format_time(s.time),
                "equity": s.equity,
                "drawdown": float(d),
                "allocations": dict(s.allocations),
                "halted": list(s.halted),
                "scale": s.scale,
            }
            for s, d in zip(run.samples, falls, strict=True)
        ],
        "actions_by_type": {t: dict(c) for t, c in sorted(by_type.items())},
        "promotions": [
            _event(run, ActionType.PROMOTE_STRATEGY, status)
            for status in (ActionStatus.COMPLETED, ActionStatus.FAILED)
        ],
        "halts": _event(run, ActionType.HALT_TRADING, ActionStatus.COMPLETED),
        "plans": [
            {
                "sequence": p.sequence,
                "time": format_time(p.time),
                "summary": p.summary,
                "agents": [
                    {"agent": a, "outcome": o, "latency_seconds": round(t, 4)}
                    for a, o, t in p.agents
                ],
                "actions": [dataclasses.asdict(a) for a in p.actions],
            }
            for p in run.plans
        ],
        "audits": [dataclasses.asdict(a) for a in run.audits],
        "meta": [
            {"version": m.version, "time": format_time(m.time), "cause": m.cause, **m.values}
            for m in run.meta
        ],
    }


def _event(run: ReplayRun, kind: ActionType, status: ActionStatus) -> list[dict[str, Any]]:
    return [
        {
            "plan": p.sequence,
            "time": format_time(p.time),
            "target": a.target,
            "status": a.status,
            "detail": a.detail,
        }
        for p in run.plans
        for a in p.actions
        if a.action_type == kind.name and a.status == status.name
    ]


def document(closed: ReplayRun, static: ReplayRun | None) -> dict[str, Any]:
    """The replay's report: both arms on the same bars, and how the closed loop differs."""
    doc: dict[str, Any] = {
        "source": closed.source,
        "days": closed.days,
        "bar_seconds": closed.bar_seconds,
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in dataclasses.asdict(closed.config).items()
        },
        "closed": arm_document(closed),
    }
    if static is not None:
        doc["static"] = arm_document(static)
        a, b = summary(closed), summary(static)
        doc["closed_minus_static"] = {
            "sharpe": a.sharpe - b.sharpe,
            "total_return": a.total_return - b.total_return,
            "max_drawdown": a.max_drawdown - b.max_drawdown,
        }
    return doc


def write_json(doc: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path
