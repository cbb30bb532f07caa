"""The SESA mutation tuner: trials end only after enough offspring, untried settings come
first (nearest first), then the upper confidence bound decides, over recent scores only."""

from __future__ import annotations

import math

import pytest

from meta.config import MetaLearningConfig
from meta.model import NANOS_PER_HOUR, MutationSetting
from meta.tuning import MutationTuner, Score, Trial, trial_at

TUNER = MutationTuner.from_config(MetaLearningConfig())
NOW = 1_767_571_200 * 10**9 + 1000 * NANOS_PER_HOUR
SEED = MutationSetting(0.3, 0.2)


def running(setting=SEED, count=20, mean=0.5, index=1) -> Trial:
    return Trial(
        index=index, setting=setting, start_time=0, evaluation_count=count, score_sum=mean * count
    )


def scores(setting, values, at=NOW - NANOS_PER_HOUR) -> list[Score]:
    return [Score(setting, v, at) for v in values]


def test_the_grid_is_every_rate_with_every_magnitude():
    assert len(TUNER.arms) == 9
    assert SEED in TUNER.arms


def test_a_trial_with_too_few_offspring_goes_on():
    assert (
        TUNER.propose(running=running(count=19), scores=scores(SEED, [0.5] * 19), now=NOW) is None
    )


def test_untried_settings_come_first_nearest_first():
    proposal = TUNER.propose(running=running(), scores=scores(SEED, [0.5] * 20), now=NOW)
    assert proposal is not None
    assert proposal.current == SEED
    # Nearest in log distance: log(0.45/0.3) = 0.405 < log(0.35/0.2) = 0.560 < log(0.3/0.15).
    assert proposal.proposed == MutationSetting(0.45, 0.2)
    assert proposal.confidence == 0.5
    assert proposal.evidence["arms_tried"] == 1
    assert "8 of 9 settings are untried" in proposal.reason


def test_once_all_are_tried_the_upper_confidence_bound_decides():
    everything = []
    for arm in TUNER.arms:
        everything += scores(arm, [0.4] * 20)
    best = MutationSetting(0.15, 0.35)
    everything += scores(best, [0.9] * 20)
    proposal = TUNER.propose(running=running(), scores=everything, now=NOW)
    assert proposal is not None
    assert proposal.proposed == best
    n = len(everything)
    expected = (0.4 * 20 + 0.9 * 20) / 40 + 0.5 * math.sqrt(2 * math.log(n) / 40)
    assert proposal.evidence["proposed_ucb"] == pytest.approx(expected)
    assert "highest upper confidence bound" in proposal.reason
    assert proposal.confidence == 1.0
    # The best arm running now stays.
    assert TUNER.propose(running=running(setting=best), scores=everything, now=NOW) is None


def test_scores_older_than_the_window_do_not_count():
    stale = scores(MutationSetting(0.15, 0.1), [1.0] * 50, at=NOW - 400 * NANOS_PER_HOUR)
    stats = {s.setting: s for s in TUNER.arm_stats(stale + scores(SEED, [0.5] * 20), now=NOW)}
    assert stats[MutationSetting(0.15, 0.1)].count == 0
    assert stats[SEED].count == 20


def test_proposals_are_deterministic():
    inputs = {"running": running(), "scores": scores(SEED, [0.3, 0.7] * 10), "now": NOW}
    assert TUNER.propose(**inputs) == TUNER.propose(**inputs)


def test_an_evaluation_belongs_to_the_trial_in_use_when_it_was_made():
    log = [
        Trial(index=1, setting=SEED, start_time=0),
        Trial(index=2, setting=MutationSetting(0.45, 0.2), start_time=100),
        Trial(index=3, setting=MutationSetting(0.15, 0.2), start_time=200),
    ]
    assert [trial_at(log, t).index for t in (-5, 0, 99, 100, 150, 200, 10**18)] == [
        1,
        1,
        1,
        2,
        2,
        3,
        3,
    ]
