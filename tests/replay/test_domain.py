"""What a replay measures of an equity curve (Sharpe by the curve's own sampling, drawdown as a
positive fraction, a paired p-value that is undefined rather than misleading), how it tells the
days apart, and that a lost stream fails a replay rather than stalling it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from qtmesh.base.errors import Unavailable
from replay.driver import _dates_left, _day_end, _StatusBoard
from replay.metrics import NANOS_PER_YEAR, curve_metrics, drawdowns, paired_p_value

HOUR = 3600 * 10**9


def test_sharpe_is_annualised_by_the_samples_per_year_of_the_curve():
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0002, 0.001, 2_000)
    equity = np.concatenate([[1.0], np.cumprod(1 + returns)])
    times = np.arange(equity.size) * HOUR
    m = curve_metrics(times, equity)
    per_year = returns.size / ((times[-1] - times[0]) / NANOS_PER_YEAR)
    assert per_year == pytest.approx(8_760)
    assert m.sharpe == pytest.approx(returns.mean() / returns.std(ddof=1) * math.sqrt(per_year))
    assert m.total_return == pytest.approx(equity[-1] - 1)
    # Daily samples of the same returns give the same figure at 365 a year.
    daily = curve_metrics(np.arange(equity.size) * 24 * HOUR, equity)
    assert daily.sharpe == pytest.approx(m.sharpe / math.sqrt(24))


def test_drawdown_is_the_largest_fall_from_a_running_peak():
    equity = [100, 110, 99, 105, 121, 108.9, 130]
    assert drawdowns(equity) == pytest.approx([0, 0, 0.1, 1 - 105 / 110, 0, 0.1, 0])
    assert curve_metrics(np.arange(7) * HOUR, equity).max_drawdown == pytest.approx(0.1)
    assert curve_metrics([0], [100]).sharpe == 0.0


def test_the_paired_test_is_scipys_and_undefined_where_it_means_nothing():
    a, b = [1.0, 2.0, 3.5, 2.2], [0.5, 1.9, 2.0, 2.1]
    assert paired_p_value(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_p_value([1.0], [0.0]) is None
    assert paired_p_value([1.0, 2.0], [0.0, 1.0]) is None  # every difference the same
    with pytest.raises(ValueError, match="same length"):
        paired_p_value([1.0, 2.0], [1.0])


def test_a_day_is_left_when_the_clock_stands_on_a_later_date():
    day = 1_770_163_200 * 10**9  # 2026-02-04T00:00Z
    assert _dates_left(day - 60 * 10**9, day) == ["2026-02-03"]
    assert _dates_left(day, day + 23 * HOUR) == []
    assert _dates_left(day - HOUR, day + 49 * HOUR) == ["2026-02-03", "2026-02-04", "2026-02-05"]
    assert _day_end("2026-02-03") == day


class LostFederation:
    """A federation whose plan stream fails after its first event."""

    async def subscribe(self, *, after_sequence=None):
        yield 1, object()
        raise Unavailable("federation went away")


async def test_a_lost_stream_fails_the_wait_instead_of_stalling_it():
    board = _StatusBoard(LostFederation())
    board.start()
    with pytest.raises(Unavailable, match="went away"):
        await board.until(lambda: False, timeout=60)
    await board.close()
