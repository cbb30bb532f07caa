"""The alpha audit: maps ROI and alpha across sectors from verified daily reports, names the
alpha-dominant sector and drafts the proposals the statistics support.

Per sector, the series is its daily alpha a_1..a_n (report alpha = ROI - benchmark return):

* **Window figures.** ROI and benchmark return compound the daily ones; alpha is their
  difference; volatility is the root mean square of the daily (annualised intraday)
  volatilities; max drawdown is the larger of the worst intraday drawdown and the drawdown of
  the compounded daily ROI; fleet size is the latest day's.
* **Significance of alpha.** One-sample t-test of the daily alphas against zero:
  t = mean / (s / sqrt(n)), s with ddof 1, n - 1 degrees of freedom, one-sided p-values for
  mean > 0 and mean < 0 (``scipy.stats.ttest_1samp``). Days with constant alpha have s = 0: a
  non-zero mean then counts as certain (p = 0), a zero one as nothing (p = 1).
* **Reinforcement** (+20% fleet, AdjustExposure factor 1.2): n >= ``min_days`` and the
  one-sided p for mean > 0 below ``reinforcement_significance`` (0.05).
* **Risk mitigation** (-50% exposure, factor 0.5): n >= ``min_days``, mean < 0 and the
  one-sided p for mean < 0 below ``mitigation_significance`` (0.10: trimming risk on weaker
  evidence than adding it).
* **Arb-mission**: among sectors with n >= ``min_days`` (at least two of them, each with two
  days or more), the best and worst mean daily alpha are compared with Tukey-Kramer's
  studentized range test: q = (mean_best - mean_worst) / sqrt(MSE / 2 * (1/n_best + 1/n_worst)),
  MSE the pooled within-sector variance of daily alpha (one-way ANOVA residual, N - k degrees
  of freedom), p = P(Q_{k, N-k} >= q) (``scipy.stats.studentized_range``). Because the range
  distribution accounts for picking the extremes among k sectors, the gap must be large against
  the day-to-day variation, not just non-zero. Significant at p below ``arb_significance``
  (0.05): long the best sector, short the worst, ``arb_allocation`` of equity per leg.
* **Confidence** of a proposal is 1 - p of its test; the dominant sector has the highest mean
  daily alpha (ties: the higher t statistic, then the name).

Small samples: with 3-5 days the t-test has 2-4 degrees of freedom and little power, and it
assumes roughly normal, independent daily alphas; fat tails or autocorrelated days make its
p-values optimistic. ``min_days`` keeps proposals from resting on fewer days than that.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence

import numpy as np

from alpha_reporting.report import SectorReport


class ProposalType(enum.Enum):
    REINFORCEMENT = 1
    RISK_MITIGATION = 2
    ARB_MISSION = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditSettings:
    min_days: int = 3
    reinforcement_significance: float = 0.05
    mitigation_significance: float = 0.10
    arb_significance: float = 0.05
    reinforcement_factor: float = 1.2
    mitigation_factor: float = 0.5
    arb_allocation: float = 0.10


@dataclasses.dataclass(frozen=True)
class SectorAudit:
    sector: str
    report_ids: tuple[str, ...]
    first_date: str
    last_date: str
    roi: float
    benchmark_return: float
    alpha: float
    mean_daily_alpha: float
    alpha_stddev: float
    alpha_t_stat: float
    p_value_positive: float
    p_value_negative: float
    volatility: float
    max_drawdown: float
    fleet_size: int

    @property
    def report_count(self) -> int:
        return len(self.report_ids)


@dataclasses.dataclass(frozen=True)
class GapTest:
    best_sector: str
    worst_sector: str
    gap: float
    q_statistic: float
    p_value: float
    sector_count: int
    degrees_of_freedom: int
    significant: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProposalDraft:
    """A proposal before the ledger gives it an id, a time and its hashes."""

    type: ProposalType
    action: str
    target_sector: str
    counter_sector: str = ""
    rationale: str
    confidence: float
    p_value: float
    report_ids: tuple[str, ...]
    factor: float = 0.0
    allocation: float = 0.0


@dataclasses.dataclass(frozen=True)
class Audit:
    sectors: tuple[SectorAudit, ...]
    dominant_sector: str
    gap_test: GapTest | None
    proposals: tuple[ProposalDraft, ...]


def audit(reports: Sequence[SectorReport], settings: AuditSettings) -> Audit:
    """The audit of verified reports (at most one per sector and day)."""
    by_sector: dict[str, list[SectorReport]] = {}
    for report in sorted(reports, key=lambda r: (r.sector, r.trading_date)):
        by_sector.setdefault(report.sector, []).append(report)
    audits = [_sector_audit(sector, days) for sector, days in by_sector.items()]
    audits.sort(key=lambda a: (-a.mean_daily_alpha, -_finite(a.alpha_t_stat), a.sector))
    dominant = audits[0].sector if audits else ""
    alphas = {s: np.array([r.alpha for r in days]) for s, days in by_sector.items()}
    eligible = [a for a in audits if a.report_count >= max(settings.min_days, 2)]
    gap = gap_test(
        {a.sector: alphas[a.sector] for a in eligible}, significance=settings.arb_significance
    )
    proposals: list[ProposalDraft] = []
    for a in audits:
        if a.report_count < settings.min_days:
            continue
        if a.p_value_positive < settings.reinforcement_significance:
            proposals.append(_reinforcement(a, settings))
        elif a.mean_daily_alpha < 0 and a.p_value_negative < settings.mitigation_significance:
            proposals.append(_mitigation(a, settings))
    if gap is not None and gap.significant:
        best = next(a for a in audits if a.sector == gap.best_sector)
        worst = next(a for a in audits if a.sector == gap.worst_sector)
        proposals.append(_arb(gap, best, worst, settings))
    return Audit(tuple(audits), dominant, gap, tuple(proposals))


def one_sample_t(values: np.ndarray) -> tuple[float, float, float, float]:
    """(standard deviation, t statistic, p for mean > 0, p for mean < 0) of ``values``."""
    n = values.size
    mean = float(values.mean()) if n else 0.0
    if n < 2:
        return 0.0, 0.0, 1.0, 1.0
    std = float(values.std(ddof=1))
    if std == 0.0 or std < 1e-15 * abs(mean):
        if mean == 0:
            return 0.0, 0.0, 1.0, 1.0
        return 0.0, math.copysign(math.inf, mean), float(mean < 0), float(mean > 0)
    from scipy import stats  # 0.4 s to import: only a process that audits pays it

    t = mean / (std / math.sqrt(n))
    greater = float(stats.ttest_1samp(values, 0.0, alternative="greater").pvalue)
    less = float(stats.ttest_1samp(values, 0.0, alternative="less").pvalue)
    return std, t, greater, less


def gap_test(alphas: dict[str, np.ndarray], *, significance: float) -> GapTest | None:
    """Tukey-Kramer studentized range test of the best against the worst mean daily alpha;
    None when fewer than two sectors or no residual degrees of freedom."""
    if len(alphas) < 2:
        return None
    means = {s: float(v.mean()) for s, v in alphas.items()}
    ranked = sorted(means, key=lambda s: (-means[s], s))
    best, worst = ranked[0], ranked[-1]
    k = len(alphas)
    df = sum(v.size for v in alphas.values()) - k
    if df < 1:
        return None
    mse = sum(float(np.sum((v - v.mean()) ** 2)) for v in alphas.values()) / df
    gap = means[best] - means[worst]
    se = math.sqrt(mse / 2 * (1 / alphas[best].size + 1 / alphas[worst].size))
    if se == 0.0:
        q, p = (math.inf, 0.0) if gap > 0 else (0.0, 1.0)
    else:
        from scipy import stats

        q = gap / se
        p = float(stats.studentized_range.sf(q, k, df))
    return GapTest(best, worst, gap, q, p, k, df, p < significance)


def _sector_audit(sector: str, days: list[SectorReport]) -> SectorAudit:
    alphas = np.array([r.alpha for r in days])
    roi_path = np.cumprod([1 + r.roi for r in days])
    peak = np.maximum.accumulate(np.concatenate([[1.0], roi_path]))[1:]
    roi = float(roi_path[-1] - 1)
    benchmark = float(np.prod([1 + r.benchmark_return for r in days]) - 1)
    std, t, greater, less = one_sample_t(alphas)
    return SectorAudit(
        sector=sector,
        report_ids=tuple(r.report_id for r in days),
        first_date=days[0].trading_date,
        last_date=days[-1].trading_date,
        roi=roi,
        benchmark_return=benchmark,
        alpha=roi - benchmark,
        mean_daily_alpha=float(alphas.mean()),
        alpha_stddev=std,
        alpha_t_stat=t,
        p_value_positive=greater,
        p_value_negative=less,
        volatility=float(np.sqrt(np.mean([r.volatility**2 for r in days]))),
        max_drawdown=max(max(r.max_drawdown for r in days), float(np.max(1 - roi_path / peak))),
        fleet_size=days[-1].fleet_size,
    )


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.copysign(1e300, value)


def _percent(fraction: float) -> str:
    return f"{fraction:+.2%}"


def _t(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else ("+inf" if value > 0 else "-inf")


def _reinforcement(a: SectorAudit, settings: AuditSettings) -> ProposalDraft:
    change = settings.reinforcement_factor - 1
    return ProposalDraft(
        type=ProposalType.REINFORCEMENT,
        action=f"scale_fleet {change:+.0%}",
        target_sector=a.sector,
        rationale=(
            f"{a.sector} earned a mean daily alpha of {_percent(a.mean_daily_alpha)} over "
            f"{a.report_count} days (t = {_t(a.alpha_t_stat)}, one-sided p = "
            f"{a.p_value_positive:.3f} < {settings.reinforcement_significance}; window ROI "
            f"{_percent(a.roi)} against a benchmark of {_percent(a.benchmark_return)}): scale "
            f"its fleet by {change:+.0%}."
        ),
        confidence=1 - a.p_value_positive,
        p_value=a.p_value_positive,
        report_ids=a.report_ids,
        factor=settings.reinforcement_factor,
    )


def _mitigation(a: SectorAudit, settings: AuditSettings) -> ProposalDraft:
    change = settings.mitigation_factor - 1
    return ProposalDraft(
        type=ProposalType.RISK_MITIGATION,
        action=f"reduce_exposure {change:+.0%}",
        target_sector=a.sector,
        rationale=(
            f"{a.sector} lost a mean daily alpha of {_percent(a.mean_daily_alpha)} over "
            f"{a.report_count} days (t = {_t(a.alpha_t_stat)}, one-sided p = "
            f"{a.p_value_negative:.3f} < {settings.mitigation_significance}; window ROI "
            f"{_percent(a.roi)} against a benchmark of {_percent(a.benchmark_return)}): cut its "
            f"exposure by {-change:.0%}."
        ),
        confidence=1 - a.p_value_negative,
        p_value=a.p_value_negative,
        report_ids=a.report_ids,
        factor=settings.mitigation_factor,
    )


def _arb(
    gap: GapTest, best: SectorAudit, worst: SectorAudit, settings: AuditSettings
) -> ProposalDraft:
    return ProposalDraft(
        type=ProposalType.ARB_MISSION,
        action=f"spawn_arb_mission long {best.sector} / short {worst.sector} "
        f"{settings.arb_allocation:.0%}",
        target_sector=best.sector,
        counter_sector=worst.sector,
        rationale=(
            f"The gap between {best.sector} ({_percent(best.mean_daily_alpha)} alpha a day) and "
            f"{worst.sector} ({_percent(worst.mean_daily_alpha)}) is {gap.gap:.2%} a day, "
            f"q = {_t(gap.q_statistic)} on Tukey-Kramer's studentized range across "
            f"{gap.sector_count} sectors and {gap.degrees_of_freedom} residual degrees of "
            f"freedom (p = {gap.p_value:.3f} < {settings.arb_significance}): spawn an "
            f"arb-mission long {best.sector} / short {worst.sector} with "
            f"{settings.arb_allocation:.0%} of equity per leg."
        ),
        confidence=1 - gap.p_value,
        p_value=gap.p_value,
        report_ids=best.report_ids + worst.report_ids,
        allocation=settings.arb_allocation,
    )
