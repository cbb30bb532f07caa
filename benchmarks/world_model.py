"""World model: HMM fits on 30 days of one-minute bars, block-bootstrap scenarios, and the
gRPC latencies of DetectRegime, Recommend and Simulate with the servers in their own processes.

    python -m benchmarks.world_model [--repeats 20]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._report import emit, percentiles_ms
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.contract import AgentContext
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import running_mesh
from world_model.client import WorldModelClient
from world_model.regimes import RegimeSettings, fit_regimes
from world_model.scenarios import simulate

WINDOW = 43_200  # 30 days of one-minute bars
HORIZON = 1440


def in_process(repeats: int) -> dict[str, object]:
    market = generate(SyntheticMarketSpec(seed=7, days=60))
    fits, iterations = [], []
    for sector in sorted({s.sector for s in market.series}):
        members = [s for s in market.series if s.sector == sector]
        logs = np.mean([np.log(s.close[:WINDOW] / s.close[0]) for s in members], axis=0)
        start = time.perf_counter()
        model = fit_regimes(
            members[0].time[:WINDOW],
            np.exp(logs),
            settings=RegimeSettings(),
            rng=np.random.default_rng(7),
        )
        fits.append(time.perf_counter() - start)
        iterations.append(model.iterations)
    returns = model.returns
    figures: dict[str, object] = {
        "fit_bars": WINDOW,
        "fit_steps": model.observations,
        "fit_s_mean": round(float(np.mean(fits)), 3),
        "fit_s_max": round(float(np.max(fits)), 3),
        "fit_iterations_mean": float(np.mean(iterations)),
    }
    for paths in (1000, 10_000):
        times = []
        for seed in range(repeats if paths == 1000 else max(repeats // 5, 1)):
            start = time.perf_counter()
            simulate(
                returns,
                horizon=HORIZON,
                num_paths=paths,
                block_size=60,
                rng=np.random.default_rng(seed),
                regime_labels=model.bar_states,
                current_regime=model.most_likely,
            )
            times.append(time.perf_counter() - start)
        (p50,) = percentiles_ms(times, 50)
        figures[f"simulate_{paths}x{HORIZON}_p50_ms"] = p50
    return figures


async def over_grpc(repeats: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as logs:
        async with (
            running_mesh(["market", "world-model"], log_dir=Path(logs)) as mesh,
            open_channel(mesh.addresses["world-model"], timeout=120) as channel,
        ):
            world = WorldModelClient(channel)
            start = time.perf_counter()
            await world.detect_regime(symbol="ORBT")
            cold = time.perf_counter() - start
            for sector in ("Tech", "Energy", "Crypto", "Financials"):
                await world.detect_regime(sector=sector)  # the warm-up's fits, or new ones
            cached = []
            for _ in range(repeats * 5):
                start = time.perf_counter()
                await world.detect_regime(sector="Tech")
                cached.append(time.perf_counter() - start)
            agent = AgentClient(channel, name="world-model")
            recommend = []
            for i in range(repeats * 5):
                start = time.perf_counter()
                await agent.recommend(AgentContext(cycle_id=f"c{i}"))
                recommend.append(time.perf_counter() - start)
            scenarios = []
            for seed in range(repeats):
                start = time.perf_counter()
                await world.simulate(
                    sector="Tech",
                    horizon=HORIZON,
                    num_paths=1000,
                    seed=seed,
                    regime_conditioned=True,
                )
                scenarios.append(time.perf_counter() - start)
    cached_p50, cached_p99 = percentiles_ms(cached, 50, 99)
    rec_p50, rec_p99 = percentiles_ms(recommend, 50, 99)
    sim_p50, sim_p99 = percentiles_ms(scenarios, 50, 99)
    return {
        "grpc_detect_regime_cold_s": round(cold, 3),
        "grpc_detect_regime_cached_p50_ms": cached_p50,
        "grpc_detect_regime_cached_p99_ms": cached_p99,
        "grpc_recommend_p50_ms": rec_p50,
        "grpc_recommend_p99_ms": rec_p99,
        f"grpc_simulate_1000x{HORIZON}_p50_ms": sim_p50,
        f"grpc_simulate_1000x{HORIZON}_p99_ms": sim_p99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(
        f"workload: 3-state HMM fits on each sector index of the synthetic market ({WINDOW:,} "
        f"one-minute bars, 30-bar steps); stationary bootstrap of 1,000 and 10,000 paths x "
        f"{HORIZON} bars (regime-conditioned); over gRPC with market and world-model in their "
        "own processes: a cold DetectRegime (fetch + fit), cached DetectRegime, Recommend, "
        f"Simulate of 1,000 x {HORIZON}"
    )
    emit(in_process(args.repeats) | asyncio.run(over_grpc(args.repeats)))


if __name__ == "__main__":
    main()
