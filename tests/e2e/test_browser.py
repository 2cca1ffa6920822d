"""A real `rnnscope serve` process on a free port, driven by Debian's chromium through Playwright.

Skipped (with the reason) where /usr/bin/chromium or Playwright is missing; CI installs both.
Never runs `playwright install`: the system chromium is the browser.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import write_tiny_model

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
TEXT = 'She said, "I shall go." He said nothing.\nThen: "Why?"'

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("e2e-models")
    write_tiny_model(models / "tiny-lstm", "lstm", seed=3)
    write_tiny_model(models / "tiny-gru", "gru", seed=4, hidden=12)
    port = _free_port()
    exe = shutil.which("rnnscope", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "app.cli"]
    env = {**os.environ, "RNNSCOPE_MODELS_DIR": str(models), "RNNSCOPE_DEFAULT_MODEL": "tiny-lstm",
           "RNNSCOPE_TORCH_THREADS": "1"}
    log = (tmp_path_factory.mktemp("e2e-log") / "serve.log").open("w+")
    proc = subprocess.Popen([*cmd, "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.seek(0)
            pytest.fail("rnnscope serve did not come up:\n" + log.read())
        time.sleep(0.2)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    problems: list[str] = []
    # hx-sync="this:replace" aborts stale requests, and htmx reports each abort on the console: expected.
    expected = ("htmx:sendAbort", "htmx:afterRequest")
    pg.on("console", lambda m: problems.append(f"{m.type}: {m.text}")
          if m.type == "error" and not m.text.startswith(expected) else None)
    pg.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    pg.problems = problems  # type: ignore[attr-defined]
    pg.base = server  # type: ignore[attr-defined]
    yield pg
    context.close()


def colours(pg) -> list[str]:
    return pg.eval_on_selector_all("#chars .ch", "els => els.map(e => getComputedStyle(e).backgroundColor)")


def wait_for_text(pg, text: str) -> None:
    pg.wait_for_function("t => { const c = document.querySelector('#chars'); return c && c.textContent === t; }", arg=text)


def wait_for_heading(pg, fragment: str) -> None:
    pg.wait_for_function("f => document.querySelector('#view h2').textContent.includes(f)", arg=fragment)


def query(pg) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(pg.url).query, keep_blank_values=True).items()}


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
    pg.focus("#chars")
    pg.keyboard.press("ArrowRight")
    assert "at position 1" in tip.inner_text()

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
    assert pg.input_value("#unit") == "4" and query(pg)["unit"] == "4"


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
