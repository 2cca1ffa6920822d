"""A unit change repaints the spans on screen (POST /ui/paint) instead of swapping the view: the same
span elements, the colours a fresh page would render, focus and tooltip kept, the URL and history kept
up to date, bad input shown in place; the swap path (a new text, or repaint switched off) keeps focus too.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

from tests.e2e.conftest import query, wait_for_query

pytestmark = pytest.mark.e2e

TEXT = 'She said, "I shall go." He said nothing.\nThen: "Why?" and "Because," she said.'
START = "/?model=tiny-lstm&layer=0&state=h&unit=5&mode=neuron&text=" + re.sub(r"[^A-Za-z]", lambda m: f"%{ord(m.group()):02X}", TEXT)


def painted(pg, key: str) -> None:
    pg.wait_for_selector(f'#view[data-painted="{key}"]')


def classes(pg, kind: str) -> list[str]:
    """Each character's colour level ("q…", kind "q") or compare bar ("u…"/"o…" or "", kind "bar") on screen."""
    pattern = r"^q\d+$" if kind == "q" else r"^[uo]\d+$"
    return pg.eval_on_selector_all("#chars > .ch", "(els, p) => els.map(e => Array.from(e.classList).find(c => new RegExp(p).test(c)) || '')",
                                   pattern)


def rendered_classes(pg, url: str, kind: str) -> list[str]:
    """The same, as a fresh page at `url` renders it on the server, read from its HTML."""
    html = pg.evaluate("u => fetch(u).then(r => r.text())", url)
    out = []
    for cls in re.findall(r'<span class="(ch [^"]*)"', html):
        found = [c for c in cls.split() if re.fullmatch(r"q\d+" if kind == "q" else r"[uo]\d+", c)]
        out.append(found[0] if found else "")
    return out


def focused_index(pg) -> int:
    return pg.evaluate("() => { const a = document.activeElement; return a && a.parentElement && a.parentElement.id === 'chars'"
                       " ? Array.prototype.indexOf.call(a.parentElement.children, a) : -1; }")


def test_j_repaints_the_same_spans_with_the_colours_a_fresh_page_renders(page):
    pg = page
    pg.goto(pg.base + START)
    painted(pg, "0:h:5")
    pg.evaluate("window.__spans = Array.from(document.querySelectorAll('#chars > .ch'))")
    fetched: list[str] = []
    pg.on("request", lambda r: fetched.append(f"{r.method} {r.url}"))

    # walk into the text and along it, then step the unit with j
    pg.locator("#chars .ch").nth(1).click()  # a plain click focuses that character
    for _ in range(2):
        pg.keyboard.press("ArrowRight")
    assert focused_index(pg) == 3
    tip_before = pg.text_content("#tip")
    pg.keyboard.press("j")
    painted(pg, "0:h:6")

    assert pg.evaluate("window.__spans.every((s, i) => document.querySelectorAll('#chars > .ch')[i] === s)")
    assert [f for f in fetched if "/ui/paint" in f] and not [f for f in fetched if f.startswith("GET ") and "/?" in f]
    assert focused_index(pg) == 3 and pg.is_visible("#tip")
    tip_after = pg.text_content("#tip")
    assert "h[0][6]" in tip_after and tip_after != tip_before  # the tooltip shows the new unit's value
    assert classes(pg, "q") == rendered_classes(pg, pg.url, "q")
    assert pg.text_content("#view h2").strip() == "layer 0 · h · unit 6"
    assert pg.title().startswith("tiny-lstm · layer 0 · h · unit 6")
    wait_for_query(pg, unit="6")
    assert pg.input_value("#unit") == "6"

    # a state whose scale comes from the text (c): the repaint uses that scale too
    pg.select_option("#state", "c")
    painted(pg, "0:c:6")
    assert classes(pg, "q") == rendered_classes(pg, pg.url, "q")
    assert pg.evaluate("window.__spans[0] === document.querySelector('#chars > .ch')")
    assert not pg.problems, pg.problems


def test_compare_unit_repaints_the_underline_and_the_downloads_carry_it(page):
    pg = page
    pg.goto(pg.base + START)
    painted(pg, "0:h:5")
    pg.check("#compare")
    pg.fill("#unit2", "2")
    pg.press("#unit2", "Enter")
    # checking the box repaints with the default second unit (6) first: wait for unit 2's bars and URL
    pg.wait_for_function("() => (document.querySelector('.legend2') || {}).textContent?.includes('unit 2')")
    wait_for_query(pg, unit2="2", layer2="0")
    assert classes(pg, "bar") == rendered_classes(pg, pg.url, "bar")
    assert any(classes(pg, "bar"))
    for fmt in ("html", "csv", "json"):
        href = pg.get_attribute(f'.share-exports a[href^="/export.{fmt}"]', "href")
        assert "unit2=2" in href and "layer2=0" in href, href
    csv = pg.evaluate("u => fetch(u).then(r => r.text())", pg.get_attribute('.share-exports a[href^="/export.csv"]', "href"))
    assert csv.splitlines()[0].endswith("compare_value")

    pg.uncheck("#compare")
    pg.wait_for_function("() => !document.querySelector('.legend2')")
    assert not any(classes(pg, "bar"))  # no bar left on any character
    assert not pg.problems, pg.problems


def test_bad_or_empty_unit_is_said_in_place_and_the_colours_stay(page, page_options):
    pg = page
    pg.goto(pg.base + START)
    painted(pg, "0:h:5")
    before = classes(pg, "q")
    pg.fill("#unit", "")
    pg.press("#unit", "Enter")
    pg.wait_for_function("() => document.querySelector('#err-unit').textContent.includes('empty')")
    assert "0–" in pg.text_content("#err-unit")
    assert pg.get_attribute("#view", "data-painted") == "0:h:5" and classes(pg, "q") == before
    pg.fill("#unit", "999")
    pg.press("#unit", "Enter")
    pg.wait_for_function("() => /between|0–|range|unit/.test(document.querySelector('#err-unit').textContent) &&"
                         " !document.querySelector('#err-unit').textContent.includes('empty')")
    assert pg.get_attribute("#view", "data-painted") == "0:h:5"
    pg.fill("#unit", "7")
    pg.press("#unit", "Enter")
    painted(pg, "0:h:7")
    assert pg.text_content("#err-unit") == ""  # the message goes once the unit is good again


def test_back_and_forward_walk_the_repainted_units(page):
    pg = page
    pg.goto(pg.base + START)
    painted(pg, "0:h:5")
    for unit in ("6", "7"):
        pg.fill("#unit", unit)
        pg.press("#unit", "Enter")
        painted(pg, f"0:h:{unit}")
        wait_for_query(pg, unit=unit)  # the entry exists before going back
    pg.go_back()
    painted(pg, "0:h:6")
    assert pg.input_value("#unit") == "6" and query(pg)["unit"] == "6"
    pg.go_back()
    painted(pg, "0:h:5")
    pg.go_forward()
    painted(pg, "0:h:6")
    assert classes(pg, "q") == rendered_classes(pg, pg.url, "q")


def test_a_new_text_swaps_and_the_swap_path_keeps_focus(page):
    pg = page
    pg.goto(pg.base + START)
    painted(pg, "0:h:5")
    pg.fill("#text", TEXT + " More.")
    pg.wait_for_function("t => document.querySelector('#chars').textContent === t", arg=TEXT + " More.")
    painted(pg, "0:h:5")

    pg.evaluate("document.documentElement.dataset.repaint = 'off'")  # every change swaps the view
    pg.evaluate("window.__first = document.querySelector('#chars > .ch')")
    pg.locator("#chars .ch").nth(1).click()
    for _ in range(3):
        pg.keyboard.press("ArrowRight")
    pg.keyboard.press("j")
    painted(pg, "0:h:6")
    assert pg.evaluate("window.__first !== document.querySelector('#chars > .ch')")  # swapped, not repainted
    pg.wait_for_function("() => document.activeElement && document.activeElement.classList.contains('ch')")
    assert focused_index(pg) == 4 and pg.is_visible("#tip")


def test_a_long_text_is_recoloured_where_it_is_seen_first_and_then_everywhere(page):
    pg = page
    text = (TEXT + "\n") * 90  # about 7,500 characters: more than two slices of static/app.js's SLICE
    pg.goto(pg.base + "/?" + urlencode({"model": "tiny-lstm", "layer": 0, "state": "h", "unit": 5, "mode": "neuron",
                                        "text": text}))
    painted(pg, "0:h:5")
    pg.click("#view h2")
    pg.keyboard.press("j")
    painted(pg, "0:h:6")
    wait_for_query(pg, unit="6")
    expected = rendered_classes(pg, pg.url, "q")
    assert len(expected) == len(text)
    pg.wait_for_function("exp => Array.from(document.querySelectorAll('#chars > .ch')).every((e, i) => e.classList.contains(exp[i]))",
                         arg=expected)
