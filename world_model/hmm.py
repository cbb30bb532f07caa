"""Gaussian hidden Markov models of returns, fitted by EM (Baum-Welch), states sorted by volatility.

Model: a hidden state s_t in 0..K-1 follows a Markov chain with transition matrix A and initial
distribution pi; the observation x_t given s_t = k is N(mean_k, stddev_k^2).

Fitting (:func:`fit_hmm`) is expectation-maximisation:

* E-step: the forward-backward recursions of Rabiner (1989) with per-step scaling. Emission
  densities are computed as log densities and shifted by their per-step maximum before
  exponentiating, so nothing underflows however unlikely an observation is; the scaling
  constants give the log-likelihood exactly. This is the log-space computation rearranged so
  that each step is one small matrix product instead of a log-sum-exp; the recursions, one
  step per observation, are compiled with numba (the rest is whole-array numpy).
* M-step: closed-form weighted means, variances and transition frequencies. Standard deviations
  are floored at 1e-3 of the sample's, so a state cannot collapse onto a single observation;
  transition probabilities are floored at 1e-10, so no transition becomes impossible.
* Start: one deterministic start (the K quantile groups of |x - median| give the initial
  standard deviations; persistent regimes, 0.95 on the diagonal), plus ``restarts`` random starts
  drawn from ``rng``. Every start runs ``burn_in`` iterations (counted in ``max_iterations``);
  the best continues until the log-likelihood gains less than ``tolerance`` per observation
  (short-run EM, Biernacki et al. 2003). Given the same ``rng`` state the fit is the same.
  A refit passes the previous fit as ``warm_start``: it and the deterministic start replace the
  random ones, since on data that moved by a few observations the last optimum is the best
  start there is: two starts instead of three, the warm one converging in a few steps. The fit
  then depends on the previous one as well.
* Labelling: states are sorted by standard deviation, calm first, so state k means the same thing
  from one fit to the next.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numba
import numpy as np

from qtmesh.base.concurrency import CancelToken
from qtmesh.base.errors import InvalidArgument

_LOG_2PI = math.log(2 * math.pi)
_MIN_TRANSITION = 1e-10
_STDDEV_FLOOR = 1e-3

LABELS: dict[int, tuple[str, ...]] = {2: ("calm", "volatile"), 3: ("calm", "normal", "volatile")}


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class GaussianHMM:
    """K states, each emitting N(means[k], stddevs[k]^2); ``transition[i, j]`` = P(j | i)."""

    initial: np.ndarray
    transition: np.ndarray
    means: np.ndarray
    stddevs: np.ndarray

    @property
    def states(self) -> int:
        return int(self.means.shape[0])

    def log_emissions(self, x: np.ndarray) -> np.ndarray:
        """log N(x_t; mean_k, stddev_k^2), shape (T, K)."""
        z = (x[:, None] - self.means) / self.stddevs
        return -0.5 * z * z - np.log(self.stddevs) - 0.5 * _LOG_2PI

    def posteriors(self, x: np.ndarray) -> Posteriors:
        """Filtered and smoothed state probabilities of every observation."""
        return _forward_backward(self.log_emissions(x), self.initial, self.transition)

    def viterbi(self, x: np.ndarray) -> np.ndarray:
        """The most likely state path (log-space Viterbi)."""
        log_b = self.log_emissions(x)
        log_a = np.log(self.transition)
        steps = log_b.shape[0]
        back = np.empty((steps, self.states), dtype=np.intp)
        delta = np.log(self.initial) + log_b[0]
        for t in range(1, steps):
            scores = delta[:, None] + log_a
            back[t] = scores.argmax(axis=0)
            delta = scores[back[t], np.arange(self.states)] + log_b[t]
        path = np.empty(steps, dtype=np.intp)
        path[-1] = int(delta.argmax())
        for t in range(steps - 1, 0, -1):
            path[t - 1] = back[t, path[t]]
        return path

    def mixture_stddev(self, probabilities: np.ndarray) -> float:
        """Standard deviation of the next observation when the state has ``probabilities``."""
        mean = float(probabilities @ self.means)
        second = float(probabilities @ (self.stddevs**2 + self.means**2))
        return math.sqrt(max(second - mean * mean, 0.0))


@dataclasses.dataclass(frozen=True, eq=False)
class Posteriors:
    filtered: np.ndarray  # P(s_t | x_1..x_t), shape (T, K)
    smoothed: np.ndarray  # P(s_t | x_1..x_T), shape (T, K)
    transitions: np.ndarray  # expected transition counts, shape (K, K)
    log_likelihood: float


@dataclasses.dataclass(frozen=True, eq=False)
class HMMFit:
    model: GaussianHMM
    log_likelihood: float
    iterations: int
    converged: bool


def fit_hmm(
    x: np.ndarray,
    *,
    states: int,
    rng: np.random.Generator,
    max_iterations: int = 200,
    tolerance: float = 1e-6,
    restarts: int = 2,
    burn_in: int = 10,
    warm_start: GaussianHMM | None = None,
    cancel: CancelToken | None = None,
    field: str = "observations",
) -> HMMFit:
    """Fits a ``states``-state Gaussian HMM to ``x`` by EM (see the module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    check_observations(x, states=states, field=field)
    scale = float(x.std())
    floor = _STDDEV_FLOOR * scale
    if max_iterations < 1:
        raise InvalidArgument("max_iterations", f"must be at least 1 (got {max_iterations})")
    if burn_in < 0:
        raise InvalidArgument("burn_in", f"must not be negative (got {burn_in})")
    starts = [_quantile_start(x, states)]
    if warm_start is not None:
        if warm_start.states != states:
            raise InvalidArgument("warm_start", f"has {warm_start.states} states, the fit {states}")
        starts.append(warm_start)
    else:
        starts += [_random_start(x, states, rng) for _ in range(restarts)]
    # Burn-in counts against the cap: the best start's steps are all the fit's steps.
    burn = min(burn_in, max_iterations)
    runs = [
        _em(x, _Run(start, start.posteriors(x)), floor, burn, tolerance, cancel) for start in starts
    ]
    best = max(runs, key=lambda run: run.log_likelihood)
    if not best.converged and best.iterations < max_iterations:
        more = _em(x, best, floor, max_iterations - best.iterations, tolerance, cancel)
        best = dataclasses.replace(more, iterations=best.iterations + more.iterations)
    model, log_likelihood = best.model, best.log_likelihood
    iterations, converged = best.iterations, best.converged
    return HMMFit(_sorted_by_volatility(model), log_likelihood, iterations, converged)


def check_observations(x: np.ndarray, *, states: int, field: str = "observations") -> None:
    """Raises InvalidArgument naming ``field`` unless ``x`` can be fitted with ``states`` states."""
    if states not in LABELS:
        raise InvalidArgument("states", f"must be one of {sorted(LABELS)} (got {states})")
    needed = 10 * states
    if x.ndim != 1 or x.shape[0] < needed:
        raise InvalidArgument(
            field, f"needs at least {needed} observations for {states} states (got {x.size})"
        )
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise InvalidArgument(f"{field}[{bad[0]}]", f"{x[bad[0]]} is not a finite number")
    if not x.std() > 0:
        raise InvalidArgument(field, "is constant: there is no volatility to tell regimes apart")


@dataclasses.dataclass(frozen=True)
class _Run:
    """An EM run's model with the E-step of that very model, so its log-likelihood is exact."""

    model: GaussianHMM
    posteriors: Posteriors
    iterations: int = 0
    converged: bool = False

    @property
    def log_likelihood(self) -> float:
        return self.posteriors.log_likelihood


def _em(
    x: np.ndarray,
    run: _Run,
    floor: float,
    iterations: int,
    tolerance: float,
    cancel: CancelToken | None,
) -> _Run:
    """Up to ``iterations`` EM steps from ``run``; ``iterations`` counts this call's steps only.

    Each step's M-step is followed by the E-step of the new model, which both tests convergence
    and gives the returned model's own log-likelihood (restarts are ranked on it)."""
    model, post = run.model, run.posteriors
    for step in range(1, iterations + 1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        model = _maximise(x, post, floor)
        previous, post = post.log_likelihood, model.posteriors(x)
        if post.log_likelihood - previous < tolerance * x.shape[0]:
            return _Run(model, post, step, True)
    return _Run(model, post, iterations, False)


def _maximise(x: np.ndarray, post: Posteriors, floor: float) -> GaussianHMM:
    gamma = post.smoothed
    weight = gamma.sum(axis=0) + 1e-300
    means = gamma.T @ x / weight
    variances = (gamma * (x[:, None] - means) ** 2).sum(axis=0) / weight
    stddevs = np.maximum(np.sqrt(variances), floor)
    transition = post.transitions / post.transitions.sum(axis=1, keepdims=True)
    transition = np.maximum(transition, _MIN_TRANSITION)
    transition /= transition.sum(axis=1, keepdims=True)
    initial = np.maximum(gamma[0], _MIN_TRANSITION)
    return GaussianHMM(
        initial=initial / initial.sum(), transition=transition, means=means, stddevs=stddevs
    )


def _forward_backward(log_b: np.ndarray, initial: np.ndarray, transition: np.ndarray) -> Posteriors:
    shift = log_b.max(axis=1, keepdims=True)
    b = np.exp(log_b - shift)  # each row's largest entry is 1: no underflow
    alpha, beta, scale = _recursions(b, initial, transition)
    smoothed = alpha * beta
    smoothed /= smoothed.sum(axis=1, keepdims=True)
    transitions = transition * (alpha[:-1].T @ (b[1:] * beta[1:] / scale[1:, None]))
    log_likelihood = float(np.log(scale).sum() + shift.sum())
    return Posteriors(alpha, smoothed, transitions, log_likelihood)


@numba.njit(cache=True)
def _recursions(
    b: np.ndarray, initial: np.ndarray, transition: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scaled forward (alpha) and backward (beta) recursions and the scaling constants: one
    step per observation, so compiled (each step is a K x K product, K <= 3)."""
    steps, k = b.shape
    alpha = np.empty((steps, k))
    beta = np.empty((steps, k))
    scale = np.empty(steps)
    total = 0.0
    for j in range(k):
        alpha[0, j] = initial[j] * b[0, j]
        total += alpha[0, j]
    scale[0] = total
    for j in range(k):
        alpha[0, j] /= total
    for t in range(1, steps):
        total = 0.0
        for j in range(k):
            a = 0.0
            for i in range(k):
                a += alpha[t - 1, i] * transition[i, j]
            alpha[t, j] = a * b[t, j]
            total += alpha[t, j]
        scale[t] = total
        for j in range(k):
            alpha[t, j] /= total
    for j in range(k):
        beta[steps - 1, j] = 1.0
    for t in range(steps - 2, -1, -1):
        for i in range(k):
            a = 0.0
            for j in range(k):
                a += transition[i, j] * b[t + 1, j] * beta[t + 1, j]
            beta[t, i] = a / scale[t + 1]
    return alpha, beta, scale


def _quantile_start(x: np.ndarray, states: int) -> GaussianHMM:
    distance = np.abs(x - np.median(x))
    edges = np.quantile(distance, np.linspace(0, 1, states + 1))
    groups = [x[(distance >= lo) & (distance <= hi)] for lo, hi in itertools.pairwise(edges)]
    stddevs = np.array([g.std() if g.size > 1 else x.std() for g in groups])
    return _start(x, np.maximum(stddevs, _STDDEV_FLOOR * x.std()), diagonal=0.95)


def _random_start(x: np.ndarray, states: int, rng: np.random.Generator) -> GaussianHMM:
    stddevs = np.sort(x.std() * np.exp(rng.normal(0.0, 0.5, states)))
    return _start(x, stddevs, diagonal=float(rng.uniform(0.8, 0.99)))


def _start(x: np.ndarray, stddevs: np.ndarray, *, diagonal: float) -> GaussianHMM:
    k = stddevs.shape[0]
    transition = np.full((k, k), (1 - diagonal) / (k - 1))
    np.fill_diagonal(transition, diagonal)
    return GaussianHMM(
        initial=np.full(k, 1 / k),
        transition=transition,
        means=np.full(k, float(x.mean())),
        stddevs=stddevs.astype(np.float64),
    )


def _sorted_by_volatility(model: GaussianHMM) -> GaussianHMM:
    order = np.argsort(model.stddevs, kind="stable")
    return GaussianHMM(
        initial=model.initial[order],
        transition=model.transition[np.ix_(order, order)],
        means=model.means[order],
        stddevs=model.stddevs[order],
    )
