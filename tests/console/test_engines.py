"""The console's Evolution and Risk views over real servers on port 0 (the market, SESA on it,
the risk officer on it): the API relays SESA's evolution events and the risk report, and the
pages show them in a real browser (Debian's chromium), an evolution's generations arriving
live and a breached limit with its numbers."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright, expect

import sesa.service
from agents.risk.client import RiskClient
from agents.risk.config import RiskConfig
from agents.risk.service import APP as RISK
from console.config import ConsoleConfig
from console.service import APP as console_app
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.base.contract import Action, AdjustRiskLimits, Priority, RiskLimits
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from sesa.client import SesaClient, bar_source
from sesa.config import SesaConfig

CHROMIUM = Path(os.environ.get("QTMESH_CHROMIUM", "/usr/bin/chromium"))
HAVE_CHROMIUM = CHROMIUM.exists()
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
QUICK = pb.EvolutionConfig(
    num_generations=3, num_mutations_per_parent=4, evaluation_lookback_days=2
)
SHOWN = 15_000


@contextlib.asynccontextmanager
async def engines(tmp_path: Path):
    """(market, sesa, risk, console URL) on port 0."""
    market_config = MarketConfig(
        synthetic_days=3, seed=5, data_dir=tmp_path / "market", fleet_warmup_bars=600
    )
    async with serving_app(MARKET, market_config) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        sesa_config = SesaConfig(
            data_dir=tmp_path / "sesa",
            world_model_scenarios=False,
            record_to_memory=False,
            recall_from_memory=False,
        )
        risk_config = RiskConfig(data_dir=tmp_path / "risk", min_observations=5)
        async with (
            serving_app(sesa.service.APP, sesa_config, channel_config=channels) as evolver,
            serving_app(RISK, risk_config, channel_config=channels) as risk,
        ):
            to_console = ChannelConfig(
                addresses={"sesa": evolver.address, "risk": risk.address, "market": market.address}
            )
            async with serving_app(
                console_app, ConsoleConfig(http_port=0), channel_config=to_console
            ) as console:
                yield market, evolver, risk, console.server.endpoints["http"]


async def evolve(evolver, seed: int = 7) -> pb.EvolutionResult:
    events = [
        e
        async for e in SesaClient(evolver.channel).evolve(
            bars=bar_source(symbol="NOVA"), config=QUICK, seed=seed
        )
    ]
    return events[-1]


async def test_the_api_relays_evolutions_and_the_risk_report(tmp_path):
    async with engines(tmp_path) as (market, evolver, _risk, url):
        result = await evolve(evolver)
        await MarketClient(market.channel).advance(10 * 60)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            kinds, ids = [], []
            async with http.stream("GET", "/api/evolutions/events?after=0") as response:
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        kinds.append(line.split(":", 1)[1].strip())
                    if line.startswith("id:"):
                        ids.append(int(line.split(":", 1)[1]))
                    if kinds and kinds[-1] == "ended" and line == "":
                        break
            assert kinds == [
                "started",
                "generation",
                "generation",
                "generation",
                "generation",
                "ended",
            ]
            assert ids == sorted(ids)
            report = (await http.get("/api/risk")).json()
        assert report["observations"] >= 5
        assert report["limits"]["max_var_95"] > 0
        assert report["portfolio"]["historical_var_95"] > 0
        assert report["trading_halted"] is False
        assert result.evolution_id


async def sse(http: httpx.AsyncClient, path: str, count: int, **headers) -> list[tuple[str, str]]:
    """(id, data) of the first ``count`` server-sent events of ``path``."""
    found, event_id = [], None
    async with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                event_id = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                found.append((event_id, line.split(":", 1)[1].strip()))
                if len(found) == count:
                    return found
    return found


async def test_the_api_shows_the_fleet_and_its_trades_resuming_after_a_cursor(tmp_path):
    async with engines(tmp_path) as (market, _evolver, _risk, url):
        await MarketClient(market.channel).advance(10 * 60)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            fleet = (await http.get("/api/fleet", params={"curve_points": 20})).json()
            assert len(fleet["curve"]) == 20
            assert fleet["curve"][-1]["equity"] == pytest.approx(fleet["equity"])
            assert {s["sector"] for s in fleet["sectors"]} >= {"Tech", "Energy"}
            assert fleet["equity"] > 0
            assert len(fleet["strategies"]) > 0
            ((last, data),) = await sse(http, "/api/trades/events", 1)
            trades = json.loads(data)  # every trade closed so far, in the order they closed
            assert len(trades) > 20
            assert last == f"{trades[-1]['exit_time']}/{trades[-1]['strategy_id']}"
            middle = trades[len(trades) // 2]
            cursor = f"{middle['exit_time']}/{middle['strategy_id']}"
            ((_, rest),) = await sse(http, "/api/trades/events", 1, **{"Last-Event-ID": cursor})
            assert json.loads(rest) == trades[len(trades) // 2 + 1 :]
            refused = await http.get("/api/trades/events", headers={"Last-Event-ID": "soon"})
            assert refused.status_code == 400
            assert refused.json()["field"] == "Last-Event-ID"


async def test_the_pages_show_an_evolution_live_and_a_breached_limit(tmp_path):
    if not HAVE_CHROMIUM:
        pytest.fail(f"no browser at {CHROMIUM}: `make test` installs Debian's chromium")
    async with (
        engines(tmp_path) as (market, evolver, risk, url),
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(f"{url}/evolution")
            await expect(page.locator(".live")).to_have_text("live")
            result = await evolve(evolver)  # runs while the page watches
            await expect(page.locator("#evolutions")).to_contain_text(
                result.evolution_id, timeout=SHOWN
            )
            await expect(page.locator("#evolutions")).to_contain_text("FINISHED", timeout=SHOWN)
            await expect(page.locator("#generations tbody tr")).to_have_count(4)
            best = f"{max(g.best_composite for g in result.generations):.3f}"
            await expect(page.locator("#generations")).to_contain_text(best)
            await expect(page.locator("#candidates tbody tr").first).not_to_contain_text(
                "nothing yet"
            )
            await expect(page.locator("#candidates tbody tr").first).to_contain_text(" / ")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "evolution.png"), full_page=True)

            await MarketClient(market.channel).advance(10 * 60)
            var = (await RiskClient(risk.channel).assess()).portfolio.historical_var_95
            tighter = Action(
                id="a1",
                priority=Priority.CRITICAL,
                target="risk",
                parameters=AdjustRiskLimits(RiskLimits(max_var_95=var / 2)),
                confidence=0.9,
                rationale="the console test halves the VaR limit",
                idempotency_key="plan-1/limits",
            )
            await AgentClient(risk.channel, name="risk").execute(tighter, plan_sequence=1)
            await page.goto(f"{url}/risk")
            await expect(page.locator("#breaches")).to_contain_text("max_var_95")
            await expect(page.locator("#halts")).to_contain_text("trading is on")
            await page.screenshot(path=str(ARTIFACTS / "risk.png"), full_page=True)

            await page.goto(f"{url}/fleet")
            await expect(page.locator("#sectors")).to_contain_text("Tech")
            await expect(page.locator("#stats")).to_contain_text("equity")
            await expect(page.locator("#trades tbody tr")).to_have_count(15)  # a full page
            await expect(page.locator("#halted")).to_contain_text("nothing halted")
            points = await page.evaluate(
                "Chart.getChart(document.getElementById('equity')).data.datasets[0].data.length"
            )
            assert points > 100  # the curve, sampled (400 at most)
            await page.screenshot(path=str(ARTIFACTS / "fleet.png"), full_page=True)
        finally:
            await browser.close()
