"""A real browser on the demo: headless Debian Chromium driven by Playwright uploads an image, clicks
Segment, checks the overlay, its legend and colours, that a new upload or an example clears the result,
and that Enter in the class dropdown picks the highlighted match. Install the browser with
`bash scripts/install_browser.sh`. Saves screenshots in test-artifacts/."""

from __future__ import annotations

import json
import os
import re
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


def legend(page) -> list[str]:
    return [text.strip() for text in page.locator(".legend-item").all_inner_texts()]


def upload(page, path: Path) -> None:
    """Put a file in the image input and wait until the page shows it."""
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.locator(f"img[src*='{path.name}']").first.wait_for(state="visible")


def wait_cleared(page) -> None:
    """The previous result is gone: no overlay, no legend, no label-map file, no table rows, a fresh status."""
    page.locator("#status").get_by_text("Press Segment").wait_for(state="visible")
    page.locator(".legend-item").first.wait_for(state="detached")
    assert page.locator("img.mask").count() == 0
    assert page.get_by_text("larvseg_label_map-").count() == 0
    assert page.get_by_role("gridcell", name="background", exact=True).count() == 0


def test_upload_segment_new_upload_example_and_dropdown(browser, tmp_path):
    app = load_app()
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    scene(320, 240, seed=3).save(first)
    scene(200, 150, seed=5).save(second)
    # Background is the largest class in the first scene (see make_tiny_model), so hiding it shows.
    model_dir = make_tiny_model(tmp_path / "model", NAMES, background_scene=scene(320, 240, seed=3))
    bench = tmp_path / "bench"
    (bench / "eval").mkdir(parents=True)
    scene(64, 64, seed=9).save(bench / "eval" / "scene_0.png")
    (bench / "eval" / "metadata.jsonl").write_text(json.dumps({"file_name": "scene_0.png"}) + "\n")
    (model_dir / "larvseg_training.json").write_text(json.dumps({"root": str(bench)}))

    blocks = app.build_demo(model_dir)
    try:
        page = open_page(browser, launch(blocks))
        segment = page.get_by_role("button", name="Segment")
        segment.wait_for(state="visible")

        # Upload -> segment: the overlay, its legend, the status, the table and the download.
        upload(page, first)
        segment.click()
        page.locator(".legend-item").first.wait_for(state="visible")
        assert page.locator("img.base-image").first.is_visible()
        assert page.locator("img.mask").count() == len(legend(page)) >= 1
        names = legend(page)
        assert set(names) <= set(NAMES) and "background" not in names, names
        # The largest class gets the palette's first colour (color_map reached the page).
        red, green, blue = (int(app.PALETTE[0][i : i + 2], 16) for i in (1, 3, 5))
        style = page.locator(".legend-item").first.get_attribute("style") or ""
        assert f"rgba({red}, {green}, {blue}" in style, style
        page.locator("#status").get_by_text("Show background").first.wait_for(state="visible")
        page.get_by_role("gridcell", name="background", exact=True).first.wait_for(
            state="visible"
        )  # in the table
        page.get_by_text("larvseg_label_map-").first.wait_for(state="visible")  # the download

        # "Show background" paints it too, without segmenting again.
        page.get_by_label("Show background").check()
        page.locator(".legend-item", has_text="background").first.wait_for(state="visible")
        assert legend(page)[0] == "background"

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "demo_browser.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000

        # A new upload clears the previous result.
        upload(page, second)
        wait_cleared(page)
        segment.click()
        page.locator(".legend-item").first.wait_for(state="visible")
        # So does choosing an example.
        page.locator(".gallery-item, button.gallery-item, [data-testid='example']").first.click()
        wait_cleared(page)

        # The class dropdown: part of a name + Enter picks the highlighted match, not the fragment.
        box = page.get_by_role("combobox", name="These classes")
        for fragment in ("bever", "umbr"):
            box.click()
            box.fill(fragment)
            page.get_by_role("option", name=re.compile(fragment)).first.wait_for(state="visible")
            box.press("Enter")
        tokens = [t.strip() for t in page.locator("#classes .token").all_inner_texts()]
        assert tokens == ["hot beverage", "umbrella"], tokens
        page.get_by_role("radio", name="these classes").check()
        segment.click()
        page.locator(".legend-item").first.wait_for(state="visible")
        assert set(legend(page)) <= {"hot beverage", "umbrella"} and legend(page), legend(page)
        page.screenshot(path=str(ARTIFACTS / "demo_browser_these_classes.png"), full_page=True)
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
