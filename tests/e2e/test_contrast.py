"""Contrast of the coloured text, measured in a real browser from the colours Chromium computes.

Every position on the colour scale (--v from -1 to 1 in steps of 0.001, and both sides of the light-text
switch) gets a character; its text must reach WCAG AA's 4.5:1 against its background and the compare
unit's bar WCAG's 3:1 for non-text contrast. The main view as the server paints it is checked too: every
character it shows and, where the view colours by level classes, every level. app.ui.scale.text_is_light
(terminal, exports, preview card) must pick white exactly where the CSS does.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from app.ui.scale import (COMPARE_LINE, COMPARE_LINE_LIGHT, DARK_TEXT, LIGHT_TEXT, LIGHT_TEXT_FROM, rgb,
                          text_is_light)

pytestmark = pytest.mark.e2e

TEXT_AA = 4.5
NON_TEXT = 3.0
STEPS = [round(-1 + k / 1000, 3) for k in range(2001)]
EDGES = [-LIGHT_TEXT_FROM + d for d in (-1e-4, -1e-6, 0.0, 1e-6, 1e-4)]
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"

# Characters with --v (and --w for the bar), outside the main view's level classes: the CSS scale itself.
SWEEP = """(vs) => {
  const box = document.createElement('div');
  box.className = 'chars';
  document.querySelector('main').append(box);
  const out = [];
  for (const v of vs) {
    for (const w of [1, -1]) {
      const s = document.createElement('span');
      s.className = 'ch';
      s.style.setProperty('--v', String(v));
      s.style.setProperty('--w', String(w));
      s.textContent = 'x';
      box.append(s);
      const cs = getComputedStyle(s);
      out.push({v, w, bg: cs.backgroundColor, fg: cs.color, bar: cs.boxShadow});
    }
  }
  box.remove();
  return out;
}"""

# The main view's characters as they are on screen.
ON_SCREEN = """() => Array.from(document.querySelectorAll('#chars > .ch')).map((s, i) => {
  const cs = getComputedStyle(s);
  return {v: i, w: 0, cls: s.className, bg: cs.backgroundColor, fg: cs.color, bar: cs.boxShadow};
})"""

# Where the main view colours by classes (.levels > .qK, bars .uN / .oN), one character per level and bar class.
LEVELS = """() => {
  const q = new Set(), bars = new Set();
  for (const sheet of document.styleSheets) {
    let rules = [];
    try { rules = sheet.cssRules; } catch (e) { continue; }
    for (const r of rules) {
      const sel = r.selectorText || '';
      for (const m of sel.matchAll(/\\.levels\\s*>\\s*\\.(q\\d+)/g)) q.add(m[1]);
      for (const m of sel.matchAll(/\\.levels\\s*>\\s*\\.([uo]\\d+)/g)) bars.add(m[1]);
    }
  }
  const chars = document.getElementById('chars');
  const out = [];
  for (const k of q) {
    for (const b of bars.size ? bars : ['']) {
      const s = document.createElement('span');
      s.className = ('ch ' + k + ' ' + b).trim();
      s.textContent = 'x';
      chars.append(s);
      const cs = getComputedStyle(s);
      out.push({v: k, w: b, bg: cs.backgroundColor, fg: cs.color, bar: cs.boxShadow});
      s.remove();
    }
  }
  return out;
}"""


def parse_colour(css: str) -> tuple[float, float, float]:
    """'rgb(1, 2, 3)', 'rgba(…)' or 'color(srgb 0.1 0.2 0.3)' -> sRGB in [0, 1]; a fully transparent colour
    or anything else fails the test with the text it could not read."""
    m = re.match(rf"\s*color\(srgb ({NUMBER}) ({NUMBER}) ({NUMBER})(?: / ({NUMBER}))?\)", css)
    if m:
        assert m.group(4) is None or float(m.group(4)) == 1, f"translucent colour {css!r}"
        return float(m.group(1)), float(m.group(2)), float(m.group(3))
    m = re.match(rf"\s*rgba?\(({NUMBER}),? ({NUMBER}),? ({NUMBER})(?:[,/] ?({NUMBER}))?\)", css)
    if m:
        assert m.group(4) is None or float(m.group(4)) == 1, f"translucent colour {css!r}"
        return float(m.group(1)) / 255, float(m.group(2)) / 255, float(m.group(3)) / 255
    raise AssertionError(f"cannot read the colour {css!r}")


def bar_colour(box_shadow: str) -> tuple[float, float, float] | None:
    """The first shadow's colour (both of a character's shadows share it); None without a shadow."""
    if box_shadow in ("", "none"):
        return None
    m = re.match(r"\s*((?:color|rgba?)\([^)]*\))", box_shadow)
    assert m, f"cannot read the bar colour in {box_shadow!r}"
    return parse_colour(m.group(1))


def luminance(c: tuple[float, float, float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour."""
    lin = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def measure(cells: list[dict]) -> list[dict]:
    """Each cell with its text and bar contrast against its own background."""
    out = []
    for c in cells:
        bg, fg, bar = parse_colour(c["bg"]), parse_colour(c["fg"]), bar_colour(c["bar"])
        out.append({**c, "text": contrast(fg, bg), "line": None if bar is None else contrast(bar, bg), "rgb_fg": fg})
    return out


def worst(cells: list[dict], key: str, limit: float) -> list[str]:
    """The cells below `limit`, worst first, written so a failure says where and which colours."""
    bad = sorted((c for c in cells if c[key] is not None and c[key] < limit), key=lambda c: c[key])
    return [f"--v {c['v']} (bar {c['w']}): {key} {c[key]:.2f}:1, text {c['fg']} bar {c['bar']} on {c['bg']}"
            for c in bad[:12]] + ([f"… {len(bad) - 12} more"] if len(bad) > 12 else [])


@pytest.fixture()
def compare_page(page):
    """The main view of a short text with a compare unit on (so every character has a bar)."""
    text = 'She said, "I shall go." Then: "Why?" (a b c) 0123'
    page.goto(page.base + "/?text=" + quote(text) + "&layer=1&state=c&unit=3&layer2=0&state2=h&unit2=5")
    page.wait_for_selector("#chars .ch")
    return page


def test_text_and_compare_bar_contrast_at_every_value(compare_page):
    cells = measure(compare_page.evaluate(SWEEP, STEPS + EDGES))
    assert len(cells) == 2 * (len(STEPS) + len(EDGES))
    assert all(c["line"] is not None for c in cells), "a character with --w ±1 has no bar"
    assert worst(cells, "text", TEXT_AA) == []
    assert worst(cells, "line", NON_TEXT) == []
    # The measured floor, as the CSS comment and app/ui/scale.py state it.
    assert min(c["text"] for c in cells) >= 4.55
    assert min(c["line"] for c in cells) >= 3.3


def test_text_is_light_picks_white_exactly_where_the_css_does(compare_page):
    cells = measure(compare_page.evaluate(SWEEP, STEPS + EDGES))
    wrong = []
    for c in cells:
        white = c["rgb_fg"] == (1.0, 1.0, 1.0)
        black = c["rgb_fg"] == (0.0, 0.0, 0.0)
        assert white or black, f"--v {c['v']}: text {c['fg']} is neither white nor black"
        if white != text_is_light(c["v"]):
            wrong.append(f"--v {c['v']}: CSS {'white' if white else 'black'}, text_is_light {text_is_light(c['v'])}")
    assert wrong == [], wrong[:10]
    assert any(text_is_light(v) for v in STEPS) and not all(text_is_light(v) for v in STEPS)


def test_scale_constants_are_the_colours_the_page_computes(compare_page):
    """DARK_TEXT, LIGHT_TEXT, COMPARE_LINE(_LIGHT) and rgb() (terminal, exports, preview) match the CSS."""
    cells = measure(compare_page.evaluate(SWEEP, [-1.0, -0.5, 0.0, 0.5, 1.0]))
    for c in cells:
        fg = LIGHT_TEXT if text_is_light(c["v"]) else DARK_TEXT
        line = COMPARE_LINE_LIGHT if text_is_light(c["v"]) else COMPARE_LINE
        assert [round(x * 255) for x in c["rgb_fg"]] == list(fg)
        assert [round(x * 255) for x in bar_colour(c["bar"])] == list(line)
        got = [round(x * 255) for x in parse_colour(c["bg"])]
        assert all(abs(a - b) <= 1 for a, b in zip(got, rgb(c["v"]))), (c["v"], got, rgb(c["v"]))  # rounding


def test_the_main_view_as_painted_passes(compare_page):
    """Every character on screen, and every colour level the view can use, with its bar."""
    shown = measure(compare_page.evaluate(ON_SCREEN))
    assert len(shown) > 40
    assert worst(shown, "text", TEXT_AA) == []
    assert worst(shown, "line", NON_TEXT) == []
    levels = measure(compare_page.evaluate(LEVELS))
    assert worst(levels, "text", TEXT_AA) == []
    assert worst(levels, "line", NON_TEXT) == []


def test_contrast_helpers_read_what_chromium_writes():
    assert parse_colour("color(srgb 1 0.5 0)") == (1.0, 0.5, 0.0)
    assert parse_colour("rgb(255, 0, 0)") == (1.0, 0.0, 0.0)
    assert bar_colour("rgb(2, 43, 39) 0px -5px 0px 0px inset, rgb(2, 43, 39) 0px 0px 0px 0px inset") == \
        pytest.approx((2 / 255, 43 / 255, 39 / 255))
    assert bar_colour("none") is None
    assert round(contrast((1, 1, 1), (0, 0, 0)), 2) == 21.0
    # the numbers: white on the old switch (-0.55) was below AA; the old bar on full purple ~1:1
    old_bar = (0x0B / 255, 0x5D / 255, 0x57 / 255)
    purple = tuple(x / 255 for x in rgb(-1.0))
    assert contrast(old_bar, purple) < 1.1
    assert contrast((1, 1, 1), tuple(x / 255 for x in rgb(-0.56))) < TEXT_AA
    with pytest.raises(AssertionError, match="cannot read"):
        parse_colour("hsl(0 0% 0%)")
