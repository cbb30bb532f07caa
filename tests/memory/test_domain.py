"""The memory engine's methods without a database: similarity, summaries, context features,
decisions and the advice drawn from recalled episodes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory.advice import AdvicePolicy, advise, decision_text, parse_decision
from memory.config import MemoryConfig
from memory.context import hinted_features, sector_features
from memory.episodes import Episode, Limits, Recalled, similarities, validate_episode
from memory.summaries import OutcomeTally, summarise
from qtmesh.base.bars import SectorSummary, Snapshot
from qtmesh.base.config import ConfigError, Secret
from qtmesh.base.contract import AdjustExposure, HaltTrading, Priority, StrategicMode, SwitchMode
from qtmesh.base.errors import InvalidArgument

NAN = math.nan


def episode(decision: str = "hold", outcome: float = 0.0, **overrides) -> Episode:
    fields = {
        "id": "e1",
        "time": 1,
        "features": {"x": 1.0},
        "decision": decision,
        "outcome": outcome,
        "sector": "Tech",
    } | overrides
    return Episode(**fields)


def test_similarity_is_the_cosine_over_shared_features():
    query = np.array([1.0, 2.0, NAN])
    values = np.array(
        [
            [2.0, 4.0, 7.0],  # same direction on the shared names: 1
            [-1.0, -2.0, NAN],  # opposite: -1
            [2.0, NAN, 1.0],  # shares only x: the sign of x
            [NAN, NAN, 3.0],  # shares nothing: not comparable
            [0.0, 0.0, 1.0],  # a zero vector on the shared names: 0
        ]
    )
    np.testing.assert_allclose(similarities(query, values), [1.0, -1.0, 1.0, NAN, 0.0])


@given(
    st.lists(st.floats(-1e3, 1e3), min_size=4, max_size=4),
    st.lists(st.floats(-1e3, 1e3), min_size=4, max_size=4),
)
def test_similarity_matches_the_textbook_cosine(a, b):
    a, b = np.array(a), np.array(b)
    got = similarities(a, b[None, :])[0]
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    expected = a @ b / norms if norms > 0 else 0.0
    assert got == pytest.approx(np.clip(expected, -1, 1), abs=1e-9)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"features": {}}, "episode.features"),
        ({"features": {"vol": NAN}}, "episode.features[vol]"),
        ({"features": {"vol": math.inf}}, "episode.features[vol]"),
        ({"features": {"bad name": 1.0}}, "episode.features[bad name]"),
        ({"features": {f"f{i}": 1.0 for i in range(65)}}, "episode.features"),
        ({"decision": " "}, "episode.decision"),
        ({"decision": "x" * 201}, "episode.decision"),
        ({"outcome": NAN}, "episode.outcome"),
        ({"id": "has space"}, "episode.id"),
        ({"sector": "no/ok?"}, "episode.sector"),
        ({"time": -5}, "episode.time"),
        ({"tags": {"note": "y" * 201}}, "episode.tags[note]"),
    ],
)
def test_bad_episodes_name_the_field(changes, field):
    with pytest.raises(InvalidArgument) as failure:
        validate_episode(episode(**changes), limits=Limits())
    assert failure.value.field == field


def test_summaries_combine_the_tallies_of_each_regime_and_sector():
    outcomes = {
        ("calm", "Tech", "hold"): [0.01, -0.02, 0.03],
        ("calm", "Tech", "adjust_exposure factor=0.8"): [0.05, 0.04],
        ("volatile", "Tech", "hold"): [-0.1],
    }
    tallies = [
        OutcomeTally(r, s, d, len(o), sum(o), sum(v * v for v in o), sum(v > 0 for v in o))
        for (r, s, d), o in outcomes.items()
    ]
    calm, volatile = summarise(tallies)
    everything = [0.01, -0.02, 0.03, 0.05, 0.04]
    assert (calm.regime, calm.sector, calm.episode_count) == ("calm", "Tech", 5)
    assert calm.mean_outcome == pytest.approx(np.mean(everything))
    assert calm.outcome_stddev == pytest.approx(np.std(everything, ddof=1))
    assert calm.hit_rate == pytest.approx(0.8)
    assert dict(calm.decision_outcomes) == pytest.approx(
        {"hold": 0.02 / 3, "adjust_exposure factor=0.8": 0.045}
    )
    assert (volatile.episode_count, volatile.outcome_stddev, volatile.hit_rate) == (1, 0.0, 0.0)


def test_context_features_come_from_the_snapshot_and_the_hints():
    snapshot = Snapshot(
        position=10,
        length=20,
        clock_time=0,
        quotes=(),
        sectors=(SectorSummary("Tech", 3, 0.02, 0.4), SectorSummary("Energy", 2, -0.01, 0.3)),
    )
    assert sector_features(snapshot, "Tech") == pytest.approx(
        {
            "return_24h": 0.02,
            "volatility_24h": 0.4,
            "market_return_24h": 0.005,
            "market_volatility_24h": 0.35,
            "relative_return_24h": 0.015,
        }
    )
    with pytest.raises(InvalidArgument, match="unknown sector 'Metals'"):
        sector_features(snapshot, "Metals")
    assert hinted_features({"feature.vix": "21.5", "mode": "normal"}) == {"vix": 21.5}
    with pytest.raises(InvalidArgument) as failure:
        hinted_features({"feature.vix": "nan"})
    assert failure.value.field == "context.hints[feature.vix]"


@pytest.mark.parametrize(
    "parameters",
    [
        AdjustExposure(sector="Tech", factor=0.8),
        HaltTrading(scope="Tech"),
        SwitchMode(mode=StrategicMode.DEFENSIVE),
    ],
)
def test_decisions_round_trip_through_their_text(parameters):
    assert parse_decision(decision_text(parameters), "Tech") == parameters


def test_hold_and_unknown_decisions_are_not_actions():
    assert decision_text(None) == "hold"
    for text in ("hold", "buy the dip", "adjust_exposure factor=lots", "switch_mode mode=yolo"):
        assert parse_decision(text, "Tech") is None


def _recalled(decision: str, outcomes: list[float], similarity: float) -> list[Recalled]:
    return [
        Recalled(episode(decision, o, id=f"{decision[:6]}-{i}"), similarity)
        for i, o in enumerate(outcomes)
    ]


def test_advice_recommends_what_worked_and_warns_against_what_failed():
    recalled = (
        _recalled("adjust_exposure factor=0.8", [0.02, 0.01, 0.03, -0.005], 0.9)
        + _recalled("adjust_exposure factor=1.25", [-0.02, -0.01, -0.03], 0.8)
        + _recalled("hold", [0.001, -0.002, 0.0], 0.85)
        + _recalled("adjust_exposure factor=2", [0.5, 0.5], 0.95)  # too few to trust
        + _recalled("halt_trading", [0.9, 0.9, 0.9], 0.2)  # not similar enough
    )
    policy = AdvicePolicy(min_similarity=0.5, min_support=3)
    recommendation = advise("Tech", recalled, policy, as_of_time=1_767_571_200 * 10**9)
    assert recommendation is not None
    assert recommendation.as_of_time == 1_767_571_200 * 10**9
    assert recommendation.parameters == AdjustExposure(sector="Tech", factor=0.8)
    assert recommendation.target == "sector/Tech"
    mean = np.mean([0.02, 0.01, 0.03, -0.005])
    consistency = 0.75  # equal similarities: 3 of 4 positive
    assert recommendation.evidence["mean_outcome"] == pytest.approx(mean)
    assert recommendation.confidence == pytest.approx(0.9 * consistency * 4 / (4 + 3))
    assert recommendation.priority is Priority.LOW
    assert "'adjust_exposure factor=0.8' was followed by +1.375%" in recommendation.rationale
    assert "Avoid 'adjust_exposure factor=1.25'" in recommendation.rationale


def test_advice_stays_silent_without_a_supported_winning_action():
    policy = AdvicePolicy(min_similarity=0.5, min_support=3)
    assert advise("Tech", [], policy) is None
    losers = _recalled("adjust_exposure factor=1.25", [-0.02, -0.01, -0.03], 0.8)
    assert advise("Tech", losers, policy) is None
    hold_wins = losers + _recalled("hold", [0.01, 0.01, 0.01], 0.9)
    assert advise("Tech", hold_wins, policy) is None


def test_the_database_url_is_a_secret_and_must_be_a_known_backend():
    config = MemoryConfig(database_url=Secret("postgresql://qtmesh:hunter2@db:5432/memory"))
    assert config.url == "postgresql://qtmesh:hunter2@db:5432/memory"
    assert "hunter2" not in repr(config)
    assert MemoryConfig(sqlite_path=Path("/tmp/m.db")).url == "sqlite:////tmp/m.db"
    with pytest.raises(ConfigError, match="expected sqlite:/// or postgresql://") as failure:
        MemoryConfig(database_url=Secret("mysql://root:hunter2@db/memory"))
    assert "hunter2" not in str(failure.value)
    with pytest.raises(ConfigError, match="recommend_k"):
        MemoryConfig(recommend_k=5000)
