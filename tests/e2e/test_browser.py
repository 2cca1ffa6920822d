"""The main view in a real browser: type, pick a unit, hover, reload, back and forward, bad input,
model switch, the API docs.

The set-up (a real `rnnscope serve`, Debian's chromium through Playwright, skipped with the reason where
either is missing) is tests/e2e/conftest.py's.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import ARTIFACTS, query, wait_for_query

pytestmark = pytest.mark.e2e

TEXT = 'She said, "I shall go." He said nothing.\nThen: "Why?"'


def colours(pg) -> list[str]:
    return pg.eval_on_selector_all("#chars .ch", "els => els.map(e => getComputedStyle(e).backgroundColor)")


def wait_for_text(pg, text: str) -> None:
    pg.wait_for_function("t => { const c = document.querySelector('#chars'); return c && c.textContent === t; }", arg=text)


def wait_for_heading(pg, fragment: str) -> None:
    pg.wait_for_function("f => document.querySelector('#view h2').textContent.includes(f)", arg=fragment)


def test_type_pick_a_neuron_hover_and_reload(page):
    pg = page
    pg.goto(pg.base + "/")
    assert pg.locator("#chars .ch").count() > 50  # the default example is coloured on first load
    pg.fill("#text", TEXT)  # typing: re-rendered after the debounce, no page load
    wait_for_text(pg, TEXT)
    marker = pg.evaluate("window.__marker = 1")  # survives only if the page never reloads
    first = colours(pg)
    assert len(first) == len(TEXT) and len(set(first)) > 5
    assert query(pg)["text"] == TEXT

    # pick layer 0 / h, then step the unit with the number input and with `j`
    pg.select_option("#layer", "0")
    pg.select_option("#state", "h")
    wait_for_heading(pg, "layer 0 · h ·")
    pg.fill("#unit", "5")
    pg.press("#unit", "Enter")
    wait_for_heading(pg, "layer 0 · h · unit 5")
    unit5 = colours(pg)
    pg.click("h2")  # focus off the controls, so j/k reach the page
    pg.keyboard.press("j")
    wait_for_heading(pg, "layer 0 · h · unit 6")
    assert pg.input_value("#unit") == "6" and pg.input_value("#unit-slider") == "6"
    unit6 = colours(pg)
    assert unit5 != unit6 and len(set(unit6)) > 5
    assert "re-coloured from cache" in pg.text_content(".stats")
    assert pg.evaluate("window.__marker") == marker == 1
    wait_for_query(pg, unit="6")
    assert query(pg) == {"model": "tiny-lstm", "layer": "0", "state": "h", "unit": "6", "mode": "neuron", "text": TEXT}

    # hover: value, surprisal, five guesses with probabilities
    quote = TEXT.index('"')
    pg.locator("#chars .ch").nth(quote).hover()
    tip = pg.locator("#tip")
    tip.wait_for(state="visible")
    body = tip.inner_text()
    assert f"at position {quote}" in body and "h[0][6]" in body and "bits" in body
    assert pg.locator("#tip .pred").count() == 5 and body.count("%") == 5

    # keyboard: the text is one tab stop, arrows walk it and show the same tooltip
    pg.locator("#chars .ch").nth(0).click()  # a plain click focuses that character
    pg.keyboard.press("ArrowRight")
    assert re.search(r"at position 1\b", tip.inner_text())

    ARTIFACTS.mkdir(exist_ok=True)
    pg.locator("#chars .ch").nth(quote).hover()
    pg.screenshot(path=str(ARTIFACTS / "e2e-page.png"), full_page=True)

    # the pushed URL reproduces the view on reload
    before = colours(pg)
    pg.reload()
    wait_for_text(pg, TEXT)
    assert pg.input_value("#text") == TEXT
    assert (pg.input_value("#model"), pg.input_value("#layer"), pg.input_value("#state"), pg.input_value("#unit")) == (
        "tiny-lstm", "0", "h", "6")
    assert colours(pg) == before
    assert pg.problems == [], pg.problems


def test_back_and_forward_restore_views(page):
    pg = page
    pg.goto(pg.base + "/?model=tiny-lstm&layer=1&state=c&unit=2&mode=neuron&text=" + "a%20%22b%22%20c")
    wait_for_heading(pg, "unit 2")
    entries = pg.evaluate("history.length")
    pg.fill("#text", 'a "b" c d')  # typing replaces the current entry rather than adding one per pause
    wait_for_text(pg, 'a "b" c d')
    assert pg.evaluate("history.length") == entries and query(pg)["text"] == 'a "b" c d'
    unit2 = colours(pg)
    pg.fill("#unit", "9")
    pg.press("#unit", "Enter")
    wait_for_heading(pg, "unit 9")
    assert pg.evaluate("history.length") == entries + 1
    pg.go_back()
    wait_for_heading(pg, "unit 2")
    assert pg.input_value("#unit") == "2" and pg.input_value("#text") == 'a "b" c d' and colours(pg) == unit2
    pg.go_forward()
    wait_for_heading(pg, "unit 9")
    assert pg.input_value("#unit") == "9"
    assert pg.problems == [], pg.problems


def test_bad_input_shows_inline_and_keeps_the_view(page):
    pg = page
    pg.goto(pg.base + "/?text=abc")
    wait_for_text(pg, "abc")
    kept = colours(pg)
    pg.fill("#unit", "999")
    pg.press("#unit", "Enter")
    err = pg.locator("#err-unit")
    err.wait_for(state="visible")
    assert "unit 999 is out of range: this model has units 0..15" in err.inner_text()
    assert colours(pg) == kept and "unit=999" not in pg.url
    pg.fill("#text", "")
    pg.locator("#err-text").wait_for(state="visible")
    assert "the text is empty" in pg.inner_text("#err-text")
    pg.fill("#unit", "1")
    pg.fill("#text", "abcd")
    wait_for_text(pg, "abcd")
    assert not pg.locator("#err-unit").is_visible() and not pg.locator("#err-text").is_visible()
    pg.fill("#unit-slider", "4")  # the slider drives the same setting
    wait_for_heading(pg, "unit 4")
    wait_for_query(pg, unit="4")
    assert pg.input_value("#unit") == "4"


def test_model_switch_surprisal_mode_and_escaping(page):
    pg = page
    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>"~'
    pg.goto(pg.base + "/")
    pg.fill("#text", evil)
    wait_for_text(pg, evil)
    assert pg.evaluate("window.__pwned") is None
    assert pg.locator("#chars img, #chars script").count() == 0
    assert "unk" in pg.locator("#chars .ch").last.get_attribute("class")  # "~" was never seen: marked, not dropped
    pg.select_option("#model", "tiny-gru")
    pg.wait_for_function("() => location.search.includes('model=tiny-gru')")
    states = pg.eval_on_selector_all("#state option", "os => os.map(o => o.value)")
    assert states == ["h", "r", "z", "n"] and pg.get_attribute("#unit", "max") == "11"
    assert query(pg)["model"] == "tiny-gru"
    pg.check("input[name=mode][value=surprisal]")
    wait_for_heading(pg, "surprisal")
    assert len(set(colours(pg))) > 3
    assert pg.evaluate("window.__pwned") is None
    assert pg.problems == [], pg.problems


def test_api_docs_render_under_the_strict_csp(page):
    pg = page
    pg.goto(pg.base + "/docs")
    pg.wait_for_selector(".opblock")
    paths = pg.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent.trim())")
    assert {"/api/v1/models", "/api/v1/trace", "/healthz"} <= set(paths)
    assert pg.problems == [], pg.problems
