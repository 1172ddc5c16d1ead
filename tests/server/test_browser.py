"""The upload page in headless Chromium: upload, duplicate feedback, list, download, dashboard."""

from __future__ import annotations

import os
import random
import shutil
from typing import NoReturn

import pytest

# Debian's Chromium (apt-get install chromium): Playwright drives it through executable_path,
# so no browser download is needed.
CHROMIUM = os.environ.get("CHUNKSTORE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def no_browser(reason: str) -> NoReturn:
    """Skip on a developer's machine; fail in CI, where the browser test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and the browser test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def browser_page():
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("playwright is not installed (it is in the test extra)")
    if not os.path.exists(CHROMIUM):
        no_browser(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except PlaywrightError as error:
            no_browser(f"Chromium at {CHROMIUM} did not start: {error}")
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
            yield context.new_page()
        finally:
            browser.close()


def test_upload_duplicate_download_and_dashboard(browser_page, server, tmp_path):
    page = browser_page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    source = tmp_path / "holiday-photos.bin"
    data = random.Random(42).randbytes(180_000)
    source.write_bytes(data)

    page.goto(server.base_url + "/")
    page.set_input_files("#picker", str(source))
    first = page.locator("#uploads li").first
    first.locator(".result.stored").wait_for()
    assert "File processed successfully" in first.locator(".result").inner_text()
    assert first.locator("progress").evaluate("bar => bar.value") == 1

    page.set_input_files("#picker", str(source))
    page.locator("#uploads li .result.duplicate").wait_for()
    assert "Duplicate file detected" in page.locator("#uploads li").first.locator(".result").inner_text()

    row = page.locator("#file-rows tr", has_text="holiday-photos.bin")
    row.wait_for()
    with page.expect_download() as download_info:
        row.get_by_role("button", name="Download").click()
    downloaded = tmp_path / "downloaded.bin"
    download_info.value.save_as(downloaded)
    assert downloaded.read_bytes() == data

    page.fill("#search", "no-such-name")
    assert page.locator("#file-rows tr").count() == 0 and page.locator("#empty").is_visible()
    page.fill("#search", "holiday")
    assert page.locator("#file-rows tr").count() == 1

    page.locator("#activity li", has_text="Duplicate file detected").wait_for()
    # A copy under another name and a compressible file give the dashboard savings to show.
    notes = b"meeting notes, again and again. " * 20_000
    with server.client() as client:
        client.post("/files", params={"name": "backup/holiday-photos.bin"}, content=data)
        client.post("/files", params={"name": "notes.txt"}, content=notes)
    page.click("#refresh")
    page.locator("#activity li", has_text="notes.txt").wait_for()
    page.wait_for_function("document.querySelectorAll('#chart rect').length === 4")
    assert page.locator("#counts").inner_text() == "3 / 3"
    assert page.locator("#logical").inner_text() == f"{(2 * len(data) + len(notes)) / 1024:.1f} KiB"
    assert float(page.locator("#dedup").inner_text().rstrip("x")) > 1
    screenshot = tmp_path / "dashboard.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"dashboard screenshot: {screenshot}")
    assert screenshot.stat().st_size > 0
    # Everything the page loaded came from the server itself: no CDN, nothing external.
    assert requested and all(url.startswith(server.base_url) or url.startswith("blob:") for url in requested)


def test_page_asks_for_a_token_and_then_works(browser_page, start_server):
    from .test_auth import make_token

    token, line = make_token("browser")
    server = start_server(env={"CHUNKSTORE_TOKENS": line})
    page = browser_page
    page.goto(server.base_url + "/")
    notice = page.locator("#notice")
    notice.wait_for()
    assert "needs a token" in notice.inner_text()
    page.fill("#token", token)
    page.click("#token-form button")
    notice.wait_for(state="hidden")
    assert page.evaluate("document.cookie") == ""
