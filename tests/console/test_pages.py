"""The console's pages in a real browser (Debian's chromium driven by Playwright) against real
servers on loopback: every page renders with data, a new plan appears without a reload, a
proposal's lifecycle moves on screen, a tampered ledger shows its first bad entry, and a page
recovers from a console restart without missing an event. Screenshots are saved to
``test-artifacts/console/``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.async_api import Page, async_playwright, expect

from console.config import ConsoleConfig
from console.service import APP as console_app
from meta_optimizer.store import ledger
from qtmesh.base.config import Secret
from qtmesh.base.storage import create_engine, sqlite_url
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.server import ServerConfig
from qtmesh.testing import serving_app
from tests.helpers.meta_optimizer import Progress, optimizer, plan, world

CHROMIUM = Path(os.environ.get("QTMESH_CHROMIUM", "/usr/bin/chromium"))
HAVE_CHROMIUM = CHROMIUM.exists()
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
# Seconds a page gets to show what the test waits for (a reconnect takes the browser ~3 s).
SHOWN = 15_000


@pytest.fixture
async def browser():
    if not HAVE_CHROMIUM:
        pytest.fail(f"no browser at {CHROMIUM}: `make test` installs Debian's chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def console(w, optimizer_address: str, *, port: int = 0, server_config=None):
    channels = ChannelConfig(
        addresses={"federation": w.federation_address, "meta-optimizer": optimizer_address}
    )
    config = ConsoleConfig(http_port=port)
    async with serving_app(
        console_app, config, channel_config=channels, server_config=server_config
    ) as running:
        yield running.server.endpoints["http"]


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_every_page_renders_with_data(tmp_path, browser):
    progress = Progress()
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, progress) as (client, running),
        console(w, running.address) as url,
    ):
        cycle = await client.run_cycle()
        made, last = await plan(w.federation)
        await progress.reach(last)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})

        await page.goto(f"{url}/singularity")
        await expect(page.locator("#pulse")).to_contain_text("reports audited")
        await expect(page.locator("#sectors")).to_contain_text("Tech")
        await expect(page.locator("#active")).to_contain_text(cycle.proposals[0].id)
        await expect(page.locator("#gap")).to_contain_text("Dominant sector")
        await shot(page, "singularity")

        await page.goto(f"{url}/governance")
        await expect(page.locator("#verification")).to_contain_text("3 entries verify")
        await expect(page.locator("#ledger tbody tr")).to_have_count(3)
        await shot(page, "governance")

        await page.goto(f"{url}/mission-control")
        await expect(page.locator("#plans")).to_contain_text(f"#{made.sequence}")
        await expect(page.locator("#agents")).to_contain_text("meta-optimizer")
        await expect(page.locator("#missions")).to_contain_text("Tech / Energy")
        await expect(page.locator("#actions")).to_contain_text("COMPLETED")
        await shot(page, "mission-control")

        await page.goto(url)
        await expect(page.locator("#health")).to_contain_text("Read-only")


async def test_a_new_plan_and_a_proposal_moving_appear_without_a_reload(tmp_path, browser):
    progress = Progress()
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, progress) as (client, running),
        console(w, running.address) as url,
    ):
        cycle = await client.run_cycle()
        proposal = cycle.proposals[0]
        plans = await browser.new_page()
        await plans.goto(f"{url}/mission-control")
        await expect(plans.locator("#plans")).to_contain_text("nothing yet")
        proposals = await browser.new_page()
        await proposals.goto(f"{url}/singularity")
        state = proposals.locator(f'[data-state="{proposal.id}"]')
        await expect(state).to_have_text("PROPOSED")
        await expect(plans.locator(".live")).to_have_text("live")

        made, _ = await plan(w.federation)
        await expect(plans.locator("#plans")).to_contain_text(f"#{made.sequence}", timeout=SHOWN)
        await expect(plans.locator("#actions")).to_contain_text("COMPLETED", timeout=SHOWN)
        await expect(state).to_have_text("APPLIED", timeout=SHOWN)
        await shot(plans, "mission-control-live")
        await shot(proposals, "singularity-applied")


async def test_a_tampered_ledger_shows_its_first_bad_entry(tmp_path, browser):
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, Progress()) as (client, running),
        console(w, running.address) as url,
    ):
        await client.run_cycle()
        engine = create_engine(sqlite_url(tmp_path / "metaopt" / "metaopt.db"))
        with engine.begin() as connection:
            connection.execute(
                sa.update(ledger).where(ledger.c.ledger_index == 1).values(rationale="rewritten")
            )
        engine.dispose()
        page = await browser.new_page()
        await page.goto(f"{url}/governance")
        await expect(page.locator("#first-bad")).to_have_text("1")
        await expect(page.locator("#verification")).to_contain_text("was altered")
        await expect(page.locator("#ledger tbody")).to_contain_text("⚠ 1")
        await shot(page, "governance-tampered")


async def test_a_page_recovers_from_a_console_restart_without_missing_an_event(tmp_path, browser):
    progress = Progress()
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, progress) as (client, running),
    ):
        await client.run_cycle()
        first, _ = await plan(w.federation)
        page = await browser.new_page()
        async with console(w, running.address) as url:
            port = int(url.rsplit(":", 1)[1])
            await page.goto(f"{url}/mission-control")
            await expect(page.locator("#plans")).to_contain_text(f"#{first.sequence}")
            await expect(page.locator(".live")).to_have_text("live")
        # The console is down: what happens now reaches the page once it is back.
        await expect(page.locator(".live")).to_have_text("reconnecting", timeout=SHOWN)
        missed, _ = await plan(w.federation)
        async with console(w, running.address, port=port):
            await expect(page.locator("#plans")).to_contain_text(
                f"#{missed.sequence}", timeout=SHOWN
            )
            await expect(page.locator(".live")).to_have_text("live", timeout=SHOWN)
            rows = page.locator("#plans tbody tr")
            await expect(rows).to_have_count(2)  # each plan once
            await shot(page, "mission-control-after-restart")


async def test_a_page_reads_and_follows_with_the_mesh_token_in_its_cookie(tmp_path, browser):
    guarded = ServerConfig(port=0, grace_seconds=1.0, auth_tokens=Secret("browser:s3cret"))
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, Progress()) as (client, running),
        console(w, running.address, server_config=guarded) as url,
    ):
        await client.run_cycle()
        context = await browser.new_context()
        await context.add_cookies([{"name": "qtmesh_token", "value": "s3cret", "url": url}])
        page = await context.new_page()
        await page.goto(f"{url}/governance")
        await expect(page.locator("#verification")).to_contain_text("3 entries verify")
        await expect(page.locator("#ledger tbody tr")).to_have_count(3)  # from the stream
        await expect(page.locator(".live")).to_have_text("live")
