"""The console in a browser: a page's first render, and how long a plan takes to reach the page.

    python -m benchmarks.console [--plans 200] [--renders 20]

A federation (`qtmesh serve federation`, one agent) and the console (`qtmesh serve console`) run
in their own processes; Debian's chromium, driven by Playwright, opens Mission Control.

- First render: from the start of navigation to the plans table showing the latest of 50 plans,
  over ``--renders`` fresh page loads; the reference is the same page's data alone, a GET of
  ``/api/plans`` from Python, timed in the same run.
- Plan latency: plans generated at 10 a second; for each, the time from its creation (its
  ``create_time``, same machine clock) to its row appearing in the page (a MutationObserver in
  the page stamps it), against a gRPC subscriber of the federation's stream in this process,
  the reference measured in the same run.

Goals (issue 17): first render <= 1 s, plan to page p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import httpx
from playwright.async_api import async_playwright

from benchmarks._federation import federation_with_agents
from benchmarks._report import emit, percentiles_ms
from federation.client import FederationClient
from qtmesh.runtime.channels import open_channel

CHROMIUM = os.environ.get("QTMESH_CHROMIUM", "/usr/bin/chromium")
RATE = 10.0  # plans per second
HISTORY = 50
# Stamps each plan row when it first appears, with the page's wall clock in nanoseconds.
_OBSERVER = """
window.__seen = {};
new MutationObserver(() => {
  const now = (performance.timeOrigin + performance.now()) * 1e6;
  for (const link of document.querySelectorAll("[data-plan]")) {
    if (!(link.dataset.plan in window.__seen)) window.__seen[link.dataset.plan] = now;
  }
}).observe(document, { childList: true, subtree: true });
"""


async def first_renders(page, url: str, latest: int, renders: int) -> list[float]:
    seconds = []
    for _ in range(renders):
        began = time.perf_counter()
        await page.goto(f"{url}/mission-control")
        await page.locator(f'[data-plan="{latest}"]').wait_for()
        seconds.append(time.perf_counter() - began)
    return seconds


async def api_fetches(url: str, renders: int) -> list[float]:
    seconds = []
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(renders):
            began = time.perf_counter()
            (await http.get("/api/plans")).raise_for_status()
            seconds.append(time.perf_counter() - began)
    return seconds


async def plan_latencies(page, client: FederationClient, address: str, plans: int):
    """(page latencies, direct subscriber latencies), seconds, of ``plans`` new plans."""
    created: dict[int, int] = {}
    direct: list[float] = []
    async with open_channel(address) as channel:
        stream = FederationClient(channel)

        async def subscribe(after: int) -> None:
            async for _sequence, event in stream.subscribe(after_sequence=after):
                if hasattr(event, "create_time"):
                    direct.append((time.time_ns() - event.create_time) / 1e9)
                    if len(direct) == plans:
                        return

        start = (await client.generate_plan()).sequence
        await page.locator(f'[data-plan="{start}"]').wait_for()
        reader = asyncio.ensure_future(subscribe(start))
        began = time.perf_counter()
        for i in range(plans):
            await asyncio.sleep(max(0.0, began + i / RATE - time.perf_counter()))
            made = await client.generate_plan()
            created[made.sequence] = made.create_time
        last = max(created)
        await page.locator(f'[data-plan="{last}"]').wait_for(timeout=30_000)
        await asyncio.wait_for(reader, timeout=30)
    seen = await page.evaluate("window.__seen")
    shown = [(float(seen[str(s)]) - t) / 1e9 for s, t in created.items() if str(s) in seen]
    return shown, direct, plans - len(shown)


async def run(plans: int, renders: int) -> dict[str, object]:
    async with federation_with_agents(count=1) as running:
        console = await running.spawn(
            "console", ["-m", "qtmesh", "serve", "console", "--port", "0", "--http-port", "0"]
        )
        url = console.endpoints["http"]
        async with open_channel(running.federation.address) as channel:
            client = FederationClient(channel)
            for _ in range(HISTORY):
                latest = (await client.generate_plan()).sequence
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM,
                    headless=True,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                page = await browser.new_page()
                await page.add_init_script(_OBSERVER)
                renders_s = await first_renders(page, url, latest, renders)
                fetches_s = await api_fetches(url, renders)
                shown, direct, missing = await plan_latencies(
                    page, client, running.federation.address, plans
                )
                await browser.close()
    render_p50, render_max = percentiles_ms(renders_s, 50, 100)
    fetch_p50 = percentiles_ms(fetches_s, 50)[0]
    page_p50, page_p99 = percentiles_ms(shown, 50, 99)
    direct_p50, direct_p99 = percentiles_ms(direct, 50, 99)
    return {
        "benchmark": "console",
        "history_plans": HISTORY,
        "first_render_p50_ms": render_p50,
        "first_render_max_ms": render_max,
        "api_fetch_p50_ms": fetch_p50,
        "render_over_fetch": round(render_p50 / fetch_p50, 2) if fetch_p50 else None,
        "plans": plans,
        "plans_per_second": RATE,
        "plan_to_page_p50_ms": page_p50,
        "plan_to_page_p99_ms": page_p99,
        "plan_to_subscriber_p50_ms": direct_p50,
        "plan_to_subscriber_p99_ms": direct_p99,
        "p99_over_subscriber": round(page_p99 / direct_p99, 2) if direct_p99 else None,
        "plans_not_shown": missing,
        "first_render_goal_met": render_max <= 1000,
        "plan_latency_goal_met": page_p99 <= 100 and missing == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=200)
    parser.add_argument("--renders", type=int, default=20)
    args = parser.parse_args()
    print(
        f"workload: Mission Control in chromium; {args.renders} first renders of {HISTORY} "
        f"plans, then {args.plans} plans at {RATE:g}/s to the page and to a gRPC subscriber"
    )
    emit(asyncio.run(run(args.plans, args.renders)))


if __name__ == "__main__":
    main()
