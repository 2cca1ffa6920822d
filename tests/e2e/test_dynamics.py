"""The dynamics views in Debian's chromium against a real `rnnscope serve`: a seeded generation
streams in coloured and reproduces; the scalar RNN re-draws as w_hh moves; nav links carry the state.

The set-up is tests/e2e/conftest.py's, with a wider tiny-lstm, a longer timeout and 422s expected.
"""

from __future__ import annotations

import json
import re
import urllib.request
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.conftest import write_tiny_model
from tests.e2e.conftest import HTMX_ABORTS, PAGE_OPTIONS, STATUS_422

pytestmark = pytest.mark.e2e

MID = "rgb(247, 247, 247)"  # the colour of 0 on the scale


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    models = tmp_path_factory.mktemp("e2e-dyn-models")
    write_tiny_model(models / "tiny-lstm", "lstm", seed=3, hidden=24)
    write_tiny_model(models / "tiny-gru", "gru", seed=4, hidden=12)
    return models


@pytest.fixture(scope="module")
def page_options():
    # the 422s come with the block that says what to fix
    return {**PAGE_OPTIONS, "timeout": 30_000, "expected": (*HTMX_ABORTS, STATUS_422)}


def stream_text(base: str, params: dict) -> str:
    """The same run read straight from the API's event stream."""
    with urllib.request.urlopen(base + "/api/v1/generate/stream?" + urlencode(params), timeout=60) as r:
        body = r.read().decode()
    events = [dict(line.split(": ", 1) for line in block.split("\n")) for block in body.strip().split("\n\n")]
    return "".join(json.loads(e["data"])["ch"] for e in events if e["event"] == "char")


def generated(pg) -> list[dict]:
    return pg.eval_on_selector_all("#gen-out .ch.gen", """els => els.map(e => ({
        ch: e.textContent, v: e.style.getPropertyValue('--v'), bg: getComputedStyle(e).backgroundColor}))""")


def test_seeded_generation_streams_in_coloured_and_reproduces(page):
    pg = page
    params = {"model": "tiny-lstm", "text": 'She said, "', "n": "60", "temperature": "1.0", "seed": "11",
              "layer": "1", "state": "h", "unit": "2"}
    pg.goto(pg.base + "/generate")  # the form first, as a user arrives
    pg.fill("#text", params["text"])
    pg.select_option("#layer", "1")
    pg.fill("#unit", "2")
    pg.fill("#n", "60")
    pg.fill("#temperature", "1.0")
    pg.fill("#seed", "11")
    pg.click("#gen-go")
    pg.wait_for_function("() => document.querySelector('#gen-out') && document.querySelector('#gen-out').dataset.done")
    assert {k: v[0] for k, v in parse_qs(urlsplit(pg.url).query).items()} == params
    chars = generated(pg)
    assert len(chars) == 60
    assert all(c["v"] != "" for c in chars)  # every character got its value as it arrived
    assert any(c["bg"] != MID for c in chars) and len({c["bg"] for c in chars}) > 5  # coloured, not uniform
    text = "".join(c["ch"] for c in chars)
    assert "done: 60 characters" in pg.inner_text("#gen-status") and "seed 11" in pg.inner_text("#gen-status")
    assert stream_text(pg.base, params) == text  # the page shows exactly the API's run
    pg.reload()
    pg.wait_for_function("() => document.querySelector('#gen-out').dataset.done")
    assert "".join(c["ch"] for c in generated(pg)) == text  # a fixed seed reproduces
    assert pg.problems == []


def test_an_unseeded_run_offers_a_link_that_reproduces_it(page):
    pg = page
    pg.goto(pg.base + "/generate?" + urlencode({"model": "tiny-gru", "text": "Hello", "n": "30", "temperature": "1.2"}))
    pg.wait_for_function("() => document.querySelector('#gen-out').dataset.done")
    first = "".join(c["ch"] for c in generated(pg))
    with pg.expect_navigation():
        pg.click("#gen-status a")
    pg.wait_for_function("() => document.querySelector('#gen-out') && document.querySelector('#gen-out').dataset.done")
    assert "seed=" in pg.url
    assert "".join(c["ch"] for c in generated(pg)) == first
    assert pg.problems == []


def test_scalar_rnn_redraws_as_w_hh_moves(page):
    pg = page
    pg.goto(pg.base + "/toy")
    assert "vanishes" in pg.inner_text(".toy-summary")
    pg.fill("#xs", " ".join(["0"] * 10))
    pg.fill("#b", "0")
    pg.fill("#w_xh", "0")
    pg.wait_for_function("() => new URLSearchParams(location.search).get('xs') === '0 0 0 0 0 0 0 0 0 0'")
    pg.wait_for_function("() => document.querySelector('.toy-summary').textContent.includes('explodes')")
    assert "∂h_10/∂h_1 = 1.97e+04" in pg.inner_text(".toy-summary")  # 3^9
    # Drag the slider to 0.5: the gradient now vanishes (0.5^9), and the URL follows.
    pg.eval_on_selector("#w_hh-slider", "el => { el.value = '0.5'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    pg.wait_for_function("() => new URLSearchParams(location.search).get('w_hh') === '0.5'")
    pg.wait_for_function("() => document.querySelector('.toy-summary').textContent.includes('0.00195')")
    assert pg.input_value("#w_hh") == "0.5"
    assert "vanishes" in pg.inner_text(".toy-summary")
    pg.fill("#xs", "0 0 zwei")  # a bad input: said beside the control
    pg.wait_for_function("() => document.querySelector('#err-xs').textContent.includes('is not a number')")
    assert pg.problems == []


def test_nav_from_the_main_view_carries_the_unit_and_text(page):
    pg = page
    pg.goto(pg.base + "/?" + urlencode({"model": "tiny-gru", "layer": "1", "state": "z", "unit": "4", "text": "Hi there"}))
    pg.click("nav >> text=Generate")
    pg.wait_for_selector("#dyn-form")
    assert {k: v[0] for k, v in parse_qs(urlsplit(pg.url).query).items()} == {
        "model": "tiny-gru", "layer": "1", "state": "z", "unit": "4", "text": "Hi there"}
    assert pg.input_value("#unit") == "4" and pg.input_value("#state") == "z"
    pg.click("nav >> text=Scalar RNN")
    pg.wait_for_selector(".toy-summary")
    pg.click("a.brand")
    pg.wait_for_selector("#chars")
    assert "unit=4" in pg.url and "model=tiny-gru" in pg.url
    assert pg.problems == []


def test_an_unbounded_state_widens_its_scale_as_the_generated_values_outgrow_the_prime(page):
    pg = page
    url = pg.base + "/generate?" + urlencode({"model": "tiny-lstm", "text": "a", "n": "300", "temperature": "1.0",
                                              "seed": "2", "layer": "1", "state": "c", "unit": "5"})
    with urllib.request.urlopen(url, timeout=30) as r:  # the scale the server set from the one-character prime
        start_hi = float(re.findall(r'<span class="sw" style="--v:[^"]*">([^<]*)</span>', r.read().decode())[-1])
    pg.goto(url)
    legend_end = "els => els[els.length - 1].textContent"
    pg.wait_for_function("() => document.querySelector('#gen-out').dataset.done")
    spans = pg.eval_on_selector_all("#gen-out .ch[data-v]", """els => els.map(e => [Number(e.dataset.v),
        Number(e.style.getPropertyValue('--v'))])""")
    hi = float(pg.eval_on_selector_all("#gen-legend .sw", legend_end))
    values = sorted(abs(v) for v, _ in spans)
    p95 = values[int(0.95 * (len(values) - 1))]
    assert hi > start_hi and hi >= p95 * 0.99  # it widened, and covers 95% of what was shown
    for v, pos in spans:  # every character, prime included, on the final scale
        assert pos == pytest.approx(max(-1.0, min(1.0, v / hi)), abs=2e-3)
    assert pg.problems == []
