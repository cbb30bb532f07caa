"""Market service over gRPC, server in its own process: a 30-day window of one-minute bars
(43,200 bars, what SESA evaluates on), snapshots, and the replay stream fanned out to subscribers.

    python -m benchmarks.market [--subscribers 100] [--steps 300]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks._report import emit, percentiles_ms
from market.client import MarketClient
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import running_mesh

WINDOW = 43_200


async def run(subscribers: int, steps: int, repeats: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as logs:
        async with (
            running_mesh(["market"], log_dir=Path(logs)) as mesh,
            open_channel(mesh.addresses["market"]) as channel,
        ):
            market = MarketClient(channel)
            await market.bars("ORBT", lookback=WINDOW)  # warm-up: connection, first page

            windows = []
            for _ in range(repeats):
                start = time.perf_counter()
                bars = await market.bars("ORBT", lookback=WINDOW)
                windows.append(time.perf_counter() - start)
                assert len(bars) == WINDOW

            snapshots = []
            for _ in range(repeats * 10):
                start = time.perf_counter()
                await market.snapshot()
                snapshots.append(time.perf_counter() - start)

            delivery = await _stream(market, subscribers, steps)

    window_p50, window_p99 = percentiles_ms(windows, 50, 99)
    snap_p50, snap_p99 = percentiles_ms(snapshots, 50, 99)
    stream_p50, stream_p99 = percentiles_ms(delivery, 50, 99)
    return {
        "window_bars": WINDOW,
        "get_bars_p50_ms": window_p50,
        "get_bars_p99_ms": window_p99,
        "bars_per_second": round(WINDOW / (window_p50 / 1000)),
        "snapshot_p50_ms": snap_p50,
        "snapshot_p99_ms": snap_p99,
        "stream_subscribers": subscribers,
        "stream_steps": steps,
        "stream_delivery_p50_ms": stream_p50,
        "stream_delivery_p99_ms": stream_p99,
    }


async def _stream(market: MarketClient, subscribers: int, steps: int) -> list[float]:
    """Delay from sending Advance(1) to each subscriber receiving that step."""
    start = (await market.snapshot()).position
    sent: dict[int, float] = {}
    delays: list[float] = []

    async def subscriber() -> None:
        # Subscribing from `start` loses nothing even if a step happens before it connects.
        async for position, _clock, _bars in market.stream_bars(after_position=start):
            delays.append(time.perf_counter() - sent[position])
            if position == start + steps:
                return

    tasks = [asyncio.ensure_future(subscriber()) for _ in range(subscribers)]
    for step in range(1, steps + 1):
        sent[start + step] = time.perf_counter()
        await market.advance(1)
    await asyncio.gather(*tasks)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(
        f"workload: GetBars of {WINDOW:,} one-minute bars x {args.repeats}, Snapshot x "
        f"{args.repeats * 10}, {args.steps} Advance(1) steps streamed to {args.subscribers} "
        "subscribers; market server in its own process on loopback"
    )
    emit(asyncio.run(run(args.subscribers, args.steps, args.repeats)))


if __name__ == "__main__":
    main()
