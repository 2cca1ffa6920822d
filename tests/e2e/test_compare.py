"""/compare in a real browser against a real `rnnscope serve` on tiny models: from the main view's link to
side-by-side panels coloured as the main view colours them, a candidate click, reload and back, "use as
anchor", the panels read together on hover and with the arrows, the probe mode, every bad setting inline,
and a busy server's 503 shown in place.

The set-up (server, Debian's chromium through Playwright) is tests/e2e/conftest.py's.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import write_tiny_model
from tests.e2e.conftest import ARTIFACTS, HTMX_ABORTS, PAGE_OPTIONS, STATUS_422, new_page, query, wait_for_query
from tests.share.server import post_json, running_server

pytestmark = pytest.mark.e2e

TEXT = 'She said, "I shall go." He said nothing.\nThen: "Why?" she asked. "No," he said.'
PANELS = "#cmp-result .cmp-panel"
STATUS_503 = "Failed to load resource: the server responded with a status of 503"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """Five tiny models: one more than a comparison may hold."""
    models = tmp_path_factory.mktemp("e2e-compare-models")
    write_tiny_model(models / "tiny-lstm", "lstm", seed=3)
    write_tiny_model(models / "tiny-gru", "gru", seed=4, hidden=12)
    write_tiny_model(models / "tiny-rnn", "rnn", seed=5, layers=1, hidden=10)
    write_tiny_model(models / "tiny-lstm-b", "lstm", seed=6, layers=1, hidden=8)
    write_tiny_model(models / "tiny-gru-b", "gru", seed=7, layers=1, hidden=8)
    return models


@pytest.fixture(scope="module")
def page_options() -> dict:
    return {**PAGE_OPTIONS, "viewport": {"width": 1400, "height": 1000}, "expected": (*HTMX_ABORTS, STATUS_422)}


def shown(pg) -> list[str]:
    return pg.eval_on_selector_all(PANELS, "ps => ps.map(p => p.dataset.model + ' ' + p.dataset.shown)")


def colours(pg, selector: str) -> list[str]:
    return pg.eval_on_selector_all(selector, "els => els.map(e => getComputedStyle(e).backgroundColor)")


def wait_shown(pg, n: int, text: str) -> None:
    pg.wait_for_function("([sel, n, t]) => { const ps = document.querySelectorAll(sel); return ps.length === n && "
                         "Array.from(ps).every(p => p.querySelector('.cmp-chars').textContent === t); }",
                         arg=[PANELS, n, text])


def test_from_the_main_view_to_the_models_side_by_side_and_a_candidate_one_click_away(page):
    pg = page
    pg.goto(pg.base + "/?model=tiny-gru&layer=1&state=h&unit=5&mode=neuron&text=" + quote(TEXT))
    pg.wait_for_selector("#chars .ch")
    main_colours = colours(pg, "#chars .ch")
    pg.click("#view .compare-link")
    wait_shown(pg, 4, TEXT)  # the anchor's model and three more (four at most)
    assert pg.url.split("?")[0].endswith("/compare")
    assert {k: v for k, v in query(pg).items()} == {"model": "tiny-gru", "layer": "1", "state": "h", "unit": "5",
                                                    "text": TEXT}
    assert (pg.input_value("#model"), pg.input_value("#layer"), pg.input_value("#state"), pg.input_value("#unit")) == (
        "tiny-gru", "1", "h", "5")
    first = shown(pg)
    assert first[0] == "tiny-gru 1:h:5"
    # the anchor's panel is coloured exactly as the main view was
    assert colours(pg, "#cmp-result .cmp-anchor .cmp-chars > .ch") == main_colours
    api = post_json(pg.base + "/api/v1/match", {"text": TEXT, "anchor": {"model": "tiny-gru", "layer": 1, "state": "h",
                                                                         "unit": 5},
                                                 "models": [s.split()[0] for s in first[1:]]})[1]
    assert first[1:] == [f"{m['model']} {m['units'][0]['layer']}:{m['units'][0]['state']}:{m['units'][0]['unit']}"
                         for m in api["matches"]]

    # a candidate click: that unit colours its panel, the URL says so, reload and back keep it
    second = pg.locator(f"{PANELS}:nth-child(2) .cand").nth(1)
    pick = second.get_attribute("data-pick")
    model = first[1].split()[0]
    second.click()
    pg.wait_for_function("([sel, v]) => document.querySelectorAll(sel)[1].dataset.shown === v", arg=[PANELS, pick])
    wait_for_query(pg, pick=f"{model}:{pick}")
    assert pg.get_attribute(f"{PANELS}:nth-child(2) .cand.current", "data-pick") == pick
    assert "candidate 2 of" in pg.inner_text(f"{PANELS}:nth-child(2) .cmp-rank")
    assert shown(pg)[0] == first[0] and shown(pg)[2:] == first[2:]
    picked = shown(pg)
    pg.reload()
    wait_shown(pg, 4, TEXT)
    assert shown(pg) == picked
    pg.go_back()
    pg.wait_for_function("([sel, v]) => document.querySelectorAll(sel)[1] && "
                         "document.querySelectorAll(sel)[1].dataset.shown === v", arg=[PANELS, first[1].split()[1]])
    assert shown(pg) == first
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "e2e-compare.png"), full_page=True)
    assert pg.problems == [], pg.problems


def test_the_panels_read_together_on_hover_and_with_the_arrows(page):
    pg = page
    pg.goto(pg.base + "/compare?model=tiny-lstm&layer=0&state=h&unit=2&text=" + quote(TEXT))
    wait_shown(pg, 4, TEXT)
    pg.locator(f"{PANELS}:nth-child(3) .cmp-chars > .ch").nth(11).hover()
    linked = pg.eval_on_selector_all(PANELS, "ps => ps.map(p => Array.from(p.querySelectorAll('.cmp-chars > .ch'))"
                                             ".findIndex(s => s.classList.contains('linked')))")
    assert linked == [11, 11, 11, 11]
    readouts = pg.eval_on_selector_all(PANELS, "ps => ps.map(p => [p.querySelector('.cmp-readout').textContent, "
                                               "JSON.parse(p.querySelector('.cmp-chars').dataset.values)[11]])")
    for text, v in readouts:
        assert text == f"‘I’ at 11: {v:+.4f}"
    # keyboard: the text of a panel is one tab stop; the arrows walk every panel at once
    pg.mouse.move(5, 5)
    pg.focus(f"{PANELS}:nth-child(1) .cmp-chars")
    pg.keyboard.press("End")
    pg.keyboard.press("ArrowLeft")
    at = len(TEXT) - 2
    linked = pg.eval_on_selector_all(PANELS, "ps => ps.map(p => Array.from(p.querySelectorAll('.cmp-chars > .ch'))"
                                             ".findIndex(s => s.classList.contains('linked')))")
    assert linked == [at] * 4
    readouts = pg.eval_on_selector_all(PANELS, "ps => ps.map(p => p.querySelector('.cmp-readout').textContent)")
    assert all(r.startswith(f"‘{TEXT[at]}’ at {at}: ") for r in readouts), readouts
    assert pg.problems == [], pg.problems


def test_use_as_anchor_and_the_probe_mode(page):
    pg = page
    pg.goto(pg.base + "/compare?model=tiny-lstm&layer=0&state=h&unit=2&models=tiny-gru&models=tiny-rnn&text="
            + quote(TEXT))
    wait_shown(pg, 3, TEXT)
    gru = shown(pg)[1]
    assert gru.startswith("tiny-gru ")
    pg.click(f"{PANELS}:nth-child(2) .cmp-make-anchor")
    pg.wait_for_function("sel => document.querySelector(sel).dataset.model === 'tiny-gru'", arg=PANELS)
    wait_shown(pg, 3, TEXT)
    layer, state, unit = gru.split()[1].split(":")
    assert shown(pg)[0] == gru
    wait_for_query(pg, model="tiny-gru", layer=layer, state=state, unit=unit)
    assert (pg.input_value("#model"), pg.input_value("#layer"), pg.input_value("#state"), pg.input_value("#unit")) == (
        "tiny-gru", layer, state, unit)
    assert pg.is_disabled('input[name="models"][value="tiny-gru"]') and pg.is_checked('input[name="models"][value="tiny-gru"]')
    assert "(the anchor's)" in pg.inner_text('label:has(input[value="tiny-gru"])')
    assert "(the anchor's)" not in pg.inner_text('label:has(input[value="tiny-lstm"])')
    assert not pg.is_disabled('input[name="models"][value="tiny-lstm"]') and pg.is_checked('input[name="models"][value="tiny-lstm"]')
    assert [s.split()[0] for s in shown(pg)] == ["tiny-gru", "tiny-lstm", "tiny-rnn"]

    # match by a probe: every panel shows its own model's best unit for it
    pg.check('input[name="by"][value="probe"]')
    pg.wait_for_function("sel => document.querySelector(sel) && document.querySelector(sel).classList.contains('cmp-probe')",
                         arg=PANELS)
    wait_for_query(pg, by="probe")
    assert pg.is_visible("#probe") and not pg.is_visible("#unit")
    for s in shown(pg):
        model, unit = s.split()
        best = post_json(pg.base + "/api/v1/probe", {"model": model, "text": TEXT, "probe": "quotes"})[1][0]
        assert unit == f"{best['layer']}:{best['state']}:{best['unit']}"
    assert "quotes probe" in pg.inner_text(".cmp-summary")
    assert pg.problems == [], pg.problems


def test_every_bad_setting_is_a_message_beside_its_control(page):
    pg = page
    pg.goto(pg.base + "/compare?model=tiny-lstm&models=tiny-gru&text=" + quote(TEXT))
    wait_shown(pg, 2, TEXT)
    pg.fill("#unit", "999")
    pg.press("#unit", "Enter")
    pg.locator("#err-unit").wait_for(state="visible")
    assert "unit 999 is out of range" in pg.inner_text("#err-unit")
    assert pg.locator(PANELS).count() == 0 and "Fix the setting marked above" in pg.inner_text("#cmp-result")
    pg.fill("#unit", "3")
    pg.press("#unit", "Enter")
    wait_shown(pg, 2, TEXT)
    assert not pg.locator("#err-unit").is_visible()
    for name in ("tiny-rnn", "tiny-lstm-b", "tiny-gru-b"):  # four ticked besides the anchor: five
        pg.check(f'input[name="models"][value="{name}"]')
    pg.locator("#err-models").wait_for(state="visible")
    assert "compare at most 4 models at once, got 5" in pg.inner_text("#err-models")
    pg.uncheck('input[name="models"][value="tiny-gru-b"]')
    wait_shown(pg, 4, TEXT)
    pg.fill("#text", "")
    pg.locator("#err-text").wait_for(state="visible")
    assert "the text is empty" in pg.inner_text("#err-text")
    pg.fill("#text", "x" * 20_001)
    pg.wait_for_function("() => document.querySelector('#err-text').textContent.includes('the limit is 20,000')")
    pg.fill("#text", TEXT)
    wait_shown(pg, 4, TEXT)
    assert not pg.locator("#err-text").is_visible() and not pg.locator("#err-models").is_visible()
    pg.goto(pg.base + "/compare?models=nope&models=tiny-gru&text=abc")
    assert "unknown model 'nope'" in pg.inner_text("#err-models")
    assert pg.problems == [], pg.problems


def test_a_busy_server_is_shown_in_place(browser, tmp_path_factory):
    """Every model run over a 1 ms limit is stopped: the server answers 503, and the page shows why, in place."""
    models = tmp_path_factory.mktemp("e2e-compare-busy")
    write_tiny_model(models / "tiny-lstm", "lstm", hidden=256, seed=3)
    write_tiny_model(models / "tiny-gru", "gru", hidden=256, seed=4)
    tmp = tmp_path_factory.mktemp("e2e-compare-busy-serve")
    text = TEXT * 20
    with running_server(models, tmp / "data", tmp / "serve.log", RNNSCOPE_TRACE_TIMEOUT="0.001") as base:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        pg = new_page(context, expected=(*HTMX_ABORTS, STATUS_503))
        response = pg.goto(base + "/compare?models=tiny-gru&text=" + quote(text))
        assert response.status == 503
        assert "took longer than the 0.001 s limit" in pg.inner_text("#cmp-result")
        pg.evaluate("document.querySelectorAll('#cmp-result > :not(#cmp-picks)').forEach(e => e.remove())")
        pg.fill("#text", text + " More.")
        pg.wait_for_function("() => document.querySelector('#cmp-result').textContent.includes('took longer than')")
        assert "The models are not coloured: the server is busy." in pg.inner_text("#cmp-result")
        assert pg.inner_text("#net-error") == ""
        assert pg.problems == [], pg.problems
        context.close()


@pytest.mark.parametrize("path, ready, viewport", [
    ("/compare?model=tiny-lstm&layer=1&state=c&unit=3&text=" + quote(TEXT), PANELS, (1400, 900)),
    ("/compare?by=probe&probe=quotes&models=tiny-gru&models=tiny-rnn&text=" + quote(TEXT), PANELS, (1200, 900)),
    ("/compare?unit=999&models=nope&text=" + quote(TEXT), "#err-unit:not(:empty)", (1200, 900)),
    ("/compare?text=" + quote(TEXT), PANELS, (375, 667)),
], ids=["by-unit", "by-probe", "refused", "phone"])
def test_axe_finds_no_serious_or_critical_violation(browser, server, path, ready, viewport):
    from tests.e2e.test_accessibility import AXE, PageCase, blocking, report, run_axe

    if not AXE.is_file():
        pytest.skip(f"{AXE} is missing: `npm ci` copies it from the axe-core devDependency")
    case = PageCase("compare", path, ready, viewport=viewport)
    found = blocking(run_axe(browser, server, "", case, AXE))
    assert not found, report(case, found)
