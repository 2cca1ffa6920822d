"""Share in a real browser: click Share, copy the link, open it in a new page, see the same view.

A real `rnnscope serve` with tiny models and its own data folder, driven by Debian's chromium.
Skipped (with the reason) where /usr/bin/chromium or Playwright is missing; never `playwright install`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_tiny_model
from tests.share.server import running_server

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
TEXT = 'She said, "I shall go." <b>He</b> said nothing.\nThen: "Why?"'

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("share-e2e-models")
    write_tiny_model(models / "tiny-lstm", "lstm", seed=3)
    write_tiny_model(models / "tiny-gru", "gru", seed=4, hidden=12)
    tmp = tmp_path_factory.mktemp("share-e2e")
    with running_server(models, tmp / "data", tmp / "serve.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def view_state(pg) -> dict:
    return {
        "text": pg.input_value("#text"),
        "model": pg.input_value("#model"),
        "layer": pg.input_value("#layer"),
        "state": pg.input_value("#state"),
        "unit": pg.input_value("#unit"),
        "heading": pg.text_content("#view h2"),
        "chars": pg.eval_on_selector("#chars", "el => el.textContent"),
        "colours": pg.eval_on_selector_all("#chars .ch", "els => els.map(e => getComputedStyle(e).backgroundColor)"),
    }


def test_share_copy_and_open_the_link_in_a_new_page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
    problems: list[str] = []
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.on("console", lambda m: problems.append(f"{m.type}: {m.text}")
          if m.type == "error" and not m.text.startswith(("htmx:sendAbort", "htmx:afterRequest")) else None)
    pg.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))

    pg.goto(server + "/")
    pg.fill("#text", TEXT)
    pg.wait_for_function("t => document.querySelector('#chars').textContent === t", arg=TEXT)
    pg.select_option("#layer", "0")
    pg.select_option("#state", "h")
    pg.wait_for_function("() => document.querySelector('#view h2').textContent.includes('layer 0 · h ·')")
    pg.fill("#unit", "9")
    pg.press("#unit", "Enter")
    pg.wait_for_function("() => document.querySelector('#view h2').textContent.includes('unit 9')")
    before = view_state(pg)

    pg.click(".share-btn")
    link = pg.locator("#share-url")
    link.wait_for(state="visible")
    url = link.input_value()
    assert url.startswith(server + "/s/") and len(url.rsplit("/", 1)[1]) == 12
    pg.click(".share-copy")
    pg.wait_for_function("() => document.querySelector('.share-copied').textContent === 'copied'")
    assert pg.evaluate("navigator.clipboard.readText()") == url
    ARTIFACTS.mkdir(exist_ok=True)
    pg.locator(".share-bar").screenshot(path=str(ARTIFACTS / "e2e-share-partial.png"))

    other = context.new_page()
    other.on("pageerror", lambda e: problems.append(f"pageerror (link): {e}"))
    other.goto(url)
    other.wait_for_selector("#chars .ch")
    after = view_state(other)
    assert after == before
    assert after["unit"] == "9" and after["text"] == TEXT
    assert other.locator(".share-banner").inner_text().startswith("Shared view")
    assert other.locator("#chars b").count() == 0  # the <b> in the text stayed text
    other.screenshot(path=str(ARTIFACTS / "e2e-share-page.png"), full_page=True)

    assert problems == [], problems
    context.close()


def test_share_button_explains_a_refusal_in_place(browser, server):
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.goto(server + "/?model=tiny-gru&text=abc")
    pg.wait_for_selector("#chars .ch")
    # the form now names a model the server does not have (as after a model was removed): 404 from /share
    pg.evaluate("() => { const o = new Option('gone', 'gone', true, true); document.querySelector('#model').add(o); }")
    pg.click(".share-btn")
    err = pg.locator("#share-out .share-err")
    err.wait_for(state="visible")
    assert "Cannot share: unknown model 'gone'" in err.inner_text()
    assert pg.text_content("#net-error") == ""  # handled as an answer, not a network failure
    context.close()
