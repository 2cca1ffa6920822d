"""Find units in a real browser: rank by the quotes probe, click the top row, select a span with the
mouse and with shift+arrows, compare with a second unit, open a neuron page.

The set-up is tests/e2e/conftest.py's, with tiny-lstm alone (and its atlas), a larger page and 422s expected.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_tiny_model
from tests.app.probe.test_pages import expected_groups
from tests.e2e.conftest import ARTIFACTS, HTMX_ABORTS, PAGE_OPTIONS, STATUS_422, query

pytestmark = pytest.mark.e2e

TEXT = 'She said, "I shall go." He said nothing.\nThen: "Why?" she asked (twice).'
HELD_OUT = ('"Come here," said she. "What is it?" He did not answer (not at once).\n'
            "They walked on [slowly] for a while; the road was long and dry.\n") * 4


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """tiny-lstm alone, with an atlas built on HELD_OUT."""
    from models.atlas import build_atlas, save_atlas
    from models.checkpoint import load_checkpoint

    models = tmp_path_factory.mktemp("e2e-probe-models")
    write_tiny_model(models / "tiny-lstm", "lstm", seed=3)
    save_atlas(models / "tiny-lstm", build_atlas(load_checkpoint(models / "tiny-lstm"), HELD_OUT, top=5))
    return models


@pytest.fixture(scope="module")
def page_options():
    # hx-sync aborts of superseded requests; the 422s that carry inline messages (asserted on the page)
    return {**PAGE_OPTIONS, "viewport": {"width": 1280, "height": 1000}, "expected": (*HTMX_ABORTS, STATUS_422)}


def api(pg, path: str, body: dict):
    r = pg.request.post(pg.base + path, data=json.dumps(body), headers={"content-type": "application/json"})
    assert r.ok, r.text()
    return r.json()


UNIT_ROWS = "#probe-results tbody.unit-group tr.pick-row"  # one per unit; its other states are behind its ▸


def rows(pg) -> list[list[str]]:
    return pg.eval_on_selector_all(UNIT_ROWS, "rs => rs.map(r => [r.dataset.layer, r.dataset.state, r.dataset.unit])")


def grouped(flat: list[dict], n: int = 20) -> list[list[str]]:
    """The panel's rows for a flat API ranking (top 200), as rows() reads them: the app tests' expected_groups."""
    return [[str(layer), state, str(unit)] for layer, unit, state in expected_groups(flat, n)]


def wait_summary(pg, fragment: str) -> None:
    pg.wait_for_function("f => { const s = document.querySelector('#probe-results .probe-summary');"
                         " return s && s.textContent.includes(f); }", arg=fragment)


def drag_select(pg, first: int, last: int) -> None:
    """Mouse-select characters first..last (inclusive) of the view."""
    a = pg.locator("#chars .ch").nth(first).bounding_box()
    b = pg.locator("#chars .ch").nth(last).bounding_box()
    pg.mouse.move(a["x"] + 1, a["y"] + a["height"] / 2)
    pg.mouse.down()
    pg.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=5)
    pg.mouse.move(b["x"] + b["width"] - 1, b["y"] + b["height"] / 2)
    pg.mouse.up()


def test_rank_by_probe_pick_a_row_then_rank_a_selected_span(page):
    pg = page
    from urllib.parse import quote
    pg.goto(pg.base + "/?model=tiny-lstm&layer=0&state=h&unit=0&mode=neuron&text=" + quote(TEXT))
    pg.wait_for_selector("#chars .ch")

    # 1. quotes probe: the panel lists the same units as the API, best first
    pg.select_option("#probe", "quotes")
    pg.click("#probe-form button[type=submit]")
    wait_summary(pg, "quotes:")
    expected = api(pg, "/api/v1/probe", {"model": "tiny-lstm", "text": TEXT, "probe": "quotes", "top": 200})
    assert rows(pg) == grouped(expected)
    layer, state, unit = rows(pg)[0]

    # 2. one click on the top row: the main view shows that unit, and the URL says so
    pg.locator(UNIT_ROWS).first.locator("td").nth(5).click()
    pg.wait_for_function("f => document.querySelector('#view h2').textContent === f",
                         arg=f"layer {layer} · {state} · unit {unit}")
    pg.wait_for_function("u => new URLSearchParams(location.search).get('unit') === u", arg=unit)
    q = query(pg)
    assert (q["layer"], q["state"], q["unit"], q["text"]) == (layer, state, unit, TEXT)
    assert (pg.input_value("#layer"), pg.input_value("#state"), pg.input_value("#unit")) == (layer, state, unit)
    assert "current" in pg.locator(UNIT_ROWS).first.get_attribute("class")
    assert pg.get_attribute("#view .neuron-link", "href") == f"/neuron/tiny-lstm/{layer}/{state}/{unit}"

    # 3. mouse-select the first quotation: the panel ranks units by that span
    start, end = TEXT.index('"'), TEXT.index('."') + 2
    drag_select(pg, start, end - 1)
    wait_summary(pg, f"span {start}–{end}")
    assert pg.locator("#chars .ch.sel").count() == end - start
    assert pg.is_checked("#probe-form input[name=source][value=selection]")
    span = api(pg, "/api/v1/span", {"model": "tiny-lstm", "text": TEXT, "start": start, "end": end, "threshold": 0.3,
                                    "top": 200})
    assert rows(pg) == grouped(span)

    # 4. the threshold re-ranks
    pg.fill("#threshold", "0.6")
    wait_summary(pg, "on above 0.6")
    assert pg.inner_text("#threshold-out") == "0.60"
    assert pg.inner_text("#threshold-meaning") == "60% of the way from white to orange"
    span6 = api(pg, "/api/v1/span", {"model": "tiny-lstm", "text": TEXT, "start": start, "end": end, "threshold": 0.6,
                                     "top": 200})
    assert rows(pg) == grouped(span6)

    # 5. keyboard: focus a character, shift+arrows extend the span from it
    pg.locator("#chars .ch").nth(1).click()  # a plain click focuses that character
    pg.keyboard.press("ArrowRight")
    pg.keyboard.press("ArrowRight")
    assert pg.evaluate("document.activeElement.textContent") == TEXT[3]
    pg.keyboard.press("Shift+ArrowRight")
    pg.keyboard.press("Shift+ArrowRight")
    wait_summary(pg, "span 3–6")
    assert pg.locator("#chars .ch.sel").count() == 3
    assert "characters 3–6 (3)" in pg.inner_text("#span-info")

    # 6. the span outline survives re-colouring by another unit
    pg.locator(UNIT_ROWS).nth(1).locator("td").first.click()
    second = rows(pg)[1]
    pg.wait_for_function("f => document.querySelector('#view h2').textContent === f",
                         arg=f"layer {second[0]} · {second[1]} · unit {second[2]}")
    # the outline is repainted after htmx settles the swap (probe.js, htmx:afterSettle), a moment after the
    # heading changed: wait for it (the page timeout fails the test if it never comes back)
    pg.wait_for_function("() => document.querySelectorAll('#chars .ch.sel').length === 3")
    assert pg.locator("#chars .ch.sel").count() == 3

    # 7. an empty selection source and a bad regex say so inline
    pg.click("#span-clear")
    pg.click("#probe-form button[type=submit]")
    pg.wait_for_selector("#probe-results .err")
    assert "no span is selected" in pg.inner_text("#probe-results .err")
    pg.check("#probe-form input[name=source][value=probe]")
    pg.select_option("#probe", "regex")
    pg.fill("#pattern", "([")
    pg.wait_for_function("() => (document.querySelector('#probe-results .err') || {}).textContent?.includes('invalid regular expression')")
    assert pg.problems == [], pg.problems


def test_compare_with_a_second_unit_and_open_the_neuron_page(page):
    pg = page
    from urllib.parse import quote
    pg.goto(pg.base + "/?model=tiny-lstm&layer=1&state=c&unit=3&mode=neuron&text=" + quote(TEXT))
    pg.wait_for_selector("#chars .ch")
    assert pg.is_disabled("#unit2")
    pg.check("#compare")
    pg.wait_for_function("() => new URLSearchParams(location.search).get('unit2') === '4'")
    pg.wait_for_selector(".legend2")
    ws = pg.eval_on_selector_all("#chars .ch", "els => els.map(e => Array.from(e.classList).filter(c => /^[uo][0-9]+$/.test(c)).join(''))")
    assert len(ws) == len(TEXT) and len(set(ws)) > 5
    shadows = pg.eval_on_selector_all("#chars .ch", "els => els.map(e => getComputedStyle(e).boxShadow)")
    assert len(set(shadows)) > 5  # the outline's thickness follows the second unit
    pg.select_option("#layer2", "0")
    pg.select_option("#state2", "h")
    pg.wait_for_function("() => location.search.includes('layer2=0') && location.search.includes('state2=h')")
    assert "layer 0 · h · unit 4" in pg.inner_text(".legend2")
    pg.locator("#chars .ch").nth(5).hover()
    assert "h[0][4] (underline)" in pg.inner_text("#tip")

    # a fresh load of the pushed URL shows the same outline
    before = pg.eval_on_selector_all("#chars .ch", "els => els.map(e => Array.from(e.classList).filter(c => /^[uo][0-9]+$/.test(c)).join(''))")
    pg.reload()
    pg.wait_for_selector(".legend2")
    assert pg.eval_on_selector_all("#chars .ch", "els => els.map(e => Array.from(e.classList).filter(c => /^[uo][0-9]+$/.test(c)).join(''))") == before
    assert pg.is_checked("#compare") and not pg.is_disabled("#unit2")

    pg.click("#probe-form button[type=submit]")
    wait_summary(pg, "quotes:")
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "e2e-find-units.png"), full_page=True)

    # switching it off removes the outline and the URL fields
    pg.uncheck("#compare")
    pg.wait_for_function("() => !location.search.includes('unit2')")
    assert pg.locator(".legend2").count() == 0

    # the neuron page, from the view's header
    pg.click("#view .neuron-link")
    pg.wait_for_selector("svg rect.bar")
    assert pg.locator("svg rect.bar").count() == 24
    assert pg.locator(".ctx-list li").count() > 5
    pg.screenshot(path=str(ARTIFACTS / "e2e-neuron.png"), full_page=True)
    pg.click("a.to-main")
    pg.wait_for_selector("#chars .ch")
    assert query(pg)["unit"] == "3" and query(pg)["layer"] == "1"
    assert pg.problems == [], pg.problems
