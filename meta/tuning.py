"""Tuning SESA's mutation rate and magnitude: a sliding-window UCB bandit over a grid of
settings, with every trial logged so that SESA's deflated Sharpe ratio can count it.

**Arms** are the settings ``sesa_mutation_rates x sesa_mutation_magnitudes`` (3 x 3 by default,
around SESA's seed 0.3/0.2). A **trial** is the span during which one setting is in use: the
seed setting is trial 1, and every change of setting (an executed TuneLearning) opens the next.
Each offspring genome (generation >= 1) that SESA evaluates during a trial is credited to it
once, by its evaluation time, with its composite score (0..1) as the reward.

**Choice.** Once the running trial holds ``sesa_trial_min_evaluations`` scores, the tuner scores
every arm by its upper confidence bound over the scores of the last ``sesa_tuner_window_hours``

    ucb(a) = mean(a) + c * sqrt(2 ln N / n(a))        (c = sesa_tuner_exploration)

and proposes the best; untried arms come first, the nearest to the current setting first. This
is sliding-window UCB (Garivier & Moulines, 2011): populations improve, so the same setting
scores higher later and old scores must expire. If the best arm is the current one the trial
goes on; otherwise the policy's ``mutation_tuner`` rule proposes the switch (ADJUST_MUTATION),
which the federation executes back on the meta service as TuneLearning.

**Why a bandit.** One SESA runs one setting at a time, so population-based training (many
settings in parallel, copying the best) has no population to work with; a bandit spends each
evolution run on the setting most worth learning about. It is deterministic, so a restarted
service proposes exactly what the old one would have.

**Trials and deflated Sharpe.** Picking the best of K settings is one more layer of search:
every genome evaluated under any setting the tuner tried is a trial for the deflated Sharpe
ratio. The log (ListSesaTrials) gives the settings, their spans, their genome counts and the
total; SESA should deflate with at least that many trials.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from meta.config import MetaLearningConfig
from meta.model import NANOS_PER_HOUR, MutationProposal, MutationSetting


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trial:
    index: int
    setting: MutationSetting
    start_time: int
    end_time: int | None = None
    evaluation_count: int = 0
    score_sum: float = 0.0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.evaluation_count if self.evaluation_count else 0.0


@dataclasses.dataclass(frozen=True)
class Score:
    """One credited offspring: the setting it was bred under and its composite score."""

    setting: MutationSetting
    score: float
    evaluated_time: int


def trial_at(trials: Sequence[Trial], time: int) -> Trial:
    """The trial in use at ``time``: the latest-opened one that started at or before it, else
    the first (evaluations older than the log were bred under the seed setting)."""
    started = [t for t in trials if t.start_time <= time]
    return max(started, key=lambda t: t.index) if started else min(trials, key=lambda t: t.index)


@dataclasses.dataclass(frozen=True)
class ArmStats:
    setting: MutationSetting
    count: int
    mean: float


class MutationTuner:
    """Proposes the next mutation setting; pure and deterministic."""

    def __init__(
        self,
        *,
        rates: Sequence[float],
        magnitudes: Sequence[float],
        min_trial_evaluations: int,
        window_hours: float,
        exploration: float,
    ) -> None:
        self.arms = tuple(MutationSetting(r, m) for r in sorted(rates) for m in sorted(magnitudes))
        self.min_trial_evaluations = min_trial_evaluations
        self.window_nanos = round(window_hours * NANOS_PER_HOUR)
        self.exploration = exploration

    @classmethod
    def from_config(cls, config: MetaLearningConfig) -> MutationTuner:
        return cls(
            rates=config.sesa_mutation_rates,
            magnitudes=config.sesa_mutation_magnitudes,
            min_trial_evaluations=config.sesa_trial_min_evaluations,
            window_hours=config.sesa_tuner_window_hours,
            exploration=config.sesa_tuner_exploration,
        )

    def arm_stats(self, scores: Sequence[Score], *, now: int) -> list[ArmStats]:
        recent = [s for s in scores if now - self.window_nanos < s.evaluated_time <= now]
        stats = []
        for arm in self.arms:
            values = [s.score for s in recent if s.setting == arm]
            stats.append(ArmStats(arm, len(values), sum(values) / len(values) if values else 0.0))
        return stats

    def propose(
        self, *, running: Trial, scores: Sequence[Score], now: int
    ) -> MutationProposal | None:
        """The next setting, or None while the running trial is short or its arm is best."""
        if running.evaluation_count < self.min_trial_evaluations:
            return None
        current = running.setting
        stats = self.arm_stats(scores, now=now)
        pulls = sum(s.count for s in stats)

        def ucb(s: ArmStats) -> float:
            if s.count == 0:
                return math.inf
            return s.mean + self.exploration * math.sqrt(2 * math.log(max(pulls, 1)) / s.count)

        def distance(s: ArmStats) -> float:
            return abs(math.log(s.setting.rate / current.rate)) + abs(
                math.log(s.setting.magnitude / current.magnitude)
            )

        best = min(
            stats,
            key=lambda s: (-ucb(s), distance(s), s.setting.rate, s.setting.magnitude),
        )
        if best.setting == current:
            return None
        here = next((s for s in stats if s.setting == current), None)
        tried = sum(1 for s in stats if s.count)
        evidence = {
            "trial_index": float(running.index),
            "trial_evaluations": float(running.evaluation_count),
            "trial_mean_score": running.mean_score,
            "arms_tried": float(tried),
            "arms": float(len(stats)),
            "proposed_evaluations": float(best.count),
        }
        if best.count:
            evidence["proposed_mean_score"] = best.mean
            evidence["proposed_ucb"] = ucb(best)
        if here is not None and here.count:
            evidence["current_ucb"] = ucb(here)
        opening = (
            f"Trial {running.index} at {current} scored a mean of {running.mean_score:.3f} over "
            f"{running.evaluation_count} offspring"
        )
        if best.count == 0:
            why = (
                f"{opening}; {len(stats) - tried} of {len(stats)} settings are untried, and the "
                f"nearest is {best.setting}: try it next."
            )
            certainty = 0.5
        else:
            why = (
                f"{opening}; {best.setting} has the highest upper confidence bound "
                f"({best.mean:.3f} mean over {best.count} recent offspring, "
                f"c={self.exploration:g}): switch to it."
            )
            certainty = 0.5 + 0.5 * min(1.0, best.count / (2 * self.min_trial_evaluations))
        return MutationProposal(
            current=current,
            proposed=best.setting,
            evidence=evidence,
            reason=why,
            confidence=certainty,
        )
