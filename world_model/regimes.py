"""Regime detection on a price series: returns prepared for a Gaussian HMM, fitted, labelled, and
reported with hysteresis so the label does not flicker.

Preparation (:func:`observations`), in order:

1. per-bar log returns of the closes;
2. intraday seasonality removed: each return is divided by the mean absolute return of its hour
   of day (UTC) relative to the overall mean (Andersen & Bollerslev 1997), when the bars are
   intraday and span at least two days; otherwise left as they are;
3. summed over non-overlapping steps of ``bars_per_step`` bars, aligned so the last step ends at
   the last bar (the oldest few bars are dropped);
4. winsorised at the median +- ``winsorize`` robust standard deviations (1.4826 MAD): a Gaussian
   HMM otherwise spends a state on isolated jumps instead of on volatility regimes.

The HMM (:mod:`world_model.hmm`) is fitted on those steps. The current regime
probabilities are the filtered probabilities of the last step; every bar also gets the most
likely (smoothed) state of its step, which regime-conditioned scenarios draw from.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qtmesh.base.concurrency import CancelToken
from qtmesh.base.errors import InvalidArgument
from world_model.hmm import LABELS, GaussianHMM, check_observations, fit_hmm

HOUR_NANOS = 3600 * 10**9
DAY_NANOS = 24 * HOUR_NANOS
SECONDS_PER_YEAR = 365 * 24 * 3600


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegimeSettings:
    states: int = 3
    bars_per_step: int = 30
    winsorize: float = 4.0
    max_iterations: int = 100
    tolerance: float = 1e-5
    restarts: int = 2


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class RegimeModel:
    """A fitted regime model of one series and what it says about the present."""

    hmm: GaussianHMM
    labels: tuple[str, ...]
    bars_per_step: int
    bar_seconds: float
    as_of_time: int  # time of the last bar, Unix nanoseconds
    returns: np.ndarray  # per-bar log returns of the fitted steps, oldest first
    bar_states: np.ndarray  # most likely state of each of those bars
    probabilities: np.ndarray  # state probabilities now (filtered, last step)
    occupancy: np.ndarray  # expected number of steps spent in each state
    observations: int
    log_likelihood: float
    iterations: int
    converged: bool

    @property
    def most_likely(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def bar_means(self) -> np.ndarray:
        """Mean log return per bar in each state."""
        return self.hmm.means / self.bars_per_step

    @property
    def bar_stddevs(self) -> np.ndarray:
        """Standard deviation of the log return per bar in each state."""
        return self.hmm.stddevs / np.sqrt(self.bars_per_step)

    @property
    def long_run_stddev(self) -> float:
        """Per-step standard deviation of the history: the states mixed by time spent in each."""
        return self.hmm.mixture_stddev(self.occupancy / self.occupancy.sum())

    def drift_t_statistic(self, state: int) -> float:
        """The state's mean step return over its standard error."""
        error = self.hmm.stddevs[state] / np.sqrt(max(self.occupancy[state], 1.0))
        return float(self.hmm.means[state] / error)

    def annualised(self, per_step_stddev: float) -> float:
        """A per-step standard deviation as an annual volatility."""
        steps_per_year = SECONDS_PER_YEAR / (self.bar_seconds * self.bars_per_step)
        return float(per_step_stddev * np.sqrt(steps_per_year))


def observations(
    times: np.ndarray, closes: np.ndarray, *, bars_per_step: int, winsorize: float
) -> tuple[np.ndarray, np.ndarray]:
    """(step observations, the per-bar log returns they sum) of a series, for an HMM."""
    returns = np.diff(np.log(closes))
    bar_times = times[1:]
    adjusted = returns / _seasonal_profile(bar_times, returns)
    steps = adjusted.shape[0] // bars_per_step
    first = adjusted.shape[0] - steps * bars_per_step
    x = adjusted[first:].reshape(steps, bars_per_step).sum(axis=1)
    if winsorize > 0 and x.size:
        median = float(np.median(x))
        spread = 1.4826 * float(np.median(np.abs(x - median)))
        if spread > 0:
            x = np.clip(x, median - winsorize * spread, median + winsorize * spread)
    return x, returns[first:]


def fit_regimes(
    times: np.ndarray,
    closes: np.ndarray,
    *,
    settings: RegimeSettings,
    rng: np.random.Generator,
    warm_start: GaussianHMM | None = None,
    cancel: CancelToken | None = None,
    field: str = "lookback",
) -> RegimeModel:
    """Fits the regime model of a series of bar ``times`` and ``closes`` (oldest first); a
    refit starts from the previous fit's ``hmm`` as well (``fit_hmm``'s ``warm_start``)."""
    times = np.asarray(times, dtype=np.int64)
    closes = np.asarray(closes, dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(closes) & (closes > 0)))
    if bad.size:
        raise InvalidArgument(f"closes[{bad[0]}]", f"{closes[bad[0]]} is not a positive price")
    if closes.shape[0] != times.shape[0]:
        raise InvalidArgument("times", "needs one time per close")
    x, returns = observations(
        times, closes, bars_per_step=settings.bars_per_step, winsorize=settings.winsorize
    )
    check_observations(x, states=settings.states, field=field)
    fit = fit_hmm(
        x,
        states=settings.states,
        rng=rng,
        max_iterations=settings.max_iterations,
        tolerance=settings.tolerance,
        restarts=settings.restarts,
        warm_start=warm_start,
        cancel=cancel,
        field=field,
    )
    posteriors = fit.model.posteriors(x)
    step_states = posteriors.smoothed.argmax(axis=1)
    spacing = float(np.median(np.diff(times))) / 1e9 if times.shape[0] > 1 else 60.0
    return RegimeModel(
        hmm=fit.model,
        labels=LABELS[settings.states],
        bars_per_step=settings.bars_per_step,
        bar_seconds=spacing,
        as_of_time=int(times[-1]),
        returns=returns,
        bar_states=np.repeat(step_states, settings.bars_per_step),
        probabilities=posteriors.filtered[-1],
        occupancy=posteriors.smoothed.sum(axis=0),
        observations=int(x.shape[0]),
        log_likelihood=fit.log_likelihood,
        iterations=fit.iterations,
        converged=fit.converged,
    )


def _seasonal_profile(times: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """Each return's hour-of-day volatility relative to the whole day (1 when not intraday)."""
    if times.shape[0] < 2 or times[-1] - times[0] < 2 * DAY_NANOS:
        return np.ones_like(returns)
    if np.median(np.diff(times)) >= HOUR_NANOS:
        return np.ones_like(returns)
    hour = (times // HOUR_NANOS) % 24
    size = np.abs(returns)
    overall = size.mean()
    if overall == 0:
        return np.ones_like(returns)
    counts = np.bincount(hour, minlength=24)
    sums = np.bincount(hour, weights=size, minlength=24)
    profile = np.ones(24)
    seen = (counts > 0) & (sums > 0)
    profile[seen] = sums[seen] / counts[seen] / overall
    return profile[hour]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hysteresis:
    """Keeps the reported regime until the evidence is clear (a Schmitt trigger).

    The reported state changes only when another state's probability reaches ``enter``, or the
    reported state's own probability falls below ``exit``; it then becomes the most likely state.
    """

    enter: float = 0.7
    exit: float = 0.3

    def __post_init__(self) -> None:
        if not 0.5 < self.enter <= 1:
            raise ValueError(f"enter must be in (0.5, 1], got {self.enter}")
        if not 0 <= self.exit < self.enter:
            raise ValueError(f"exit must be in [0, enter), got {self.exit}")

    def apply(self, previous: int | None, probabilities: np.ndarray) -> int:
        best = int(np.argmax(probabilities))
        if previous is None or previous >= probabilities.shape[0] or best == previous:
            return best
        if probabilities[best] >= self.enter or probabilities[previous] < self.exit:
            return best
        return previous


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegimeReport:
    """A regime estimate as the API reports it (per-bar state moments, per-step transitions)."""

    symbol: str
    sector: str
    as_of_time: int
    regime: str
    labels: tuple[str, ...]
    probabilities: tuple[float, ...]
    means: tuple[float, ...]
    stddevs: tuple[float, ...]
    transition: tuple[float, ...]  # row-major, len(labels) ** 2
    observations: int
    bars_per_step: int

    @classmethod
    def of(
        cls, model: RegimeModel, regime: int, *, symbol: str = "", sector: str = ""
    ) -> RegimeReport:
        return cls(
            symbol=symbol,
            sector=sector,
            as_of_time=model.as_of_time,
            regime=model.labels[regime],
            labels=model.labels,
            probabilities=tuple(float(p) for p in model.probabilities),
            means=tuple(float(m) for m in model.bar_means),
            stddevs=tuple(float(s) for s in model.bar_stddevs),
            transition=tuple(float(p) for p in model.hmm.transition.ravel()),
            observations=model.observations,
            bars_per_step=model.bars_per_step,
        )

    @property
    def probability(self) -> float:
        """Probability of the reported regime."""
        return self.probabilities[self.labels.index(self.regime)]
