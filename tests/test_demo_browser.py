"""A real browser on the demo: headless Debian Chromium driven by Playwright uploads an image, clicks
Segment and waits for the overlay and its legend. Install the browser with `bash scripts/install_browser.sh`.
Saves test-artifacts/demo_browser.png."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from test_demo import load_app, make_tiny_model, scene

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
NAMES = [
    "background",
    "grinning face",
    "red apple",
    "cat face",
    "sun with face",
    "rocket",
    "four leaf clover",
    "hot beverage",
    "umbrella",
    "pizza",
    "soccer ball",
    "ghost",
]

if not CHROMIUM.exists():
    pytest.skip(
        "no /usr/bin/chromium (Debian's chromium package); run `bash scripts/install_browser.sh`",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing; run `bash scripts/install_browser.sh`"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="domcontentloaded")
    return page


def launch(blocks):
    blocks.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return blocks.local_url


def test_upload_segment_and_see_the_legend(browser, tmp_path):
    app = load_app()
    model_dir = make_tiny_model(tmp_path / "model", NAMES)
    image_path = tmp_path / "scene.png"
    scene(320, 240, seed=3).save(image_path)

    blocks = app.build_demo(model_dir)
    try:
        page = open_page(browser, launch(blocks))
        segment = page.get_by_role("button", name="Segment")
        segment.wait_for(state="visible")

        page.locator("input[type=file]").first.set_input_files(str(image_path))
        page.locator("img[src*='/file=']").first.wait_for(state="visible")  # the upload shows
        segment.click()

        legend = page.locator(".legend-item")
        legend.first.wait_for(state="visible")
        assert page.locator("img.base-image").first.is_visible()
        assert page.locator("img.mask").count() == legend.count() >= 1
        legend_texts = [text.strip() for text in legend.all_inner_texts()]
        assert any(text in NAMES for text in legend_texts), legend_texts
        page.locator("#status").get_by_text("classes").first.wait_for(state="visible")
        page.get_by_text("Area per class").first.wait_for(state="visible")
        page.get_by_text("larvseg_label_map-").first.wait_for(state="visible")  # the download

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "demo_browser.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        page.close()
    finally:
        blocks.close()


def test_missing_model_page_gives_the_command(browser, tmp_path):
    app = load_app()
    blocks = app.build_demo(tmp_path / "not-trained-yet")
    try:
        page = open_page(browser, launch(blocks))
        page.locator("#model-missing").get_by_text("bash scripts/run_main.sh").wait_for(state="visible")
        assert page.get_by_role("button", name="Segment").is_disabled()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "demo_browser_missing_model.png"), full_page=True)
        page.close()
    finally:
        blocks.close()
