"""Share in a real browser: click Share, copy the link, open it in a new page, see the same view.

A real `rnnscope serve` with tiny models and its own data folder, driven by Debian's chromium
(tests/e2e/conftest.py); each test opens its own browser context.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.e2e.conftest import ARTIFACTS, HTMX_ABORTS, STATUS_422, new_page

pytestmark = pytest.mark.e2e

TEXT = 'She said, "I shall go." <b>He</b> said nothing.\nThen: "Why?"'


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
    pg = new_page(context)
    problems = pg.problems

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


def panel_state(pg) -> dict:
    return {"probe": pg.input_value("#probe"), "pattern": pg.input_value("#pattern"),
            "pattern_enabled": pg.is_enabled("#pattern")}


def ranked(pg) -> list[list[str]]:
    """Wait for the panel's ranking, then its rows (layer, state, unit)."""
    pg.wait_for_selector("#probe-results tr.pick-row")
    return pg.eval_on_selector_all("#probe-results tr.pick-row",
                                   "rs => rs.map(r => [r.dataset.layer, r.dataset.state, r.dataset.unit])")


def url_param(pg, name: str):
    return pg.evaluate("n => new URLSearchParams(location.search).get(n)", name)


def test_the_probe_and_pattern_are_in_the_url_the_history_and_the_link(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    # the panel answers "regex" before a pattern is typed with a 422 and its inline message; any other
    # refusal is a problem
    pg = new_page(context, expected=(*HTMX_ABORTS, STATUS_422))
    problems = pg.problems
    pg.on("response", lambda r: problems.append(f"{r.status} {r.url}")
          if r.status >= 400 and not (r.status == 422 and "/ui/find-units?" in r.url) else None)
    pg.goto(server + "/?model=tiny-lstm&layer=0&state=h&unit=2&mode=neuron&text=" + quote(TEXT))
    pg.wait_for_selector("#chars .ch")
    assert panel_state(pg) == {"probe": "quotes", "pattern": "", "pattern_enabled": False}
    assert pg.locator("#probe-results tr.pick-row").count() == 0  # no probe in the view: nothing ranked yet
    start = pg.evaluate("history.length")
    # the default probe is no change of view: no history entry, and URLs stay what they were without probes
    pg.select_option("#probe", "quotes")
    pg.fill("#text", TEXT + " ")
    pg.wait_for_function("t => document.querySelector('#chars').textContent === t", arg=TEXT + " ")
    assert pg.evaluate("history.length") == start and url_param(pg, "text") == TEXT + " "
    assert url_param(pg, "probe") is None and url_param(pg, "pattern") is None
    pg.fill("#text", TEXT)
    pg.wait_for_function("t => document.querySelector('#chars').textContent === t", arg=TEXT)

    # a probe change is a history entry; the default probe is not written into the URL
    pg.select_option("#probe", "vowel")
    pg.wait_for_function("() => new URLSearchParams(location.search).get('probe') === 'vowel'")
    assert pg.evaluate("history.length") == start + 1 and url_param(pg, "pattern") is None
    pg.select_option("#probe", "regex")
    pg.fill("#pattern", "[A-Z][a-z]+")
    pg.wait_for_function("() => new URLSearchParams(location.search).get('pattern') === '[A-Z][a-z]+'")
    assert url_param(pg, "probe") == "regex" and pg.evaluate("history.length") == start + 2  # typing: same entry
    rows = ranked(pg)
    # a main-view change keeps the probe in the URL htmx pushes
    pg.fill("#unit", "4")
    pg.press("#unit", "Enter")
    pg.wait_for_function("() => document.querySelector('#view h2').textContent.includes('unit 4')")
    assert (url_param(pg, "unit"), url_param(pg, "probe"), url_param(pg, "pattern")) == ("4", "regex", "[A-Z][a-z]+")

    # reload: the panel opens on the probe, with its pattern, and ranks it
    pg.reload()
    pg.wait_for_selector("#chars .ch")
    assert panel_state(pg) == {"probe": "regex", "pattern": "[A-Z][a-z]+", "pattern_enabled": True}
    assert ranked(pg) == rows

    # the Share link holds it, and opens on it
    pg.click(".share-btn")
    link = pg.locator("#share-url")
    link.wait_for(state="visible")
    url = link.input_value()
    sid = url.rsplit("/", 1)[1]
    stored = pg.request.get(f"{server}/api/v1/share/{sid}").json()["view"]
    assert (stored["probe"], stored["pattern"], stored["unit"]) == ("regex", "[A-Z][a-z]+", "4")
    other = context.new_page()
    other.on("pageerror", lambda e: problems.append(f"pageerror (link): {e}"))
    other.goto(url)
    other.wait_for_selector("#chars .ch")
    assert panel_state(other) == {"probe": "regex", "pattern": "[A-Z][a-z]+", "pattern_enabled": True}
    assert ranked(other) == rows and other.input_value("#unit") == "4"
    # exploring from the link: the URL becomes the view's own, and back returns to the link as shared
    other.fill("#pattern", "[a-z]+")
    other.wait_for_function("() => location.pathname === '/' && "
                            "new URLSearchParams(location.search).get('pattern') === '[a-z]+'")
    assert (url_param(other, "model"), url_param(other, "unit"), url_param(other, "probe")) == ("tiny-lstm", "4", "regex")
    assert url_param(other, "text").replace("\r\n", "\n") == TEXT
    other.go_back()
    other.wait_for_function("p => location.pathname === p", arg=f"/s/{sid}")
    other.wait_for_function("() => document.querySelector('#pattern').value === '[A-Z][a-z]+'")
    other.close()

    # back: the earlier probes come back (htmx loads each entry's URL)
    pg.go_back()
    pg.wait_for_function("() => document.querySelector('#view h2').textContent.includes('unit 2')")
    assert panel_state(pg) == {"probe": "regex", "pattern": "[A-Z][a-z]+", "pattern_enabled": True}
    pg.go_back()
    pg.wait_for_function("() => document.querySelector('#probe').value === 'vowel'")
    assert panel_state(pg) == {"probe": "vowel", "pattern": "", "pattern_enabled": False}
    pg.go_back()
    pg.wait_for_function("() => document.querySelector('#probe').value === 'quotes'")
    assert url_param(pg, "probe") is None

    # a pattern left in the box is not part of a view whose probe is not regex
    pg.select_option("#probe", "regex")
    pg.fill("#pattern", "[a-z]")
    pg.wait_for_function("() => new URLSearchParams(location.search).get('pattern') === '[a-z]'")
    pg.select_option("#probe", "word_start")
    pg.wait_for_function("() => new URLSearchParams(location.search).get('probe') === 'word_start'")
    assert url_param(pg, "pattern") is None
    pg.click(".share-btn")
    pg.locator("#share-url").wait_for(state="visible")
    sid = pg.locator("#share-url").input_value().rsplit("/", 1)[1]
    stored = pg.request.get(f"{server}/api/v1/share/{sid}").json()["view"]
    assert stored["probe"] == "word_start" and "pattern" not in stored
    assert problems == [], problems
    context.close()


def test_the_link_preview_is_a_png_a_browser_decodes_with_words_kept_whole(browser, server):
    """og:image names the PNG card; it loads as a 1200×630 image in the browser, is cached by the server (the
    second fetch is the same bytes), and its SVG twin keeps every word of the text on one line."""
    context = browser.new_context(viewport={"width": 1300, "height": 800})
    pg = new_page(context)
    failed: list[str] = []
    # an image opened on its own makes the browser ask for /favicon.ico (the pages link /static/favicon.svg)
    pg.on("response", lambda r: failed.append(f"{r.status} {r.url}")
          if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    long_text = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must "
                 "be in want of a wife. However little known the feelings or views of such a man may be.")
    made = pg.request.post(f"{server}/api/v1/share", data={"model": "tiny-lstm", "text": long_text, "layer": 1,
                                                           "state": "c", "unit": 3})
    url = made.json()["url"]
    pg.goto(url)
    pg.wait_for_selector("#chars .ch")
    image = pg.get_attribute('meta[property="og:image"]', "content")
    assert image == url + "/preview.png"
    assert pg.get_attribute('meta[property="og:image:type"]', "content") == "image/png"
    assert pg.get_attribute('meta[name="twitter:image"]', "content") == image
    first = pg.request.get(image)
    assert first.status == 200 and first.headers["content-type"] == "image/png"
    assert pg.request.get(image).body() == first.body()
    size = pg.evaluate("""src => new Promise((ok, bad) => {
      const img = new Image();
      img.onload = () => ok([img.naturalWidth, img.naturalHeight]);
      img.onerror = () => bad(new Error('the preview did not decode'));
      img.src = src;
    })""", image)
    assert size == [1200, 630]
    pg.goto(url + "/preview.png")  # opened on its own, as a site unfurling the link would
    assert pg.evaluate("document.images.length === 1 && document.images[0].naturalWidth") == 1200
    # every word of the SVG card sits on one baseline (drawn by the browser's SVG engine)
    pg.goto(url + "/preview.svg")
    rows = pg.evaluate("""() => Array.from(document.querySelectorAll('g text')).map(t => [t.textContent,
                          t.getBoundingClientRect().top])""")
    words = [w for w in long_text.split() if w]
    k = 0
    for w in words:
        glyphs = rows[k:k + len(w)]
        if len(glyphs) < len(w):
            break  # the card's end
        assert "".join(g[0] for g in glyphs) == w
        assert max(g[1] for g in glyphs) - min(g[1] for g in glyphs) < 2, f"{w!r} is split across lines"
        k += len(w)
    assert k > 100
    assert failed == [], failed
    assert [p for p in pg.problems if "status of 404" not in p] == [], pg.problems
    context.close()
