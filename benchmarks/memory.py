"""Memory engine: Store and Recall latency with N episodes in memory, on SQLite and (when
installed) PostgreSQL, in-process, and Recall and Recommend over gRPC on SQLite.

    python -m benchmarks.memory [--episodes 100000] [--repeats 200]

The N episodes are loaded with multi-row INSERTs (as a restore would), not N Store calls; the
first Recall then measures the cold load of the index.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from benchmarks._report import emit, percentiles_ms
from memory.client import MemoryClient
from memory.episodes import Episode
from memory.store import EPISODES, STATE, TALLIES, EpisodeStore
from qtmesh.base.contract import AgentContext
from qtmesh.base.storage import create_engine, sqlite_url
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import running_mesh
from qtmesh.testing import fresh_database, temporary_postgres

FEATURES = (
    "return_24h",
    "volatility_24h",
    "market_return_24h",
    "market_volatility_24h",
    "relative_return_24h",
)
SECTORS = ("Tech", "Energy", "Crypto", "Financials")
DECISIONS = ("hold", "adjust_exposure factor=0.8", "adjust_exposure factor=1.25")


def load(url: str, episodes: int, rng: np.random.Generator) -> None:
    """Writes ``episodes`` rows and their tallies straight into a fresh memory database."""
    EpisodeStore.open(url, max_episodes=episodes, clock=time.time_ns).close()  # creates the tables
    engine = create_engine(url)
    values = rng.normal(0, 1, (episodes, len(FEATURES))) * [0.02, 0.4, 0.01, 0.3, 0.01]
    sectors = rng.integers(len(SECTORS), size=episodes)
    decisions = rng.integers(len(DECISIONS), size=episodes)
    outcomes = rng.normal(0, 0.01, episodes)
    with engine.begin() as connection:
        for first in range(0, episodes, 5000):
            rows = [
                {
                    "id": f"e{i}",
                    "time_ns": i + 1,
                    "decision": DECISIONS[decisions[i]],
                    "outcome": float(outcomes[i]),
                    "regime": "calm",
                    "sector": SECTORS[sectors[i]],
                    "features": json.dumps(dict(zip(FEATURES, values[i].tolist(), strict=True))),
                    "tags": "{}",
                }
                for i in range(first, min(first + 5000, episodes))
            ]
            connection.execute(sa.insert(EPISODES), rows)
        tallies = {}
        for s, d, o in zip(sectors, decisions, outcomes, strict=True):
            t = tallies.setdefault((SECTORS[s], DECISIONS[d]), [0, 0.0, 0.0, 0])
            t[0] += 1
            t[1] += o
            t[2] += o * o
            t[3] += int(o > 0)
        connection.execute(
            sa.insert(TALLIES),
            [
                {
                    "regime": "calm",
                    "sector": s,
                    "decision": d,
                    "count": c,
                    "total": float(total),
                    "total_squares": float(squares),
                    "positives": p,
                }
                for (s, d), (c, total, squares, p) in tallies.items()
            ],
        )
        connection.execute(sa.update(STATE).values(version=1, episodes=episodes))
    engine.dispose()


def measure(url: str, episodes: int, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    load(url, episodes, rng)
    store = EpisodeStore.open(url, max_episodes=episodes, clock=time.time_ns)
    try:
        queries = rng.normal(0, 1, (repeats, len(FEATURES))) * [0.02, 0.4, 0.01, 0.3, 0.01]
        start = time.perf_counter()
        store.recall_now(dict(zip(FEATURES, queries[0], strict=True)), 10)
        cold = time.perf_counter() - start
        recalls = []
        for q in queries:
            start = time.perf_counter()
            store.recall_now(dict(zip(FEATURES, q, strict=True)), 10, "", "Tech")
            recalls.append(time.perf_counter() - start)
        stores = []
        for i, q in enumerate(queries[:50]):
            episode = Episode(
                id=f"new{i}",
                time=episodes + i + 1,
                features=dict(zip(FEATURES, q, strict=True)),
                decision="hold",
                outcome=0.0,
                sector="Tech",
            )
            start = time.perf_counter()
            assert store.store_now(episode).evicted == 1  # at the bound: every store evicts
            stores.append(time.perf_counter() - start)
    finally:
        store.close()
    recall_p50, recall_p99 = percentiles_ms(recalls, 50, 99)
    store_p50, store_p99 = percentiles_ms(stores, 50, 99)
    return {
        "index_load_s": round(cold, 3),
        "recall_k10_p50_ms": recall_p50,
        "recall_k10_p99_ms": recall_p99,
        "store_with_eviction_p50_ms": store_p50,
        "store_with_eviction_p99_ms": store_p99,
    }


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    with temporary_postgres() as server:
        if server is None:
            yield None
            return
        with fresh_database(server) as url:
            yield url


async def over_grpc(path: Path, repeats: int) -> dict[str, float]:
    environ = {**os.environ, "QTMESH_MEMORY_SQLITE_PATH": str(path)}
    with tempfile.TemporaryDirectory() as logs:
        async with (
            running_mesh(["market", "memory"], log_dir=Path(logs), env=environ) as mesh,
            open_channel(mesh.addresses["memory"]) as channel,
        ):
            memory = MemoryClient(channel)
            await memory.recall(dict.fromkeys(FEATURES, 0.01), k=10)  # loads the index
            recalls = []
            for i in range(repeats):
                start = time.perf_counter()
                await memory.recall(dict.fromkeys(FEATURES, 0.001 * i), k=10, sector="Tech")
                recalls.append(time.perf_counter() - start)
            agent = AgentClient(channel, name="memory")
            recommends = []
            for i in range(max(repeats // 4, 1)):
                start = time.perf_counter()
                await agent.recommend(AgentContext(cycle_id=f"c{i}"))
                recommends.append(time.perf_counter() - start)
    recall_p50, recall_p99 = percentiles_ms(recalls, 50, 99)
    rec_p50, rec_p99 = percentiles_ms(recommends, 50, 99)
    return {
        "grpc_recall_k10_p50_ms": recall_p50,
        "grpc_recall_k10_p99_ms": recall_p99,
        "grpc_recommend_p50_ms": rec_p50,
        "grpc_recommend_p99_ms": rec_p99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print(
        f"workload: {args.episodes:,} episodes of {len(FEATURES)} features in memory (the "
        f"retention bound); {args.repeats} Recall(k=10, sector filter) and 50 Store calls that "
        "each evict one, in-process on SQLite and PostgreSQL; then Recall and Recommend over "
        "gRPC with market and memory in their own processes (SQLite)"
    )
    rng = np.random.default_rng(1)
    figures: dict[str, object] = {"episodes": args.episodes}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "memory.db"
        url = sqlite_url(path)
        figures |= {
            f"sqlite_{k}": v for k, v in measure(url, args.episodes, args.repeats, rng).items()
        }
        figures |= asyncio.run(over_grpc(path, args.repeats))
    with postgres() as pg:
        if pg is not None:
            figures |= {
                f"postgresql_{k}": v
                for k, v in measure(pg, args.episodes, args.repeats, rng).items()
            }
    emit(figures)


if __name__ == "__main__":
    main()
