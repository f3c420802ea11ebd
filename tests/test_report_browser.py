"""The report in a real browser: headless Chromium (the system's) driven by Playwright.

CI installs chromium (.ci/run), so there a missing browser is a failure, not a skip.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.test_report import built  # noqa: F401  (the synthetic report, built once)
from tools.report_screenshots import ALL_DRAWN, chromium, open_report, render_seconds

pytestmark = pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install chromium)",
)

# Share of sampled pixels of a figure's canvases that are not (near) white, per figure.
INK = """() => {
  function canvases(root, out) {
    root.querySelectorAll("*").forEach((el) => {
      if (el.tagName === "CANVAS") out.push(el);
      if (el.shadowRoot) canvases(el.shadowRoot, out);
    });
    return out;
  }
  // inside layouts too: a column keeps its figures in its shadow root
  function figures(root, out) {
    root.querySelectorAll("*").forEach((el) => {
      if (el.classList && el.classList.contains("bk-Figure")) out.push(el);
      if (el.shadowRoot) figures(el.shadowRoot, out);
    });
    return out;
  }
  return figures(document, []).map((fig) => {
    let best = 0;
    for (const c of canvases(fig.shadowRoot || fig, [])) {
      if (!c.width || !c.height) continue;
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let ink = 0, n = 0;
      for (let i = 0; i < d.length; i += 4 * 5) {
        n++;
        if (d[i + 3] > 0 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) ink++;
      }
      best = Math.max(best, ink / n);
    }
    return best;
  });
}"""

# Screen position, date and value of the middle point of a line of a chart.
POINT = """([root, name]) => {
  const view = Bokeh.index[root];
  const data = view.model.renderers.find((r) => r.name === name).data_source.data;
  const i = Math.floor(data.date.length / 2);
  const rect = view.el.getBoundingClientRect();
  return [
    rect.x + view.frame.x_scale.compute(data.date[i]),
    rect.y + view.frame.y_scale.compute(data[name][i]),
    new Date(data.date[i]).toISOString().slice(0, 10),
    data[name][i],
  ];
}"""

VISIBLE = """([root, name]) => {
  const model = Bokeh.index[root].model;
  return model.renderers.filter((r) => r.name === name).map((r) => r.visible);
}"""


def _league_values(page, block: str, metric: str) -> list[tuple[str, str]]:
    return page.evaluate(
        """([block, metric]) => Array.from(document.querySelectorAll(
             `#league-table tbody[data-block="${block}"] tr[data-strategy]`)).map((tr) => [
               tr.dataset.strategy,
               tr.querySelector(`td[data-metric="${metric}"]`).dataset.value,
             ])""",
        [block, metric],
    )


def _numbers(rows: list[tuple[str, str]]) -> list[float]:
    return [float(v) for _, v in rows if v not in ("", "nan")]


def test_report_renders_and_responds_in_headless_chromium(built):  # noqa: F811
    assert chromium() is not None, "CI must install chromium (see .ci/run)"
    _, result = built
    html = result.index.read_text()
    roots = re.findall(r'data-root-id="([^"]+)"', html)
    assert len(roots) >= 13
    groups = set(re.findall(r'data-bokeh-group="([^"]+)"', html))
    with open_report(result.index) as page:
        # nothing but the page itself was requested, and nothing complained
        assert page.requests == [result.index.resolve().as_uri()]
        assert page.console_errors == []
        # the first group of charts is drawn at once, the others as they near the screen
        first_drawn = page.evaluate("() => Object.keys(window.gatecastDrawn)")
        assert first_drawn == ["pooled"] and len(groups) > 1
        assert len(page.evaluate("() => Object.keys(Bokeh.index)")) < len(roots)
        page.evaluate("() => gatecastDrawAll()")
        page.wait_for_function(ALL_DRAWN, timeout=60_000)
        # every chart is a root of its group's Bokeh document, rendered, with ink
        assert page.evaluate("() => Bokeh.documents.length") == len(groups)
        count = "() => Bokeh.documents.reduce((n, d) => n + d.roots().length, 0)"
        assert page.evaluate(count) == len(roots)
        assert set(roots) <= set(page.evaluate("() => Object.keys(Bokeh.index)"))
        ink = page.evaluate(INK)
        # a root is a figure or a column of linked figures (the forecast chart with its
        # errors, the trade view with its panels): every figure has ink
        assert len(ink) > len(roots)
        assert min(ink) > 0.01, ink

        # hover on the LSTM's line of the first chart (pooled equity) shows its date and value
        first = page.locator(".bk-Figure").first
        first.scroll_into_view_if_needed()
        x, y, date, value = page.evaluate(POINT, [roots[0], "lstm"])
        page.mouse.move(x, y)
        tooltip = page.locator(".bk-tooltip-content").filter(has_text=date)
        tooltip.first.wait_for(state="visible", timeout=10_000)
        text = tooltip.first.inner_text()
        assert "lstm" in text and f"{value:.3f}" in text, text

        # a click on a legend entry hides that series
        assert page.evaluate(VISIBLE, [roots[0], "lstm"]) == [True]
        first.locator(".bk-item").filter(has_text=re.compile(r"^\s*lstm\s*$")).click()
        page.wait_for_timeout(200)
        assert page.evaluate(VISIBLE, [roots[0], "lstm"]) == [False]

        # a click on a header sorts every block of the league table by it
        before = _league_values(page, "AAA", "sharpe")
        header = page.locator('#league-table thead th[data-metric="sharpe"]')
        header.click()
        after = _league_values(page, "AAA", "sharpe")
        assert sorted(after) == sorted(before)
        assert _numbers(after) == sorted(_numbers(after), reverse=True)
        assert header.get_attribute("aria-sort") == "descending"
        header.click()
        assert _numbers(_league_values(page, "AAA", "sharpe")) == sorted(_numbers(after))
        page.locator('#league-table thead th[data-metric="cagr"]').click()
        cagr = _numbers(_league_values(page, "pooled", "cagr"))
        assert cagr == sorted(cagr, reverse=True) and len(cagr) >= 3

        # the header stays on screen while the table scrolls by under it
        height = page.evaluate(
            """() => { const t = document.querySelector('#league-table');
                       window.scrollTo(0, t.getBoundingClientRect().top + window.scrollY + 200);
                       return t.getBoundingClientRect().height; }"""
        )
        assert height > 400
        rects = page.evaluate(
            """() => ['#league-table', '#league-table thead'].map(
                 (s) => document.querySelector(s).getBoundingClientRect().top)"""
        )
        assert rects[0] < -150 and abs(rects[1]) < 1.5, rects

        # the strategy picker shows the picked strategy's tables and chart series
        picker = page.locator('select.strategy-picker[data-instrument="AAA"]')
        picker.select_option("sma")
        assert page.locator("#strategy-AAA-sma").is_visible()
        assert not page.locator("#strategy-AAA-lstm").is_visible()
        shown = page.evaluate(
            """() => ["lstm", "sma"].map((s) =>
                 Bokeh.documents.map((d) => d.get_model_by_name(`pick:AAA:${s}:trades`))
                   .find(Boolean).visible)"""
        )
        assert shown == [False, True]
        assert page.console_errors == []


def test_strategy_column_stays_on_a_phone(built):  # noqa: F811
    assert chromium() is not None, "CI must install chromium (see .ci/run)"
    _, result = built
    with open_report(result.index, width=390, height=844) as page:
        # no page-wide sideways scroll: a wide table scrolls inside its own box
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        page.locator("#league-table").scroll_into_view_if_needed()
        table = "document.querySelector('#league-table')"
        wide = page.evaluate(f"() => {table}.scrollWidth")
        assert wide > 390  # the table is wider than the phone
        page.evaluate(f"() => {{ {table}.scrollLeft = 600; }}")
        assert page.evaluate(f"() => {table}.scrollLeft") > 100
        assert page.evaluate("() => window.scrollX") == 0
        left = page.evaluate(
            f"""() => document.querySelector('#league-table tbody tr[data-strategy] td.name')
                 .getBoundingClientRect().left - {table}.getBoundingClientRect().left"""
        )
        assert abs(left) < 1.5  # the strategy column stays
        assert page.console_errors == []


@pytest.mark.parametrize("width", [1400, 1000])
def test_no_box_of_a_strategy_section_overlaps_another(built, width):  # noqa: F811
    _, result = built
    with open_report(result.index, width=width, height=900) as page:
        boxes = page.evaluate(
            """() => Array.from(document.querySelectorAll('section.strategy:not([hidden]) .grid2'))
                 .map((grid) => Array.from(grid.children).map((cell) => {
                   const r = cell.getBoundingClientRect();
                   const t = cell.querySelector('table');
                   const clips = getComputedStyle(cell).overflowX !== 'visible';
                   // what shows of the table: up to the cell's edge where the cell clips it
                   const right = t ? t.getBoundingClientRect().right : r.right;
                   return [r.left, r.right, clips ? Math.min(right, r.right) : right];
                 }))"""
        )
        assert boxes
        for (_left0, right0, shown0), (left1, _right1, _shown1) in boxes:
            # the first half, and what shows of its table, ends before the second begins
            assert right0 <= left1 and shown0 <= left1
        assert page.console_errors == []


def test_the_first_charts_are_drawn_soon_after_load(built, capsys):  # noqa: F811
    # measured, not asserted (the machine is shared): docs/benchmarks.md quotes the
    # default report's figures from tools/report_screenshots.py --timing
    _, result = built
    times = sorted(render_seconds(result.index, loads=5))
    with capsys.disabled():
        print(
            f"\nfirst charts drawn after {times[0]:.2f} / {times[2]:.2f} / {times[-1]:.2f} s "
            "(min / median / max of 5 loads, 1400 px)"
        )
    assert all(t > 0 for t in times)
