"""The probability of backtest overfitting: CSCV against a direct count, noise near one half,
a real edge near zero, and what an evaluation carries for it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from backtest.overfitting import BLOCKS, block_sums, consistency, probability_of_overfitting
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily


def sharpe(r: np.ndarray) -> float:
    sd = r.std(ddof=1)
    return float(r.mean() / sd) if sd > 0 else 0.0


def direct_pbo(returns: np.ndarray, blocks: int) -> float:
    """CSCV written out from the paper, one split at a time."""
    trials = returns.shape[0]
    edges = np.linspace(0, returns.shape[1], blocks + 1).astype(int)
    parts = [np.arange(edges[b], edges[b + 1]) for b in range(blocks)]
    overfit = total = 0
    for train in itertools.combinations(range(blocks), blocks // 2):
        test = [b for b in range(blocks) if b not in train]
        train_bars = np.concatenate([parts[b] for b in train])
        test_bars = np.concatenate([parts[b] for b in test])
        best = int(np.argmax([sharpe(r[train_bars]) for r in returns]))
        oos = np.array([sharpe(r[test_bars]) for r in returns])
        rank = (oos < oos[best]).sum() + 0.5 * ((oos == oos[best]).sum() - 1) + 1
        w = rank / (trials + 1)
        overfit += np.log(w / (1 - w)) <= 0
        total += 1
    return overfit / total


def test_cscv_matches_the_split_by_split_definition():
    rng = np.random.default_rng(5)
    returns = rng.normal(0, 0.01, (12, 403))
    returns[:3] += np.linspace(0, 0.004, 403)  # an edge that grows: in and out of sample differ
    for blocks in (4, 6, 8):
        assert probability_of_overfitting(block_sums(returns, blocks)) == pytest.approx(
            direct_pbo(returns, blocks), abs=1e-12
        )


def test_block_sums_hold_each_blocks_count_sum_and_squares():
    returns = np.arange(30, dtype=np.float64).reshape(2, 15)
    sums = block_sums(returns, 4)
    edges = np.linspace(0, 15, 5).astype(int)
    for b in range(4):
        part = returns[:, edges[b] : edges[b + 1]]
        assert (sums[:, b, 0] == part.shape[1]).all()
        assert sums[:, b, 1] == pytest.approx(part.sum(axis=1))
        assert sums[:, b, 2] == pytest.approx((part**2).sum(axis=1))


def test_noise_overfits_half_the_time_and_a_real_edge_almost_never():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.01, (200, 8_000))
    assert 0.3 < probability_of_overfitting(block_sums(noise)) < 0.7
    edge = noise.copy()
    edge[:10] += 0.002
    assert probability_of_overfitting(block_sums(edge)) < 0.05


def test_what_cannot_be_split_is_refused_or_has_no_pbo():
    with pytest.raises(InvalidArgument, match="blocks"):
        block_sums(np.zeros((2, 100)), 5)
    one_trial = block_sums(np.zeros((1, 100)))
    assert probability_of_overfitting(one_trial) is None
    assert probability_of_overfitting(block_sums(np.ones((3, 20)))) is None  # blocks of one bar
    uneven = np.concatenate([block_sums(np.zeros((1, 100))), block_sums(np.zeros((1, 120)))])
    with pytest.raises(InvalidArgument, match="same bars"):
        probability_of_overfitting(uneven)


def test_an_evaluation_carries_the_block_sums_of_its_out_of_sample_returns():
    data = BarData(generate(SyntheticMarketSpec(seed=2, days=3)).series[0])
    evaluator = Evaluator()
    genomes = [Policy().default_genome(f) for f in StrategyFamily]
    evaluations = evaluator.evaluate(genomes, data)
    returns = evaluator.backtest_returns(genomes, data)
    split = int(evaluator.fold_starts(data.n)[1])
    for evaluation, r in zip(evaluations, returns, strict=True):
        assert evaluation.out_of_sample_blocks is not None
        assert evaluation.out_of_sample_blocks.shape == (BLOCKS, 3)
        np.testing.assert_allclose(evaluation.out_of_sample_blocks, block_sums(r[split:])[0])


def test_consistency_is_the_t_statistic_of_the_per_block_sharpe_ratios():
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 0.01, 1600)
    steady = noise + 0.001  # the same edge in every block
    lumpy = noise.copy()
    lumpy[:100] += 0.016  # the same total edge, all in the first block
    t = consistency(block_sums(np.stack([steady, lumpy, np.zeros(1600)])))
    sharpe = [s.mean() / s.std() for s in np.split(steady, BLOCKS)]
    assert t[0] == pytest.approx(np.mean(sharpe) / np.std(sharpe, ddof=1) * np.sqrt(BLOCKS))
    assert t[0] > 3 > t[1]
    assert t[2] == 0.0  # never in the market: no evidence either way


def test_an_evaluation_carries_the_sharpe_ratio_of_each_out_of_sample_fold():
    data = BarData(generate(SyntheticMarketSpec(seed=7, days=3)).series[0])
    evaluator = Evaluator()
    genomes = [Policy().default_genome(f) for f in StrategyFamily]
    evaluations = evaluator.evaluate(genomes, data)
    returns = evaluator.backtest_returns(genomes, data)
    edges = [*evaluator.fold_starts(data.n).tolist(), data.n][1:]
    for evaluation, row in zip(evaluations, returns, strict=True):
        expected = []
        for a, b in itertools.pairwise(edges):
            fold = row[a:b]
            sd = fold.std(ddof=1)
            expected.append(fold.mean() / sd * np.sqrt(data.bars_per_year) if sd > 0 else 0.0)
        assert evaluation.fold_sharpe_ratios == pytest.approx(expected, rel=1e-9, abs=1e-12)
