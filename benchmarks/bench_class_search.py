#!/usr/bin/env python
"""The demo's class search at 21K+ names, side by side with 150 (run by hand; issue 13, item 4):

    bash scripts/install_browser.sh                      # Debian's Chromium + the playwright driver, once
    .venv/bin/python benchmarks/bench_class_search.py    # [--queries "golden retriever" "hot beverage"]

Two small random models whose vocabularies are real names: ADE20K-150, and every emoji plus every
ImageNet-21K class (what `--extra_classes imagenet-21k` trains on the built-in benchmark). Each one's demo
page opens in headless Chromium; the class dropdown is typed into one key at a time, and each keystroke is
timed from the key press until the dropdown lists the matches of the text typed so far. Also timed: the page
load, and the server's "closest known names" answer for a misspelt typed name (the textbox route), over the
same two vocabularies. Target: each keystroke answers within 100 ms at 21K+ names.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

# True once the box holds `query` and the dropdown lists its matches: the first and last options shown
# contain it (none shown: no class matches).
MATCHES_SHOWN = """
query => {
    const box = document.querySelector('#classes input');
    if (!box || box.value !== query) return false;
    const options = document.querySelectorAll('[role=option]');
    if (options.length === 0) return true;
    const q = query.toLowerCase();
    return options[0].textContent.toLowerCase().includes(q)
        && options[options.length - 1].textContent.toLowerCase().includes(q);
}
"""


def vocabularies() -> dict[str, list[str]]:
    from larvseg_hf.data.emoji_scenes import available_emoji
    from larvseg_hf.known_vocabularies import known_vocabulary
    from larvseg_hf.vocabulary import UnionVocabulary

    large = UnionVocabulary(["background", *(e.name for e in available_emoji())])
    large.add_names(known_vocabulary("imagenet-21k").class_names)
    return {
        "ade20k-150": list(known_vocabulary("ade20k-150").class_names),
        "emoji + imagenet-21k": large.names,
    }


def time_typing(browser, url: str, queries: list[str]) -> tuple[float, list[float], dict[str, int]]:
    """(page load seconds, one latency per keystroke, options listed once each query is typed)."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(60_000)
    start = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    box = page.get_by_role("combobox", name="These classes")
    box.wait_for(state="visible")
    load = time.perf_counter() - start
    latencies, shown = [], {}
    for query in queries:
        box.click()
        box.fill("")
        for length in range(1, len(query) + 1):
            start = time.perf_counter()
            page.keyboard.type(query[length - 1])
            page.wait_for_function(MATCHES_SHOWN, arg=query[:length], polling="raf")
            latencies.append(time.perf_counter() - start)
        shown[query] = page.locator("[role=option]").count()
        page.keyboard.press("Escape")
    page.close()
    return load, latencies, shown


def time_closest(names: list[str], typo: str, repeats: int = 5) -> float:
    from larvseg_hf.vocabulary import closest_names

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        closest_names(typo, names)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", nargs="+", default=["table lamp", "person", "coffee table"])
    parser.add_argument("--typo", default="cofee tabel")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"no {CHROMIUM}: run `bash scripts/install_browser.sh` first")
    from playwright.sync_api import sync_playwright
    from test_demo import load_app, make_tiny_model

    app = load_app()
    work = Path(tempfile.mkdtemp(prefix="larvseg_search_"))
    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        for label, names in vocabularies().items():
            model_dir = make_tiny_model(work / label.replace(" ", "_"), names, fill_bank=False)
            blocks = app.build_demo(model_dir)
            blocks.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
            try:
                load, latencies, shown = time_typing(browser, blocks.local_url, args.queries)
            finally:
                blocks.close()
            results[label] = {
                "names": len(names),
                "load": load,
                "median": statistics.median(latencies),
                "max": max(latencies),
                "keys": len(latencies),
                "closest": time_closest(names, args.typo),
                "shown": shown,
            }
        browser.close()
    print(
        f"Class search in the demo's dropdown, headless Chromium; queries {args.queries}, one key at a time\n"
    )
    for label, r in results.items():
        print(
            f"  {label:22s} {r['names']:6d} names: page load {r['load']:5.2f} s; per keystroke median "
            f"{1000 * r['median']:6.1f} ms, max {1000 * r['max']:6.1f} ms ({r['keys']} keys); "
            f"closest names to {args.typo!r}: {1000 * r['closest']:6.1f} ms"
        )
        print(f"  {'':22s} options listed once typed: {r['shown']}")
    small, large = results.values()
    print(
        f"\n  21K / 150: keystroke median {large['median'] / small['median']:.2f}x, max "
        f"{large['max'] / small['max']:.2f}x, page load {large['load'] / small['load']:.2f}x, closest names "
        f"{large['closest'] / small['closest']:.0f}x"
    )
    print("  (target: every keystroke within 100 ms at 21K+ names)")


if __name__ == "__main__":
    main()
