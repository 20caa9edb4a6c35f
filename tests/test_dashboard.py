"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): figures, updates, retry."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from mediacache.domain import CacheStatus
from tests.support.api import Api, new_id, running_api
from tests.support.origin import Origin
from tests.support.receiver import Receiver
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"
UPDATE_TIMEOUT_MS = 15_000  # the page polls every 2 s
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# SQLite only: the page is what is tested here; both databases are covered in test_api.py.
pytestmark = [
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"),
]




@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        await launched.close()


async def _open(browser: Browser, url: str, **context: object) -> tuple[Page, list[str]]:
    """Opens the dashboard; returns the page and a list that collects its script errors (CSP included)."""
    ctx = await browser.new_context(**context)  # type: ignore[arg-type]
    page = await ctx.new_page()
    problems: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            problems.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    await page.goto(url + "/")
    return page, problems


def _field(page: Page, name: str) -> object:
    return page.locator(f'dd[data-field="{name}"]')


async def test_figures_appear_and_update_after_a_job_completes(
        make_settings: SettingsFactory, origin: Origin, browser: Browser, tmp_path: Path) -> None:
    async with running_api(make_settings) as api:
        urls = [origin.url(f"/media/{60 + i}.jpg?size={20_000 + 1000 * i}") for i in range(12)]
        ids = (await api.client.post("/api/assets/batch", json={"urls": urls})).json()["ids"]
        bad = (await api.client.post("/api/assets/batch", json={"urls": [
            origin.url("/status/404"), origin.url("/status/403")]})).json()["ids"]
        await api.wait_settled(ids + bad)

        page, problems = await _open(browser, api.url, viewport={"width": 1200, "height": 900})
        # Rendered by the server: present before any script runs.
        await expect(page.locator('dd[data-field="cache.cached"]')).to_have_text("12")
        await expect(page.locator('dd[data-field="cache.failed"]')).to_have_text("2")
        await expect(page.locator('dd[data-field="queue.waiting"]')).to_have_text("0")
        await expect(page.locator("#failures li")).to_have_count(2)
        # Polite fetching's panel: the one origin host with its breaker and limits, nothing at risk.
        await expect(page.locator('dd[data-field="cache.at_risk"]')).to_have_text("0")
        host_row = page.locator("#hosts tbody tr")
        await expect(host_row).to_have_count(1)
        await expect(host_row.locator("td")).to_have_text(["127.0.0.1", "closed", re.compile(r"[\d.]+"),
                                                          "0", "unlimited:64"])
        await expect(page.locator("#failures")).to_contain_text("not_found")
        await expect(page.locator("#failures")).to_contain_text("forbidden")
        await expect(page.locator("#failures")).to_contain_text("404")
        # Drawn by the script: one bar per 10 s over 10 minutes, and the cached assets counted.
        await expect(page.locator("#chart rect")).to_have_count(60)
        await expect(page.locator("#chart-total")).to_have_text("12")
        await expect(page.locator("#live")).to_have_class("live ok", timeout=UPDATE_TIMEOUT_MS)
        # docs/dashboard.png is rewritten only on request, so a test run leaves the tree clean.
        refresh = os.environ.get("MEDIACACHE_UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists()
        shot = SCREENSHOT if refresh else tmp_path / "dashboard.png"
        shot.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        # A job completes while the page is open: the figures follow without a reload.
        new = (await api.client.post("/api/assets", json={"url": origin.url("/media/99.jpg?size=5000")})).json()
        await api.wait_settled([new["id"]])
        await expect(page.locator('dd[data-field="cache.cached"]')).to_have_text("13", timeout=UPDATE_TIMEOUT_MS)
        await expect(page.locator('dd[data-field="cache.total"]')).to_have_text("15", timeout=UPDATE_TIMEOUT_MS)
        await expect(page.locator("#chart-total")).to_have_text("13", timeout=UPDATE_TIMEOUT_MS)
        assert problems == []

        # On a phone: one column, nothing wider than the screen.
        phone, phone_problems = await _open(browser, api.url, viewport={"width": 390, "height": 844},
                                            is_mobile=True, has_touch=True, device_scale_factor=2)
        await expect(phone.locator('dd[data-field="cache.cached"]')).to_have_text("13")
        assert await phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        retry_box = await phone.locator("#retry").bounding_box()
        assert retry_box is not None and retry_box["height"] >= 40  # a finger can hit it
        assert phone_problems == []


async def _status(api: Api, asset_id: str) -> CacheStatus | None:
    rec = await api.cache.get_asset(asset_id)
    return None if rec is None else rec.status


async def test_the_retry_button_retries_failed_assets(
        make_settings: SettingsFactory, origin: Origin, browser: Browser) -> None:
    token = "dash-" + new_id()
    async with running_api(make_settings, api_token=token) as api:
        auth = {"Authorization": f"Bearer {token}"}
        # Fails once with a 404 (final at once), then the origin answers: a retry can succeed.
        url = origin.url(f"/flaky/{new_id()}.jpg?fail=1&status=404")
        asset_id = (await api.client.post("/api/assets", json={"url": url}, headers=auth)).json()["id"]
        await api.wait_settled([asset_id])
        assert await _status(api, asset_id) is CacheStatus.FAILED

        page, problems = await _open(browser, api.url, viewport={"width": 1000, "height": 800})
        await expect(page.locator('dd[data-field="cache.failed"]')).to_have_text("1")
        await expect(page.locator("#failures")).to_contain_text("not_found")

        # Without the token the server refuses, and the page says so.
        await page.locator("#retry").click()
        await expect(page.locator("#retry-result")).to_contain_text("Retry refused", timeout=UPDATE_TIMEOUT_MS)
        assert await _status(api, asset_id) is CacheStatus.FAILED

        await page.locator("#token").fill(token)
        await page.locator("#token-form button").click()
        await page.locator("#retry").click()
        await expect(page.locator("#retry-result")).to_have_text("Retried 1 failed assets.",
                                                                 timeout=UPDATE_TIMEOUT_MS)

        async def cached() -> bool:
            return await _status(api, asset_id) is CacheStatus.CACHED
        await wait_until(cached, what="the retried asset to be cached")
        await expect(page.locator('dd[data-field="cache.failed"]')).to_have_text("0", timeout=UPDATE_TIMEOUT_MS)
        await expect(page.locator('dd[data-field="cache.cached"]')).to_have_text("1", timeout=UPDATE_TIMEOUT_MS)
        await expect(page.locator("#failures")).to_have_text("No failures.", timeout=UPDATE_TIMEOUT_MS)
        # The 401/403 of the refused retry is logged by Chromium as a failed resource; nothing else.
        assert all("401" in p or "403" in p for p in problems), problems


async def test_the_page_refreshes_on_events_and_shows_webhook_deliveries(
        make_settings: SettingsFactory, browser: Browser, origin: Origin) -> None:
    receiver = Receiver()  # down, and the first retry an hour away: the delivery stays pending
    async with running_api(make_settings, webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET,
                           webhook_allowed_networks="127.0.0.0/8", webhook_backoff_s=3600) as api:
        page, problems = await _open(browser, api.url)
        # Set by the first refresh that ran while the stream was open; polls are 15 s apart from then on.
        await expect(page.locator("#live-text")).to_contain_text("events", timeout=UPDATE_TIMEOUT_MS)
        await api.client.post("/api/assets", json={"url": origin.url("/media/41.jpg")})
        # Well before the next poll: the asset.cached event made the page read the figures again.
        await expect(_field(page, "cache.cached")).to_have_text("1", timeout=6000)
        await expect(page.locator("#webhooks")).to_be_visible()
        await expect(page.locator('#webhooks [data-field="webhooks.pending"]')).to_have_text("1", timeout=6000)
        assert problems == []
