"""The world model's methods on known inputs: HMM fitting and decoding, regimes of the synthetic
market, hysteresis, the block bootstrap and the exposure policy, without sockets."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.concurrency import Cancelled, CancelToken
from qtmesh.base.config import ConfigError
from qtmesh.base.contract import AdjustExposure, Priority
from qtmesh.base.errors import InvalidArgument
from world_model.config import WorldModelConfig
from world_model.hmm import GaussianHMM, fit_hmm
from world_model.policy import ExposurePolicy, recommend_exposure
from world_model.regimes import Hysteresis, RegimeSettings, fit_regimes
from world_model.scenarios import simulate, simulate_terminal, terminal_quantiles

DAY = 1440
T0 = 1_767_571_200 * 10**9  # 2026-01-05T00:00:00Z


def planted_prices(
    rng: np.random.Generator, segments: list[tuple[int, float, float]]
) -> np.ndarray:
    """Closes whose log returns are N(drift, vol^2) for each (bars, vol, drift) segment."""
    returns = np.concatenate([rng.normal(drift, vol, bars) for bars, vol, drift in segments])
    return 100 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))


def minutes(n: int) -> np.ndarray:
    return T0 + np.arange(n, dtype=np.int64) * 60 * 10**9


# -- the HMM --------------------------------------------------------------------------------------


def test_a_planted_volatility_switch_is_decoded():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, 300), rng.normal(0, 3, 200), rng.normal(0, 1, 300)])
    truth = np.repeat([0, 1, 0], [300, 200, 300])
    fit = fit_hmm(x, states=2, rng=np.random.default_rng(0))
    assert fit.converged
    np.testing.assert_allclose(fit.model.stddevs, [1, 3], rtol=0.15)
    path = fit.model.viterbi(x)
    assert (path == truth).mean() > 0.97
    switches = np.flatnonzero(np.diff(path)) + 1
    assert len(switches) == 2
    # A switch is only visible once a few draws have shown the new volatility.
    assert abs(switches[0] - 300) <= 10
    assert abs(switches[1] - 500) <= 10


def test_three_states_are_ordered_by_volatility():
    rng = np.random.default_rng(2)
    vols = [2.0, 0.5, 1.0, 4.0, 0.5]
    x = np.concatenate([rng.normal(0, v, 250) for v in vols])
    truth = np.repeat([1, 0, 1, 2, 0], 250)  # 0 calm, 1 normal, 2 volatile
    fit = fit_hmm(x, states=3, rng=np.random.default_rng(0))
    assert list(fit.model.stddevs) == sorted(fit.model.stddevs)
    smoothed = fit.model.posteriors(x).smoothed.argmax(axis=1)
    assert (smoothed == truth).mean() > 0.9


def test_the_forward_algorithm_matches_brute_force():
    model = GaussianHMM(
        initial=np.array([0.6, 0.4]),
        transition=np.array([[0.9, 0.1], [0.2, 0.8]]),
        means=np.array([0.1, -0.2]),
        stddevs=np.array([0.5, 2.0]),
    )
    x = np.array([0.3, -2.5, 1.7, 0.05, -0.4, 3.0])
    emission = np.exp(model.log_emissions(x))
    likelihood = 0.0
    marginal = np.zeros((len(x), 2))
    for path in itertools.product(range(2), repeat=len(x)):
        p = model.initial[path[0]] * emission[0, path[0]]
        for t in range(1, len(x)):
            p *= model.transition[path[t - 1], path[t]] * emission[t, path[t]]
        likelihood += p
        marginal[np.arange(len(x)), path] += p
    posteriors = model.posteriors(x)
    assert posteriors.log_likelihood == pytest.approx(np.log(likelihood), rel=1e-12)
    np.testing.assert_allclose(posteriors.smoothed, marginal / likelihood, rtol=1e-10)


def test_fitting_is_deterministic_given_the_seed():
    x = np.random.default_rng(3).standard_t(4, 400)
    one = fit_hmm(x, states=2, rng=np.random.default_rng(9))
    two = fit_hmm(x, states=2, rng=np.random.default_rng(9))
    assert one.log_likelihood == two.log_likelihood
    np.testing.assert_array_equal(one.model.transition, two.model.transition)


def test_a_warm_refit_finds_the_cold_optimum_in_fewer_steps():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0, 1, 1500), rng.normal(0, 3, 600), rng.normal(0, 1, 900)])
    before = fit_hmm(x[:-8], states=3, rng=np.random.default_rng(0))
    cold = fit_hmm(x, states=3, rng=np.random.default_rng(0))
    warm = fit_hmm(x, states=3, rng=np.random.default_rng(0), warm_start=before.model)
    assert warm.converged
    assert warm.log_likelihood >= cold.log_likelihood - 1e-6 * x.size
    assert warm.iterations < cold.iterations
    np.testing.assert_allclose(warm.model.stddevs, cold.model.stddevs, rtol=0.02)
    with pytest.raises(InvalidArgument) as bad:
        fit_hmm(x, states=2, rng=np.random.default_rng(0), warm_start=before.model)
    assert bad.value.field == "warm_start"


@pytest.mark.parametrize(
    ("max_iterations", "burn_in", "restarts"),
    [(200, 10, 2), (3, 10, 2), (1, 10, 0), (5, 0, 1), (10, 5, 3)],
)
def test_the_reported_log_likelihood_is_the_returned_models(max_iterations, burn_in, restarts):
    x = np.random.default_rng(5).standard_t(3, 400)
    fit = fit_hmm(
        x,
        states=2,
        rng=np.random.default_rng(1),
        max_iterations=max_iterations,
        burn_in=burn_in,
        restarts=restarts,
    )
    assert fit.log_likelihood == pytest.approx(fit.model.posteriors(x).log_likelihood, rel=1e-12)
    # Burn-in counts against the cap, and the cap is never exceeded nor a fit left unfitted.
    assert 1 <= fit.iterations <= max_iterations
    assert math.isfinite(fit.log_likelihood)


def test_a_fit_needs_an_iteration():
    with pytest.raises(InvalidArgument) as failure:
        fit_hmm(
            np.random.default_rng(0).normal(size=100),
            states=2,
            rng=np.random.default_rng(0),
            max_iterations=0,
        )
    assert failure.value.field == "max_iterations"


def test_a_cancelled_fit_stops():
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        fit_hmm(
            np.random.default_rng(0).normal(size=500),
            states=2,
            rng=np.random.default_rng(0),
            cancel=token,
        )


@pytest.mark.parametrize(
    ("x", "field", "problem"),
    [
        (np.r_[np.ones(40), np.nan, np.ones(9)], "observations[40]", "nan is not a finite"),
        (np.zeros(100), "observations", "is constant"),
        (np.arange(12.0), "observations", "needs at least 30 observations"),
    ],
)
def test_unfit_observations_are_rejected(x, field, problem):
    with pytest.raises(InvalidArgument, match=problem) as failure:
        fit_hmm(x, states=3, rng=np.random.default_rng(0))
    assert failure.value.field == field


# -- regimes of price series ----------------------------------------------------------------------


def test_a_planted_switch_in_prices_is_found_and_drives_exposure():
    rng = np.random.default_rng(5)
    closes = planted_prices(rng, [(3 * DAY, 5e-4, 0.0), (DAY, 2e-3, -1e-4)])
    model = fit_regimes(
        minutes(4 * DAY + 1),
        closes,
        settings=RegimeSettings(states=3, bars_per_step=15),
        rng=np.random.default_rng(7),
    )
    truth = np.repeat([False, True], [3 * DAY, DAY])[-model.bar_states.shape[0] :]
    assert ((model.bar_states == 2) == truth).mean() > 0.97
    assert model.labels[model.most_likely] == "volatile"
    assert model.probabilities[2] > 0.99

    recommendation = recommend_exposure("Storm", model, 2, ExposurePolicy())
    assert recommendation is not None
    assert isinstance(recommendation.parameters, AdjustExposure)
    assert 0.5 <= recommendation.parameters.factor < 0.9
    assert recommendation.priority is Priority.HIGH
    assert recommendation.confidence == pytest.approx(model.probabilities[2])
    assert "volatile regime" in recommendation.rationale
    # Stamped with the market time its regime was computed at: the model's last bar.
    assert recommendation.as_of_time == model.as_of_time == int(minutes(4 * DAY + 1)[-1])


def test_a_calm_rising_regime_raises_exposure_and_a_calm_falling_one_does_not():
    rng = np.random.default_rng(6)
    rising = planted_prices(rng, [(3 * DAY, 1.5e-3, 0.0), (DAY, 4e-4, 4e-5)])
    falling = planted_prices(rng, [(3 * DAY, 1.5e-3, 0.0), (DAY, 4e-4, -4e-5)])
    settings = RegimeSettings(states=2, bars_per_step=15)
    for closes, raised in ((rising, True), (falling, False)):
        model = fit_regimes(
            minutes(4 * DAY + 1), closes, settings=settings, rng=np.random.default_rng(7)
        )
        assert model.labels[model.most_likely] == "calm"
        recommendation = recommend_exposure("Calm", model, 0, ExposurePolicy())
        if raised:
            assert recommendation is not None
            assert recommendation.parameters.factor > 1.1
            assert recommendation.priority is Priority.LOW
        else:
            assert recommendation is None


def test_the_synthetic_markets_crises_are_found():
    market = generate(SyntheticMarketSpec(seed=7, days=30))
    tech = [s for s in market.series if s.sector == "Tech"]
    index = np.exp(np.mean([np.log(s.close / s.close[0]) for s in tech], axis=0))
    model = fit_regimes(
        tech[0].time, index, settings=RegimeSettings(), rng=np.random.default_rng(7)
    )
    truth = market.regimes[-model.bar_states.shape[0] :]
    volatile = model.bar_states == 2
    bull, bear, crisis = (volatile[truth == k].mean() for k in range(3))
    assert crisis > 0.9
    assert bear > 0.6
    assert bull < 0.3


def test_series_that_cannot_be_fitted_name_the_field():
    closes = np.full(2000, 100.0)
    closes[7] = np.nan
    with pytest.raises(InvalidArgument) as failure:
        fit_regimes(minutes(2000), closes, settings=RegimeSettings(), rng=np.random.default_rng(0))
    assert failure.value.field == "closes[7]"
    with pytest.raises(InvalidArgument, match="needs at least 30") as failure:
        fit_regimes(
            minutes(100),
            np.linspace(100, 101, 100),
            settings=RegimeSettings(),
            rng=np.random.default_rng(0),
        )
    assert failure.value.field == "lookback"


# -- hysteresis -----------------------------------------------------------------------------------


def test_hysteresis_keeps_the_regime_until_the_evidence_is_clear():
    h = Hysteresis(enter=0.7, exit=0.3)
    reported = None
    seen = []
    for p_volatile in (0.2, 0.55, 0.65, 0.45, 0.72, 0.5, 0.35, 0.31, 0.25, 0.6):
        reported = h.apply(reported, np.array([1 - p_volatile, p_volatile]))
        seen.append(reported)
    assert seen == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]


def test_hysteresis_leaves_a_regime_that_lost_its_probability():
    h = Hysteresis(enter=0.7, exit=0.3)
    assert h.apply(2, np.array([0.45, 0.3, 0.25])) == 0  # below exit: the most likely wins
    assert h.apply(2, np.array([0.4, 0.25, 0.35])) == 2  # still above exit, nobody at enter


@given(
    previous=st.integers(0, 2),
    weights=st.lists(st.floats(0.001, 1.0), min_size=3, max_size=3),
)
def test_hysteresis_switches_only_on_clear_evidence(previous, weights):
    p = np.array(weights) / sum(weights)
    h = Hysteresis(enter=0.7, exit=0.3)
    reported = h.apply(previous, p)
    if reported != previous:
        assert p[reported] >= 0.7 or p[previous] < 0.3
        assert reported == int(np.argmax(p))
    else:
        assert p[previous] >= 0.3 or previous == int(np.argmax(p))


# -- scenarios ------------------------------------------------------------------------------------


def test_bootstrap_quantiles_of_iid_returns_match_the_normal_ones():
    mu, sigma, horizon = 2e-4, 1e-2, 20
    returns = np.random.default_rng(11).normal(mu, sigma, 50_000)
    paths = simulate(
        returns, horizon=horizon, num_paths=20_000, block_size=1, rng=np.random.default_rng(12)
    )
    assert paths.shape == (20_000, horizon)
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    expected = stats.norm.ppf(qs, loc=horizon * mu, scale=sigma * np.sqrt(horizon))
    np.testing.assert_allclose(
        terminal_quantiles(paths, qs), expected, atol=0.05 * sigma * np.sqrt(horizon)
    )
    np.testing.assert_allclose(paths[:, 0].std(), sigma, rtol=0.03)


def test_blocks_keep_the_autocorrelation_an_iid_bootstrap_loses():
    phi, horizon = 0.6, 50
    noise = np.random.default_rng(13).normal(0, 1, 100_000)
    returns = np.empty_like(noise)
    returns[0] = noise[0]
    for t in range(1, noise.size):
        returns[t] = phi * returns[t - 1] + noise[t]
    # Variance of a sum of `horizon` AR(1) terms with unit innovations.
    lags = np.arange(1, horizon)
    gamma0 = 1 / (1 - phi**2)
    theory = gamma0 * (horizon + 2 * np.sum((horizon - lags) * phi**lags))

    def variance(block: int) -> float:
        paths = simulate(
            returns,
            horizon=horizon,
            num_paths=5000,
            block_size=block,
            rng=np.random.default_rng(14),
        )
        return float(paths[:, -1].var())

    assert variance(100) == pytest.approx(theory, rel=0.1)
    assert variance(1) == pytest.approx(gamma0 * horizon, rel=0.1)  # dependence lost


def test_a_regime_conditioned_bootstrap_draws_only_that_regime():
    rng = np.random.default_rng(15)
    labels = np.repeat([0, 1, 0, 1], [4000, 1000, 3000, 1000])
    returns = np.where(labels == 1, rng.normal(0, 3, labels.size), rng.normal(0, 1, labels.size))
    horizon = 30
    paths = simulate(
        returns,
        horizon=horizon,
        num_paths=4000,
        block_size=10,
        rng=np.random.default_rng(16),
        regime_labels=labels,
        current_regime=1,
    )
    assert paths[:, -1].std() == pytest.approx(3 * np.sqrt(horizon), rel=0.1)
    steps = np.diff(paths, axis=1, prepend=0.0).ravel()
    pool = np.sort(returns[labels == 1])
    nearest = pool[np.clip(np.searchsorted(pool, steps), 0, pool.size - 1)]
    below = pool[np.clip(np.searchsorted(pool, steps) - 1, 0, pool.size - 1)]
    gap = np.minimum(np.abs(nearest - steps), np.abs(below - steps))
    assert gap.max() < 1e-9  # every step is a return of the volatile regime


def test_simulation_is_reproducible_and_cancellable():
    returns = np.random.default_rng(17).normal(size=1000)
    one = simulate(returns, horizon=30, num_paths=50, block_size=5, rng=np.random.default_rng(1))
    two = simulate(returns, horizon=30, num_paths=50, block_size=5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(one, two)
    # 20,000 paths span several chunks; the terminal-only variant makes the same draws.
    kwargs = {"horizon": 30, "num_paths": 20_000, "block_size": 5}
    paths = simulate(returns, **kwargs, rng=np.random.default_rng(2))
    terminal = simulate_terminal(returns, **kwargs, rng=np.random.default_rng(2))
    np.testing.assert_allclose(terminal, paths[:, -1], rtol=1e-12, atol=1e-12)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        simulate(
            returns,
            horizon=30,
            num_paths=50,
            block_size=5,
            rng=np.random.default_rng(1),
            cancel=token,
        )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"horizon": 0}, "horizon"),
        ({"num_paths": 0}, "num_paths"),
        ({"block_size": 0.5}, "block_size"),
        ({"returns": np.array([])}, "returns"),
        ({"returns": np.array([0.1, np.inf])}, "returns[1]"),
        ({"regime_labels": np.zeros(3)}, "regime_labels"),
        ({"regime_labels": np.zeros(4), "current_regime": 2}, "current_regime"),
        ({"current_regime": 1}, "regime_labels"),
    ],
)
def test_simulation_input_is_validated(changes, field):
    arguments = {
        "returns": np.array([0.01, -0.02, 0.0, 0.03]),
        "horizon": 5,
        "num_paths": 3,
        "block_size": 2,
        "rng": np.random.default_rng(0),
    } | changes
    with pytest.raises(InvalidArgument) as failure:
        simulate(**arguments)
    assert failure.value.field == field


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"states": 4}, "states: must be one of [2, 3]"),
        ({"switch_enter": 0.5}, "switch_enter: must be in (0.5, 1]"),
        ({"switch_exit": 0.8}, "switch_exit: must be in [0, switch_enter)"),
        ({"lookback_bars": 300_000}, "max_lookback_bars: must be at least lookback_bars"),
        ({"min_factor": 0.0}, "min_factor: must be in (0, 1]"),
    ],
)
def test_bad_world_model_settings_stop_start_up(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        WorldModelConfig(**settings)
