"""The episode store on each backend (SQLite, and PostgreSQL when installed): recall by
similarity, retention, semantic summaries, validation, and replicas sharing one database."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from memory.episodes import Episode
from memory.index import EpisodeIndex as _Index
from memory.store import EpisodeStore
from qtmesh.base.errors import AlreadyExists, InvalidArgument

NAMES = ("return_24h", "volatility_24h", "momentum", "spread")
NOW_NS = 1_750_000_000_123_456_789


def clock() -> int:
    """A fixed "now": the store must take it from here, never from the wall."""
    return NOW_NS


@pytest.fixture
def store(database_url):
    store = EpisodeStore.open(database_url, clock=clock, max_episodes=1000, max_k=50)
    yield store
    store.close()


def random_episodes(n: int, *, seed: int = 0, start: int = 0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    scales = np.array([0.02, 0.3, 5.0, 1e-4])  # features on very different scales
    return [
        Episode(
            id=f"e{start + i}",
            time=start + i + 1,
            features=dict(zip(NAMES, rng.normal(0, 1, 4) * scales, strict=True)),
            decision=str(rng.choice(["hold", "adjust_exposure factor=0.8"])),
            outcome=float(rng.normal(0, 0.01)),
            regime=str(rng.choice(["calm", "volatile"])),
            sector=str(rng.choice(["Tech", "Energy"])),
        )
        for i in range(n)
    ]


def brute_force(episodes: list[Episode], query: dict[str, float]) -> dict[str, float]:
    """Cosine similarity of z-scored vectors, written out the long way."""
    matrix = np.array([[e.features[n] for n in NAMES] for e in episodes])
    mean, std = matrix.mean(axis=0), matrix.std(axis=0)
    q = (np.array([query[n] for n in NAMES]) - mean) / std
    z = (matrix - mean) / std
    return {
        e.id: float(z[i] @ q / np.linalg.norm(z[i]) / np.linalg.norm(q))
        for i, e in enumerate(episodes)
    }


async def test_recall_ranks_by_cosine_of_z_scored_features(store):
    episodes = random_episodes(200)
    for e in episodes:
        await store.store(e)
    query = {"return_24h": 0.01, "volatility_24h": -0.2, "momentum": 4.0, "spread": 5e-5}
    recalled = await store.recall(query, k=10)
    expected = sorted(brute_force(episodes, query).items(), key=lambda item: -item[1])[:10]
    assert [r.episode.id for r in recalled] == [i for i, _ in expected]
    np.testing.assert_allclose([r.similarity for r in recalled], [s for _, s in expected])
    assert recalled[0].episode == next(e for e in episodes if e.id == expected[0][0])


async def test_the_planted_nearest_episode_is_recalled_first(store):
    for e in random_episodes(300, seed=1):
        await store.store(e)
    context = {"return_24h": -0.05, "volatility_24h": 0.9, "momentum": -12.0, "spread": 3e-4}
    near = {n: v * 1.001 for n, v in context.items()}
    await store.store(
        Episode(id="planted", time=999, features=near, decision="hold", outcome=0.02, sector="Tech")
    )
    recalled = await store.recall(context, k=3)
    assert recalled[0].episode.id == "planted"
    assert recalled[0].similarity > 0.99
    assert recalled[0].similarity > recalled[1].similarity
    assert recalled[0].episode.outcome == 0.02


async def test_recall_filters_by_regime_and_sector(store):
    episodes = random_episodes(100, seed=2)
    for e in episodes:
        await store.store(e)
    query = dict.fromkeys(NAMES, 0.1)
    recalled = await store.recall(query, k=50, regime="calm", sector="Energy")
    expected = {e.id for e in episodes if e.regime == "calm" and e.sector == "Energy"}
    assert {r.episode.id for r in recalled} == expected
    with pytest.raises(InvalidArgument, match="unknown sector 'Metals'") as failure:
        await store.recall(query, k=5, sector="Metals")
    assert failure.value.field == "sector"
    with pytest.raises(InvalidArgument, match="memory holds episodes of 'calm', 'volatile'"):
        await store.recall(query, k=5, regime="crisis")


async def test_episodes_compare_on_the_features_they_share(store):
    await store.store(
        Episode(id="a", time=1, features={"x": 1.0, "y": 5.0}, decision="hold", outcome=0)
    )
    await store.store(Episode(id="b", time=2, features={"x": 3.0}, decision="hold", outcome=0))
    await store.store(
        Episode(id="c", time=3, features={"y": 1.0, "z": 2.0}, decision="hold", outcome=0)
    )
    await store.store(Episode(id="d", time=4, features={"z": 4.0}, decision="hold", outcome=0))
    # x: mean 2, std 1; y: mean 3, std 2. The query is above average in x and below in y.
    recalled = {r.episode.id: r.similarity for r in await store.recall({"x": 2.5, "y": 2.0}, k=10)}
    assert recalled["b"] == pytest.approx(1.0)  # shares x only, also above average
    assert recalled["a"] == pytest.approx((-1 * 0.5 + 1 * -0.5) / (np.sqrt(2) * np.sqrt(0.5)))
    assert recalled["c"] == pytest.approx(1.0)  # shares y only, also below average
    assert "d" not in recalled  # shares nothing
    assert await store.recall({"unknown": 1.0}, k=3) == []


async def test_retention_evicts_the_earliest_and_keeps_summaries_exact(database_url):
    store = EpisodeStore.open(database_url, clock=clock, max_episodes=40)
    try:
        episodes = random_episodes(70, seed=3)
        evicted = [(await store.store(e)).evicted for e in episodes]
        assert evicted == [0] * 40 + [1] * 30
        assert await store.size() == 40
        kept = episodes[30:]
        recalled = await store.recall(dict.fromkeys(NAMES, 0.0), k=40)
        assert {r.episode.id for r in recalled} == {e.id for e in kept}

        for summary in await store.summarize():
            group = [e for e in kept if (e.regime, e.sector) == (summary.regime, summary.sector)]
            outcomes = np.array([e.outcome for e in group])
            assert summary.episode_count == len(group)
            assert summary.mean_outcome == pytest.approx(outcomes.mean(), abs=1e-12)
            assert summary.outcome_stddev == pytest.approx(outcomes.std(ddof=1), rel=1e-6)
            assert summary.hit_rate == pytest.approx((outcomes > 0).mean())
            for decision, mean in summary.decision_outcomes.items():
                chosen = [e.outcome for e in group if e.decision == decision]
                assert mean == pytest.approx(np.mean(chosen), abs=1e-12)
        assert sum(s.episode_count for s in await store.summarize()) == 40
        [tech_calm] = await store.summarize(regime="calm", sector="Tech")
        assert (tech_calm.regime, tech_calm.sector) == ("calm", "Tech")
    finally:
        store.close()


async def test_rejected_requests_change_nothing(store):
    for e in random_episodes(5, seed=4):
        await store.store(e)
    before = (await store.size(), await store.summarize())
    duplicate = dataclasses.replace(random_episodes(1, seed=9)[0], id="e0")
    with pytest.raises(AlreadyExists):
        await store.store(duplicate)
    for bad, field in (
        ({"momentum": float("nan")}, "episode.features[momentum]"),
        ({}, "episode.features"),
    ):
        with pytest.raises(InvalidArgument) as failure:
            await store.store(dataclasses.replace(duplicate, id="new", features=bad))
        assert failure.value.field == field
    assert (await store.size(), await store.summarize()) == before


@pytest.mark.parametrize(
    ("features", "k", "field"),
    [
        ({"vol": float("nan")}, 3, "features[vol]"),
        ({"vol": float("-inf")}, 3, "features[vol]"),
        ({}, 3, "features"),
        ({"vol": 1.0}, 0, "k"),
        ({"vol": 1.0}, -2, "k"),
        ({"vol": 1.0}, 51, "k"),
    ],
)
async def test_recall_validation(store, features, k, field):
    with pytest.raises(InvalidArgument) as failure:
        await store.recall(features, k=k)
    assert failure.value.field == field


async def test_summarize_rejects_unknown_filters(store):
    for e in random_episodes(10, seed=5):
        await store.store(e)
    with pytest.raises(InvalidArgument, match="unknown sector 'Metals'") as failure:
        await store.summarize(sector="Metals")
    assert failure.value.field == "sector"


async def test_the_feature_vocabulary_is_bounded(database_url):
    store = EpisodeStore.open(database_url, clock=clock, max_episodes=100, max_feature_names=3)
    try:
        await store.store(
            Episode(id="a", time=1, features={"x": 1.0, "y": 2.0}, decision="hold", outcome=0)
        )
        await store.store(
            Episode(id="b", time=2, features={"y": 1.0, "z": 2.0}, decision="hold", outcome=0)
        )
        with pytest.raises(InvalidArgument, match="holds at most 3") as failure:
            await store.store(
                Episode(id="c", time=3, features={"w": 1.0}, decision="hold", outcome=0)
            )
        assert failure.value.field == "episode.features[w]"
        assert await store.size() == 2
    finally:
        store.close()


async def test_replicas_sharing_a_database_see_each_others_episodes(database_url):
    one = EpisodeStore.open(database_url, clock=clock, max_episodes=30)
    two = EpisodeStore.open(database_url, clock=clock, max_episodes=30)
    try:
        episodes = random_episodes(50, seed=6)
        for i, e in enumerate(episodes):
            await (one if i % 2 else two).store(e)
        query = dict.fromkeys(NAMES, 0.3)
        for replica in (one, two):
            assert await replica.size() == 30
            recalled = await replica.recall(query, k=30)
            assert {r.episode.id for r in recalled} == {e.id for e in episodes[20:]}
        # A third process opening the database later loads the same memory.
        three = EpisodeStore.open(database_url, clock=clock, max_episodes=30)
        try:
            fresh, running = await three.recall(query, k=5), await one.recall(query, k=5)
            assert [r.episode for r in fresh] == [r.episode for r in running]
            # The running sums of a replica that saw evictions agree up to rounding.
            np.testing.assert_allclose(
                [r.similarity for r in fresh], [r.similarity for r in running], rtol=1e-9
            )
        finally:
            three.close()
    finally:
        one.close()
        two.close()


async def test_ids_and_times_are_filled_in(store):
    result = await store.store(
        Episode(id="", time=0, features={"x": 1.0}, decision="hold", outcome=0)
    )
    assert len(result.id) == 32
    [recalled] = await store.recall({"x": 1.0}, k=1)
    assert recalled.episode.id == result.id
    assert recalled.episode.time == NOW_NS


async def test_a_given_time_is_kept_and_the_clock_is_not_read(database_url):
    def no_clock() -> int:
        raise AssertionError("the clock was read for an episode that has a time")

    store = EpisodeStore.open(database_url, clock=no_clock, max_episodes=10)
    try:
        await store.store(Episode(id="a", time=7, features={"x": 1.0}, decision="hold", outcome=0))
        [recalled] = await store.recall({"x": 1.0}, k=1)
        assert recalled.episode.time == 7
    finally:
        store.close()


def churning_features(i: int, rng: np.random.Generator) -> dict[str, float]:
    """A rolling window of per-period names: a name lives 4 or 7 episodes, then never recurs."""
    return {
        "common": float(rng.normal()),
        f"fast{i // 4}": float(rng.normal()),
        f"slow{i // 7}": float(rng.normal()),
    }


async def test_feature_rows_of_evicted_names_are_reused(database_url):
    """Names come and go while retention evicts: the index keeps no row for names memory no
    longer holds, and answers as a freshly loaded one would."""
    max_names = 12
    store = EpisodeStore.open(
        database_url, clock=clock, max_episodes=20, max_k=20, max_feature_names=max_names
    )
    rng = np.random.default_rng(7)
    try:
        for i in range(300):  # about 120 distinct names
            features = churning_features(i, rng)
            await store.store(
                Episode(
                    id=f"e{i}",
                    time=i + 1,
                    features=features,
                    decision="hold",
                    outcome=0.0,
                    sector=str(rng.choice(["Tech", "Energy"])),
                )
            )
            assert store._index.feature_rows <= max_names
            if i % 50 != 49:
                continue
            fresh = EpisodeStore.open(database_url, clock=clock, max_episodes=20, max_k=20)
            try:
                queries = [
                    features,
                    {"common": 0.5, f"fast{i // 4 - 2}": -1.0, f"slow{i // 7 - 1}": 0.3},
                    {f"fast{i // 4 - 6}": 1.0},  # every episode with it was evicted
                ]
                for query in queries:
                    for sector in ("", "Tech"):
                        # k is the whole memory, so no tie at the cut decides what is returned.
                        running = await store.recall(query, k=20, sector=sector)
                        loaded = await fresh.recall(query, k=20, sector=sector)
                        # By id: an episode sharing one name with the query scores +-1, and
                        # such ties are ordered by the last bit of the running sums.
                        by_id = {r.episode.id: r for r in loaded}
                        assert {r.episode.id for r in running} == by_id.keys()
                        for r in running:
                            assert r.episode == by_id[r.episode.id].episode
                            assert r.similarity == pytest.approx(
                                by_id[r.episode.id].similarity, rel=1e-9, abs=1e-12
                            )
                assert await store.recall(queries[2], k=5) == []
            finally:
                fresh.close()
        assert await store.size() == 20
    finally:
        store.close()


def test_the_index_under_name_churn_matches_a_fresh_load():
    """Past the buffer's first compaction (1024 episodes), in batches of several episodes as a
    replica catching up syncs them: the reused rows keep the statistics of every name exact."""
    rng = np.random.default_rng(11)
    running = _Index()
    window = 20
    live: list[tuple[int, str, str, dict[str, float]]] = []
    peak = 0
    seq = 0
    while seq < 2500:
        batch = []
        for _ in range(int(rng.integers(1, 4))):
            seq += 1
            batch.append((seq, "", "", churning_features(seq, rng)))
        live = (live + batch)[-window:]
        running.drop_before(live[0][0])
        running.append(batch)
        fresh = _Index()
        fresh.append(live)
        peak = max(peak, len(fresh.names))
        assert running.names.keys() == fresh.names.keys()
        assert running.feature_rows <= peak
        names = sorted(fresh.names)
        query = rng.normal(size=len(names))
        for got, expected in zip(
            running.zscored(names, query, None), fresh.zscored(names, query, None), strict=True
        ):
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert peak <= 11
