"""The neuron page of the shipped austen-lstm's quote cell, in a real browser (issue #21 item 8): every
context is coloured by the unit, taken from its own passage of the held-out text, wide enough to show the
opening quote that set the cell off, and the quantile samples print their values.

A real `rnnscope serve` over models/zoo (tests/e2e/conftest.py's browser and page).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import ARTIFACTS, PAGE_OPTIONS, ZOO, query

pytestmark = pytest.mark.e2e

NEURON = "/neuron/austen-lstm/1/c/336"  # the card's quote unit (models/zoo/austen-lstm/config.json)
NOTE = re.compile(r"^([+-]\d+\.\d{3}) · (?:position ([\d,]+)|(\d+)th percentile) · open$")

if not (ZOO / "austen-lstm" / "atlas.json").is_file():
    pytest.skip("the shipped austen-lstm checkpoint or its atlas is not in this checkout", allow_module_level=True)


@pytest.fixture(scope="module")
def server(shipped_server):
    return shipped_server


@pytest.fixture(scope="module")
def page_options():
    # the page traces the atlas's 20,000 characters the first time it shows a (layer, state): seconds on 2 cores
    return {**PAGE_OPTIONS, "viewport": {"width": 1280, "height": 1000}, "timeout": 90_000}


def contexts(pg, list_id: str) -> list[dict]:
    """Each context of a list: its characters, their --v, which one is outlined, its note."""
    return pg.eval_on_selector_all(f"#{list_id} .ctx-list > li", """lis => lis.map(li => ({
        text: li.querySelector('.ctx-text').textContent,
        chars: Array.from(li.querySelectorAll('.ctx-text .ch')).map(c => c.textContent),
        v: Array.from(li.querySelectorAll('.ctx-text .ch')).map(c => c.style.getPropertyValue('--v')),
        bg: Array.from(li.querySelectorAll('.ctx-text .ch')).map(c => getComputedStyle(c).backgroundColor),
        active: Array.from(li.querySelectorAll('.ctx-text .ch.active')).map(c => c.title),
        gap: li.querySelector('.ctx-gap') ? li.querySelector('.ctx-gap').title : '',
        note: li.querySelector('.note').textContent.trim().replace(/\\s+/g, ' '),
    }))""")


def paragraph_of(text: str, position: int) -> int:
    """Blank-line-separated paragraphs, counted independently of the app's own split."""
    return len(re.findall(r"\n[ \t]*\n", text[: position + 1]))


def test_the_quote_cells_contexts_are_coloured_distinct_and_show_the_opening_quote(page):
    pg = page
    atlas = json.loads((ZOO / "austen-lstm" / "atlas.json").read_text(encoding="utf-8"))
    text = atlas["text"]
    pg.goto(pg.base + NEURON)
    pg.wait_for_selector("#ctx-top .ctx-list li")
    assert pg.locator(".legend .sw").count() == 11  # the contexts' colour scale

    top = contexts(pg, "ctx-top")
    assert len(top) == 8
    positions, values = [], []
    for c in top:
        # one span per character, each coloured by the unit
        assert c["chars"] and len(c["v"]) == len(c["chars"]) and all(re.fullmatch(r"-?\d\.\d{3}", v) for v in c["v"])
        assert len(set(c["bg"])) > 3, c["bg"]  # not one flat colour: the colour follows the value
        assert len(c["active"]) == 1 and "the character just read" in c["active"][0]  # the one just read, outlined
        m = NOTE.match(c["note"])
        assert m and m.group(2), c["note"]
        value, position = float(m.group(1)), int(m.group(2).replace(",", ""))
        assert c["active"][0].startswith(f"{value:+.3f}")
        positions.append(position)
        values.append(value)
        # the cause is on screen: the opening quote the cell has held since
        assert '"' in c["text"], c["text"]
        opening = text.rfind('"', 0, position + 1)
        assert opening >= 0 and text[opening] in c["text"]
    assert values == sorted(values, reverse=True) and values[0] > 10  # c[336] peaks near +10.9 in long quotations
    # each from its own passage, and no two showing the same characters
    assert len({paragraph_of(text, p) for p in positions}) == len(positions)
    # and wide: at least 100 characters around the one just read where the text allows
    assert all(len(c["chars"]) >= 100 for c in top)
    long_runs = [c for c in top if c["gap"]]
    assert long_runs and all(re.fullmatch(r"[\d,]+ characters left out", c["gap"]) for c in long_runs)

    bottom = contexts(pg, "ctx-bottom")
    assert len(bottom) == 8 and all(len(set(c["bg"])) > 3 for c in bottom)
    low = [float(NOTE.match(c["note"]).group(1)) for c in bottom]
    assert low == sorted(low) and low[0] < -10

    # the quantile samples print their values, rising with the quantile
    qs = contexts(pg, "ctx-quantiles")
    notes = [NOTE.match(c["note"]) for c in qs]
    assert all(notes) and [int(m.group(3)) for m in notes] == [10, 30, 50, 70, 90]
    q_values = [float(m.group(1)) for m in notes]
    assert q_values == sorted(q_values) and q_values[0] < 0 < q_values[-1]
    assert all(len(set(c["bg"])) >= 1 and c["v"] for c in qs)

    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "e2e-neuron-quote-cell.png"), full_page=True)

    # a context opens in the main view on this unit, with the text from its lead-in on
    pg.locator("#ctx-top .ctx-open").first.click()
    pg.wait_for_selector("#chars .ch")
    q = query(pg)
    assert (q["layer"], q["state"], q["unit"]) == ("1", "c", "336") and q["text"].lstrip().startswith(top[0]["text"][:10])
    assert pg.problems == [], pg.problems


def test_the_next_unit_is_served_from_the_same_trace(page):
    """Stepping to a neighbour re-uses the traced atlas text: the page comes back fast."""
    pg = page
    pg.goto(pg.base + NEURON)  # traced by the test above (module server), or now
    pg.wait_for_selector("#ctx-top .ctx-list li")
    pg.click("a[rel=next]")
    pg.wait_for_selector("#ctx-top .ctx-list li")
    assert pg.url.endswith("/neuron/austen-lstm/1/c/337")
    timing = pg.evaluate("performance.getEntriesByType('navigation')[0].responseEnd - "
                         "performance.getEntriesByType('navigation')[0].requestStart")
    assert timing < 3000, timing
    assert pg.problems == [], pg.problems
