"""The alpha audit on planted sector returns: the dominant sector, the t-tests and the
studentized range test (cross-checked with scipy), and the proposals they support."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from meta_optimizer.audit import AuditSettings, ProposalType, audit, gap_test, one_sample_t
from tests.helpers.meta_optimizer import noise, planted

SETTINGS = AuditSettings()


def test_known_sector_returns_give_the_expected_dominant_sector_and_proposals():
    alphas = {
        "Tech": noise(1, 0.010, 0.003),
        "Energy": noise(2, -0.008, 0.003),
        "Crypto": noise(3, 0.000, 0.003),
        "Financials": noise(4, 0.001, 0.003),
    }
    reports = [r for sector, a in alphas.items() for r in planted(sector, a)]
    result = audit(reports, SETTINGS)
    assert result.dominant_sector == "Tech"
    assert result.sectors[0].sector == "Tech"
    kinds = {(p.type, p.target_sector, p.counter_sector) for p in result.proposals}
    assert kinds == {
        (ProposalType.REINFORCEMENT, "Tech", ""),
        (ProposalType.RISK_MITIGATION, "Energy", ""),
        (ProposalType.ARB_MISSION, "Tech", "Energy"),
    }
    reinforce = next(p for p in result.proposals if p.type is ProposalType.REINFORCEMENT)
    tech = next(a for a in result.sectors if a.sector == "Tech")
    expected = stats.ttest_1samp(alphas["Tech"], 0.0, alternative="greater")
    assert tech.alpha_t_stat == pytest.approx(expected.statistic)
    assert tech.p_value_positive == pytest.approx(expected.pvalue)
    assert reinforce.factor == 1.2
    assert reinforce.confidence == pytest.approx(1 - expected.pvalue)
    assert reinforce.report_ids == tuple(r.report_id for r in planted("Tech", alphas["Tech"]))
    assert f"t = {expected.statistic:.2f}" in reinforce.rationale
    assert "+20%" in reinforce.rationale
    mitigate = next(p for p in result.proposals if p.type is ProposalType.RISK_MITIGATION)
    assert mitigate.factor == 0.5
    assert "cut its exposure by 50%" in mitigate.rationale
    arb = next(p for p in result.proposals if p.type is ProposalType.ARB_MISSION)
    assert arb.allocation == 0.1
    assert "long Tech / short Energy" in arb.rationale
    assert len(arb.report_ids) == 16


def test_the_gap_test_is_tukey_kramer_on_the_best_and_worst_sector():
    alphas = {
        "A": noise(5, 0.004, 0.004, 6),
        "B": noise(6, 0.000, 0.004, 9),
        "C": noise(7, -0.004, 0.004, 7),
    }
    gap = gap_test(alphas, significance=0.05)
    names = sorted(alphas, key=lambda s: -alphas[s].mean())
    reference = stats.tukey_hsd(*(alphas[s] for s in sorted(alphas)))
    order = sorted(alphas)
    assert (gap.best_sector, gap.worst_sector) == (names[0], names[-1])
    assert gap.p_value == pytest.approx(
        reference.pvalue[order.index(gap.best_sector), order.index(gap.worst_sector)], rel=1e-3
    )
    assert gap.degrees_of_freedom == 6 + 9 + 7 - 3
    assert gap.gap == pytest.approx(alphas[names[0]].mean() - alphas[names[-1]].mean())


def test_no_significant_gap_gives_no_arb_mission():
    # Sector means differ by far less than the day-to-day spread of alpha.
    alphas = {s: noise(10 + i, 0.0002 * i, 0.01) for i, s in enumerate(["A", "B", "C", "D"])}
    result = audit([r for s, a in alphas.items() for r in planted(s, a)], SETTINGS)
    assert result.gap_test is not None
    assert not result.gap_test.significant
    assert result.gap_test.p_value > 0.05
    assert all(p.type is not ProposalType.ARB_MISSION for p in result.proposals)
    assert result.proposals == ()


def test_a_large_gap_alone_is_not_enough_when_days_are_noisy():
    # The same 1%/day gap, once against calm days and once against wild ones.
    calm = {"A": noise(20, 0.005, 0.002), "B": noise(21, -0.005, 0.002)}
    wild = {"A": noise(20, 0.005, 0.05), "B": noise(21, -0.005, 0.05)}
    assert gap_test(calm, significance=0.05).significant
    assert not gap_test(wild, significance=0.05).significant


def test_too_few_days_give_no_proposal():
    reports = planted("Tech", [0.05, 0.06]) + planted("Energy", [-0.05, -0.06])
    result = audit(reports, SETTINGS)
    assert result.dominant_sector == "Tech"
    assert result.proposals == ()
    assert result.gap_test is None


def test_window_figures_compound_the_days():
    reports = planted("Tech", [0.01, -0.02, 0.03], benchmark=0.002)
    (tech,) = audit(reports, SETTINGS).sectors
    rois = [r.roi for r in reports]
    assert tech.roi == pytest.approx(np.prod([1 + r for r in rois]) - 1)
    assert tech.benchmark_return == pytest.approx(1.002**3 - 1)
    assert tech.alpha == pytest.approx(tech.roi - tech.benchmark_return)
    assert tech.volatility == pytest.approx(np.sqrt(np.mean([0.2**2, 0.21**2, 0.22**2])))
    # The drawdown of the compounded days (-2% after +1.2%) beats the intraday 1%.
    assert tech.max_drawdown == pytest.approx(1 - (1.012 * 0.982) / 1.012)
    assert (tech.first_date, tech.last_date) == ("2026-02-04", "2026-02-06")
    assert tech.fleet_size == 6


def test_constant_alpha_is_certain_or_nothing():
    assert one_sample_t(np.array([0.01, 0.01, 0.01]))[1:] == (np.inf, 0.0, 1.0)
    assert one_sample_t(np.zeros(4))[1:] == (0.0, 1.0, 1.0)
    result = audit(planted("Tech", [0.01] * 3) + planted("Energy", [-0.01] * 3), SETTINGS)
    assert {p.type for p in result.proposals} == {
        ProposalType.REINFORCEMENT,
        ProposalType.RISK_MITIGATION,
        ProposalType.ARB_MISSION,
    }
    assert all(p.confidence == 1.0 for p in result.proposals)
    assert "t = +inf" in result.proposals[0].rationale
