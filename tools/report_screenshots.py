"""Screenshots of a report for the docs, taken in headless Chromium through Playwright.

``python -m tools.report_screenshots [reports/default/index.html] [--out docs]`` writes
``report-top-<width>.png`` (the top of the page) and ``report-strategy-<width>.png`` (the
first instrument's strategy section) at 1400 and 390 px wide. It drives the system's
Chromium (``chromium`` on the PATH; no browser download) and needs Playwright's Python
package, a development dependency (``pip install -e '.[dev]'``). ``open_report`` is shared
with tests/test_report_browser.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

WIDTHS = (1400, 390)
# The first group of charts is drawn (the page draws the others as they near the screen).
RENDERED = "() => window.gatecastDrawn && Object.keys(window.gatecastDrawn).length > 0"
# Every group drawn: after ``gatecastDrawAll()``, as many drawn as the page has groups.
ALL_DRAWN = """() => window.gatecastDrawn && Object.keys(window.gatecastDrawn).length ===
  new Set(Array.from(document.querySelectorAll("[data-bokeh-group]"))
    .map((el) => el.dataset.bokehGroup)).size"""


def chromium() -> str | None:
    """The system Chromium, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def open_report(index: Path, width: int = 1400, height: int = 900) -> Iterator[Any]:
    """A Playwright page with the report loaded and its Bokeh charts rendered.

    The page records ``page.console_errors`` (console errors and uncaught exceptions) and
    ``page.requests`` (every URL it asked for).
    """
    from playwright.sync_api import sync_playwright

    executable = chromium()
    if executable is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.console_errors, page.requests = errors, requests
            page.goto(index.resolve().as_uri())
            page.wait_for_function(RENDERED, timeout=120_000)
            page.wait_for_timeout(500)
            yield page
        finally:
            browser.close()


def take(index: Path, out: Path) -> list[Path]:
    """The four screenshots of ``index`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for width in WIDTHS:
        with open_report(index, width=width, height=1100 if width > 500 else 844) as page:
            top = out / f"report-top-{width}.png"
            page.screenshot(path=str(top))
            page.evaluate("() => gatecastDrawAll()")
            page.wait_for_function(ALL_DRAWN, timeout=120_000)
            section = page.locator("h3[id$='-strategies']").first
            section.scroll_into_view_if_needed()
            page.evaluate(
                "() => document.querySelector(\"h3[id$='-strategies']\").scrollIntoView()"
            )
            page.wait_for_timeout(500)
            strategy = out / f"report-strategy-{width}.png"
            page.screenshot(path=str(strategy))
            written += [top, strategy]
    return written


def render_seconds(index: Path, loads: int = 5, width: int = 1400) -> list[float]:
    """Seconds from the start of loading ``index`` until its first charts are drawn, once
    per fresh page (``loads`` times), in headless Chromium at ``width`` px."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for _ in range(loads):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(index.resolve().as_uri())
                page.wait_for_function(RENDERED, timeout=120_000)
                drawn = page.evaluate("() => Math.min(...Object.values(window.gatecastDrawn))")
                times.append(drawn / 1000)
                page.close()
        finally:
            browser.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", nargs="?", default="reports/default/index.html")
    parser.add_argument("--out", default="docs")
    parser.add_argument(
        "--timing", action="store_true", help="print min/median/max seconds to the first charts"
    )
    args = parser.parse_args(argv)
    index = Path(args.index)
    if not index.is_file():
        print(f"error: {index} not found: run `make all` first", file=sys.stderr)
        return 1
    if args.timing:
        times = sorted(render_seconds(index))
        print(
            f"first charts drawn after {times[0]:.2f} / {times[len(times) // 2]:.2f} / "
            f"{times[-1]:.2f} s (min / median / max of {len(times)} loads, 1400 px)"
        )
        return 0
    for path in take(index, Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
