"""What the risk officer recommends from a risk report (see :mod:`agents.risk.assessment`).

* **Standing halts.** While the fleet's kill switch is engaged on a scope and a breach of that
  scope stands, the officer re-asserts it every cycle (CRITICAL HaltTrading, confidence 1, one
  intent per halt so the fleet applies it once) so that, in the plan, it outranks any risk-on
  proposal on the same target. With the portfolio halted it recommends nothing else; with a
  sector halted, nothing else for that sector.
* **Resume.** Once the halted scope has no breach left over the lookback (a halted fleet is
  flat, so its drawdown and VaR fade as the periods before the halt leave the lookback), and
  its returns are enough to measure VaR: HIGH ResumeTrading on it, confidence
  min(1, 0.5 + 0.5 (1 - u)), u the largest of drawdown / max_drawdown and VaR95 / max_var_95.
  An operator can also resume at once with the risk service's ResumeTrading.
* **Halt.** Portfolio drawdown or historical VaR95 at least ``halt_margin`` (25%) over its limit:
  CRITICAL HaltTrading on the portfolio.
* **Cut the portfolio.** Otherwise, any portfolio breach (VaR95, drawdown, gross exposure):
  CRITICAL AdjustExposure(sector "", factor f_p), f_p = max(min_factor, min threshold/value over
  the breaches). Scaling every position by threshold/value brings VaR and gross exposure, both
  proportional to position size, back to their limits; after a drawdown it cuts risk in
  proportion to the overshoot.
* **Cut a sector.** Exposure over the sector's limit: CRITICAL AdjustExposure(sector,
  limit/exposure); standalone VaR95 over its budget: HIGH AdjustExposure(sector, budget/VaR);
  both: CRITICAL with the smaller factor. A portfolio cut f_p in the same round already scales
  the sector, so its factor is f_s / f_p, and a sector the portfolio cut suffices for gets none.

Confidence of a breach: min(1, 0.5 + 0.5 e / halt_margin), e = value / threshold - 1: 0.5 right
at the limit, 1 from the halt threshold on. VaR-based breaches are multiplied by
n / (n + min_observations), n the number of returns: an estimate from few returns is less sure.
An action driven by several breaches takes the largest confidence.
"""

from __future__ import annotations

from agents.risk.assessment import Breach, RiskReport, RiskSettings
from agents.risk.limits import PORTFOLIO, Halt
from qtmesh.base.bars import format_time
from qtmesh.base.contract import (
    AdjustExposure,
    HaltTrading,
    Priority,
    Recommendation,
    ResumeTrading,
)

_VAR_LIMITS = ("max_var_95", "sector_var_95")
_EPS = 1e-12


def horizon_text(nanos: int) -> str:
    if nanos <= 0:
        return "per observation"
    minutes = nanos / 60e9
    return f"per {minutes / 60:g} h" if minutes >= 60 else f"per {minutes:g} min"


def confidence(breach: Breach, report: RiskReport, settings: RiskSettings) -> float:
    value = min(1.0, 0.5 + 0.5 * breach.excess / settings.halt_margin)
    if breach.limit.split("/")[0] in _VAR_LIMITS:
        n = report.observations
        value *= n / (n + settings.min_observations)
    return max(0.0, min(1.0, value))


def describe(breach: Breach, report: RiskReport) -> str:
    kind = breach.limit.split("/")[0]
    what = {
        "max_var_95": f"historical VaR95 {horizon_text(report.horizon)}",
        "max_drawdown": "drawdown",
        "max_gross_exposure": "gross exposure",
        "sector_exposure": "gross exposure",
        "sector_var_95": f"standalone VaR95 {horizon_text(report.horizon)} in equity terms",
    }[kind]
    limit = "budget" if kind == "sector_var_95" else "limit"
    return (
        f"{what} {breach.value:.2%} is {breach.excess:.0%} over its {breach.threshold:.2%} {limit}"
    )


def recommend(report: RiskReport, settings: RiskSettings) -> list[Recommendation]:
    """The officer's recommendations for ``report``; none without breaches or halts."""
    recommendations = []
    for halt in report.halts:
        standing = [b for b in report.breaches if b.scope == halt.scope]
        if standing or not report.tail_measured:
            recommendations.append(_standing(report, halt))
        else:
            recommendations.append(_resume(report, halt))
    if report.trading_halted:
        return recommendations
    halted = {h.scope for h in report.halts}
    portfolio = [b for b in report.breaches if b.scope == PORTFOLIO]
    halting = [
        b
        for b in portfolio
        if b.limit in ("max_drawdown", "max_var_95") and b.excess >= settings.halt_margin - _EPS
    ]
    if halting:
        return [*recommendations, _halt(halting, portfolio, report, settings)]
    cut = 1.0
    if portfolio:
        cut = max(settings.min_factor, min(b.threshold / b.value for b in portfolio))
        recommendations.append(
            _cut(PORTFOLIO, cut, portfolio, Priority.CRITICAL, report, settings, note="")
        )
    for sector in report.sectors:
        if sector.sector in halted:
            continue
        breaches = [b for b in report.breaches if b.scope == sector.sector]
        if not breaches:
            continue
        wanted = max(settings.min_factor, min(b.threshold / b.value for b in breaches))
        factor = wanted / cut
        if factor >= 1 - 1e-9:
            continue  # the portfolio cut already brings the sector within its limits
        critical = any(b.limit.startswith("sector_exposure/") for b in breaches)
        note = f" after the portfolio's {cut:.2f}x cut" if cut < 1 else ""
        recommendations.append(
            _cut(
                sector.sector,
                factor,
                breaches,
                Priority.CRITICAL if critical else Priority.HIGH,
                report,
                settings,
                note=note,
            )
        )
    return recommendations


def _evidence(breaches: list[Breach], report: RiskReport) -> dict[str, float]:
    evidence = {
        "drawdown": report.drawdown,
        "gross_exposure": report.gross_exposure,
        "historical_var_95": report.portfolio.historical_var_95,
        "observations": float(report.observations),
    }
    for b in breaches:
        evidence[f"{b.limit}.value"] = b.value
        evidence[f"{b.limit}.threshold"] = b.threshold
    return evidence


def _context(report: RiskReport) -> str:
    if not report.tail_measured:
        return f"({report.observations} returns: too few for VaR)"
    p = report.portfolio
    # + 0.0: the loss of a flat series is -0.0, which would print as "-0.00%".
    var, cvar = p.historical_var_95 + 0.0, p.historical_cvar_95 + 0.0
    return (
        f"(historical VaR95 {var:.2%} / CVaR95 {cvar:.2%} "
        f"{horizon_text(report.horizon)} over {report.observations} returns, drawdown "
        f"{report.drawdown:.2%}, gross exposure {report.gross_exposure:.1%})"
    )


def _standing(report: RiskReport, halt: Halt) -> Recommendation:
    return Recommendation(
        id=f"risk/halt/{halt.scope}",
        priority=Priority.CRITICAL,
        target=_target(halt.scope),
        parameters=HaltTrading(scope=halt.scope),
        confidence=1.0,
        rationale=(
            f"The kill switch on {halt.scope} has been engaged since {format_time(halt.since)} "
            f"({halt.reason}); it stands while a breach of {halt.scope} stands "
            f"{_context(report)}."
        ),
        evidence={"halted": 1.0},
        intent_key=f"halt/{halt.scope}/{halt.since}",
        as_of_time=report.as_of_time,
    )


def _resume(report: RiskReport, halt: Halt) -> Recommendation:
    limits = report.limits
    used = max(
        report.drawdown / limits.max_drawdown,
        report.portfolio.historical_var_95 / limits.max_var_95,
    )
    return Recommendation(
        id=f"risk/resume/{halt.scope}",
        priority=Priority.HIGH,
        target=_target(halt.scope),
        parameters=ResumeTrading(scope=halt.scope),
        confidence=min(1.0, 0.5 + 0.5 * max(0.0, 1 - used)),
        rationale=(
            f"Resume trading on {halt.scope}, halted since {format_time(halt.since)}: no limit "
            f"is breached over the lookback any more {_context(report)}."
        ),
        evidence={**_evidence([], report), "limit_use": used},
        intent_key=f"resume/{halt.scope}/{halt.since}",
        as_of_time=report.as_of_time,
    )


def _halt(
    halting: list[Breach], portfolio: list[Breach], report: RiskReport, settings: RiskSettings
) -> Recommendation:
    reasons = "; ".join(describe(b, report) for b in portfolio)
    return Recommendation(
        id=f"risk/halt/{PORTFOLIO}",
        priority=Priority.CRITICAL,
        target=PORTFOLIO,
        parameters=HaltTrading(scope=PORTFOLIO),
        confidence=max(confidence(b, report, settings) for b in halting),
        rationale=(
            f"Halt trading: portfolio {reasons}; a breach of {settings.halt_margin:.0%} or more "
            f"halts {_context(report)}."
        ),
        evidence=_evidence(portfolio, report),
        as_of_time=report.as_of_time,
    )


def _cut(
    scope: str,
    factor: float,
    breaches: list[Breach],
    priority: Priority,
    report: RiskReport,
    settings: RiskSettings,
    *,
    note: str,
) -> Recommendation:
    reasons = "; ".join(describe(b, report) for b in breaches)
    subject = "the portfolio's" if scope == PORTFOLIO else f"{scope}'s"
    return Recommendation(
        id=f"risk/exposure/{scope}",
        priority=priority,
        target=_target(scope),
        parameters=AdjustExposure(sector="" if scope == PORTFOLIO else scope, factor=factor),
        confidence=max(confidence(b, report, settings) for b in breaches),
        rationale=(
            f"Scale {subject} exposure by {factor:.2f}{note}: {reasons} {_context(report)}."
        ),
        evidence={**_evidence(breaches, report), "factor": factor},
        as_of_time=report.as_of_time,
    )


def _target(scope: str) -> str:
    return PORTFOLIO if scope == PORTFOLIO else f"sector/{scope}"
