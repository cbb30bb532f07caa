"""One SESA evolution over gRPC: 10 generations x 50 strategies x 43,200 one-minute bars, with
the market and SESA servers in their own processes.

    python -m benchmarks.evolution
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks._report import emit
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import running_mesh
from sesa.client import SesaClient, bar_source

GENERATIONS = 10
CONFIG = pb.EvolutionConfig(
    num_generations=GENERATIONS,
    elite_carry_forward=2,
    num_mutations_per_parent=24,  # 2 elites + 2 x 24 children = 50 per generation
    evaluation_lookback_days=30,
)


async def evolve(client: SesaClient, seed: int) -> tuple[float, pb.EvolutionResult, list]:
    start = time.perf_counter()
    stats = []
    async for event in client.evolve(bars=bar_source(symbol="ORBT"), config=CONFIG, seed=seed):
        if isinstance(event, pb.GenerationStats):
            stats.append(event)
        else:
            return time.perf_counter() - start, event, stats
    raise RuntimeError("the evolution ended without a result")


async def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as logs:
        async with (
            running_mesh(["market", "sesa"], log_dir=Path(logs)) as mesh,
            open_channel(mesh.addresses["sesa"]) as channel,
        ):
            client = SesaClient(channel)
            first_wall, _, _ = await evolve(client, seed=1)
            walls = []
            for seed in (2, 3, 4):
                wall, result, stats = await evolve(client, seed)
                walls.append(wall)
    population = max(s.evaluated for s in stats)
    return {
        "wall_s": round(sorted(walls)[1], 3),
        "first_run_wall_s": round(first_wall, 3),
        "generations": len(stats) - 1,
        "population": population,
        "bars": result.top[0].metrics.bar_count,
        "trials": result.trials,
        "shadow_candidates": len(result.shadow_candidates),
        "production_candidates": len(result.production_candidates),
    }


def main() -> None:
    print(
        f"workload: Evolve over gRPC, {GENERATIONS} generations of 50 strategies (2 elites + 48 "
        "children) on 30 days of one-minute ORBT bars fetched from the market server; servers "
        "in their own processes; wall time from request to final result, median of 3 runs after "
        "a first run"
    )
    emit(asyncio.run(run()))


if __name__ == "__main__":
    main()
