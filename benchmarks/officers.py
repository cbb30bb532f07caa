"""The three officers over gRPC, each server in its own process: Recommend from their caches,
and their own reports (AssessRisk, GetMode, ListStrategies) right after a day of replay and
when nothing new happened.

    python -m benchmarks.officers [--repeats 200] [--hours 24]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agents.ceo.client import CeoClient
from agents.risk.client import RiskClient
from agents.strategy.client import StrategyOfficerClient
from benchmarks._report import emit, percentiles_ms
from market.client import MarketClient
from qtmesh.base.contract import AgentContext
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import running_mesh

SERVICES = ("market", "world-model", "sesa", "risk", "ceo", "strategy")


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def run(repeats: int, hours: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as directory:
        data = Path(directory) / "data"
        env = {
            **os.environ,
            "QTMESH_MARKET_DATA_DIR": str(data),
            "QTMESH_RISK_DATA_DIR": str(data),
            "QTMESH_CEO_DATA_DIR": str(data),
        }
        async with running_mesh(SERVICES, log_dir=Path(directory), env=env) as mesh:
            channels = {name: open_channel(mesh.addresses[name], timeout=120) for name in SERVICES}
            try:
                market = MarketClient(channels["market"])
                for _ in range(hours):
                    await market.advance(60)
                reports = {
                    "risk_assess": lambda: RiskClient(channels["risk"]).assess(),
                    "ceo_get_mode": lambda: CeoClient(channels["ceo"]).mode(),
                    "strategy_list": lambda: StrategyOfficerClient(channels["strategy"]).page(),
                }
                figures: dict[str, object] = {}
                for name, call in reports.items():
                    figures[f"{name}_after_replay_ms"] = round(await timed(call) * 1000, 3)
                for name, call in reports.items():
                    samples = [await timed(call) for _ in range(max(repeats // 10, 5))]
                    (p50,) = percentiles_ms(samples, 50)
                    figures[f"{name}_unchanged_p50_ms"] = p50
                snapshot = await market.snapshot()
                context = AgentContext(
                    cycle_id="bench",
                    as_of_time=snapshot.clock_time,
                    market_position=snapshot.position,
                )
                for name in ("risk", "ceo", "strategy"):
                    agent = AgentClient(channels[name], name=name)
                    answers = await agent.recommend(context)
                    samples = [
                        await timed(lambda agent=agent: agent.recommend(context))
                        for _ in range(repeats)
                    ]
                    p50, p99 = percentiles_ms(samples, 50, 99)
                    figures[f"{name}_recommend_p50_ms"] = p50
                    figures[f"{name}_recommend_p99_ms"] = p99
                    figures[f"{name}_recommendations"] = len(answers)
            finally:
                for channel in channels.values():
                    await channel.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--hours", type=int, default=24)
    args = parser.parse_args()
    print(
        f"workload: market, world model, SESA and the three officers as processes; "
        f"{args.hours} h of the synthetic market replayed; each officer's report once right "
        f"after (it catches up on the new hourly periods) and then unchanged; {args.repeats} "
        "sequential Recommend calls per officer"
    )
    emit(asyncio.run(run(args.repeats, args.hours)))


if __name__ == "__main__":
    main()
