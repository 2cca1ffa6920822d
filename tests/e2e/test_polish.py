"""Issue #21's polish, in a real browser: one h1 on every page, keyboard hints only where the keys work, a long
field error that leaves its select alone, and the coloured text on a phone's first screen."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.e2e.conftest import ARTIFACTS, new_page
from tests.e2e.test_accessibility import open_path, share_id  # the same pages, opened the same way

pytestmark = pytest.mark.e2e

TEXT = ('It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in '
        'want of a wife. "However little known," she said, "his feelings may be."')
Q = quote(TEXT)
PAGES = {
    "main": (f"/?text={Q}", "#chars .ch"),
    "main-refused": (f"/?text={Q}&unit=999", "#err-unit:not(:empty)"),
    "neuron": ("/neuron/tiny-lstm/1/c/3", "main h2"),
    "neuron-missing": ("/neuron/tiny-lstm/9/c/3", "main h2"),
    "generate": (f"/generate?text={Q}&n=10", "#gen-out"),
    "gradients": (f"/gradients?text={Q}", "#dyn-result:not(:has(.loading))"),
    "toy": ("/toy", "#dyn-result"),
    "saturation": ("/saturation", "#dyn-result:not(:has(.loading))"),
    "intervene": (f"/intervene?text={Q}&layer=1&state=c&unit=3&value=1&start=5", "#dyn-result:not(:has(.loading))"),
    "docs": ("/docs", ".opblock"),
    "not-found": ("/no/such/page", "main"),
    "share": ("/s/{sid}", "#chars .ch"),
    "share-missing": ("/s/aaaaaaaaaaaa", "main"),
    "export": (f"/export.html?text={Q}", ".chars span"),
}


@pytest.fixture(scope="module")
def sid(server) -> str:
    return share_id(server, TEXT)


def open_page(pg, server: str, sid: str, name: str) -> None:
    path, ready = PAGES[name]
    open_path(pg, server, path.replace("{sid}", sid), ready)


def headings(pg) -> list[str]:
    return pg.eval_on_selector_all("h1", "els => els.map(e => e.textContent.trim())")


# ---- one h1 on every page ---------------------------------------------------------------
REFUSED = {"main-refused": 422, "neuron-missing": 404, "not-found": 404, "share-missing": 404}


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_has_exactly_one_h1(page, sid, name):
    open_page(page, page.base, sid, name)
    h1 = headings(page)
    assert len(h1) == 1 and h1[0], f"{name}: h1s {h1}"
    expected = f"error: Failed to load resource: the server responded with a status of {REFUSED.get(name)}"
    assert [p for p in page.problems if not p.startswith(expected)] == [], page.problems  # the page's own status


def test_the_main_page_keeps_one_h1_through_swaps_and_repaints(page):
    pg = page
    pg.goto(pg.base + f"/?text={Q}")
    pg.wait_for_selector("#chars .ch")
    first = headings(pg)
    pg.fill("#unit", "5")
    pg.press("#unit", "Enter")
    pg.wait_for_function("() => document.querySelector('#view h2').textContent.includes('unit 5')")
    pg.fill("#text", "another text")
    pg.wait_for_function("() => document.querySelector('#chars').textContent === 'another text'")
    assert headings(pg) == first and len(first) == 1
    assert "colour each character" in first[0]
    assert pg.problems == [], pg.problems


def test_pages_with_a_visible_h1_get_no_second_one(page, sid):
    """The dynamics pages and the missing pages show their own h1; the screen-reader one is not added."""
    for name, visible in [("generate", "Generate"), ("intervene", "Interventions"), ("not-found", "There is no page here"),
                          ("share-missing", "This shared view does not exist")]:
        open_page(page, page.base, sid, name)
        assert headings(page) == [visible], name
        assert page.locator("h1").first.is_visible(), name


# ---- keyboard hints ---------------------------------------------------------------------
def footer(pg) -> str:
    return " ".join(pg.eval_on_selector_all("footer", "els => els.map(e => e.textContent)")).strip()


def test_keyboard_hints_only_where_the_keys_work(page, sid):
    pg = page
    open_page(pg, pg.base, sid, "main")
    hint = footer(pg)
    assert "j/k step the unit" in " ".join(hint.split()) and "walk the text" in hint
    pg.click("#view h2")  # focus off the controls, so the keys reach the page
    pg.keyboard.press("j")
    pg.wait_for_function("() => document.querySelector('#view h2').textContent.includes('unit 1')")  # j works…
    # element.focus() as Tab does it (Playwright's page.focus re-focuses #chars after the page moved focus on)
    pg.evaluate("document.querySelector('#chars').focus()")
    pg.keyboard.press("ArrowRight")
    at = "Array.prototype.indexOf.call(document.querySelector('#chars').children, document.activeElement)"
    assert pg.evaluate(at) == 1  # …and so do the arrows

    for name in ("neuron", "generate", "gradients", "toy", "saturation", "not-found", "share-missing", "docs"):
        open_page(pg, pg.base, sid, name)
        assert "step the unit" not in footer(pg) and "walk the text" not in footer(pg), name
        assert pg.locator("footer kbd").count() == 0, name

    open_page(pg, pg.base, sid, "intervene")  # its clamped text has its own keys, and says so
    hint = " ".join(footer(pg).split())
    assert "Enter compares that position below" in hint and "step the unit" not in hint
    pg.evaluate("document.querySelector('.clamp-chars.preds').focus()")
    before = pg.evaluate("document.activeElement.dataset.t")
    pg.keyboard.press("ArrowRight")
    assert pg.evaluate("document.activeElement.dataset.t") == str(int(before) + 1)
    not_found = "error: Failed to load resource: the server responded with a status of 404"  # the 404 pages'
    assert [p for p in pg.problems if not p.startswith(not_found)] == [], pg.problems


def test_the_shared_view_keeps_the_main_views_hints(page, sid):
    open_page(page, page.base, sid, "share")
    assert "step the unit" in footer(page)


# ---- a long error beside a select ---------------------------------------------------------
@pytest.mark.parametrize("path, select", [
    (f"/?text={Q}&layer=9", "#layer"),
    (f"/?text={Q}&state=" + "q" * 40, "#state"),
    (f"/?text={Q}&model=" + "m" * 300, "#model"),
    ("/saturation?model=" + "y" * 200, "#sat-model"),
    (f"/generate?text={Q}&state=" + "q" * 40, "#state"),
])
def test_a_long_field_error_does_not_stretch_its_select(page, path, select):
    pg = page
    clean = path.split("&")[0] if "?text=" in path else path.split("?")[0]
    pg.goto(pg.base + clean)
    pg.wait_for_selector(select)
    width = pg.eval_on_selector(select, "e => e.getBoundingClientRect().width")
    pg.goto(pg.base + path)
    err = pg.locator(".err:not(:empty)").first
    err.wait_for()
    assert len(err.text_content()) > 50  # a long message…
    after = pg.eval_on_selector(select, "e => e.getBoundingClientRect().width")
    assert abs(after - width) <= 1, f"{select}: {width:.0f}px -> {after:.0f}px with the error shown"  # …same select
    box = err.bounding_box()
    assert box["x"] + box["width"] <= 1200  # and the message wraps inside the page, even one long word


# ---- the phone layout ------------------------------------------------------------------------
@pytest.fixture()
def phone(browser, server):
    context = browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
    pg = new_page(context)
    pg.base = server  # type: ignore[attr-defined]
    yield pg
    context.close()


def first_screen(pg) -> dict:
    return pg.evaluate("""() => {
      const chars = document.querySelector('#chars').getBoundingClientRect();
      const first = document.querySelector('#chars .ch').getBoundingClientRect();
      const pick = document.querySelector('.pickers').getBoundingClientRect();
      const text = document.querySelector('#text').getBoundingClientRect();
      return {chars: chars.top, first: first.bottom, pickers: pick.top, text: text.top, inner: innerHeight,
              scrollY: scrollY, width: document.documentElement.scrollWidth};
    }""")


@pytest.mark.parametrize("name", ["main", "share"])
def test_on_a_phone_the_coloured_text_is_on_the_first_screen(phone, sid, name):
    pg = phone
    open_page(pg, pg.base, sid, name)
    s = first_screen(pg)
    assert s["scrollY"] == 0 and s["width"] <= 375  # nothing wider than the phone
    assert s["first"] < s["inner"] - 10, s  # the first coloured line is on screen without scrolling
    assert s["text"] < s["chars"] < s["pickers"], s  # the text box, its colours, then the other settings
    # the boxes moved, not the document: the tab order still runs text -> model picker -> ... -> the view
    order = pg.evaluate("""() => {
      const all = Array.from(document.querySelectorAll('#text, #model, #chars'));
      return all.map(e => e.id);
    }""")
    assert order == ["text", "model", "chars"]
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"e2e-phone-{name}.png"))
    assert pg.problems == [], pg.problems


def test_on_a_phone_a_refused_setting_keeps_the_settings_above_the_note(phone):
    pg = phone
    pg.goto(pg.base + f"/?text={Q}&unit=999")
    pg.wait_for_selector("#err-unit:not(:empty)")
    note = pg.eval_on_selector("#view .placeholder", "e => e.getBoundingClientRect().top")
    pickers = pg.eval_on_selector(".pickers", "e => e.getBoundingClientRect().top")
    assert pickers < note  # "Fix the setting marked above" stays true


def test_the_desktop_layout_is_unchanged(page):
    pg = page
    pg.goto(pg.base + f"/?text={Q}")
    pg.wait_for_selector("#chars .ch")
    s = first_screen(pg)
    assert s["text"] < s["pickers"] < s["chars"]  # settings first, then the view, as before
