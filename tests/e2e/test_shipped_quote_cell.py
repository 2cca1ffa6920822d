"""In a real browser, on the shipped austen-lstm, the card's quote cell colours quoted text apart.

A real `rnnscope serve` with the committed models; the browser is tests/e2e/conftest.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.share.server import running_server

pytestmark = pytest.mark.e2e

MODELS = Path(__file__).resolve().parents[2] / "models" / "zoo"
TEXT = ('"I cannot think what you mean," said Elizabeth, turning away.\n'
        'Her aunt smiled and said nothing for some time; then, "You will see him tomorrow," she replied, '
        '"and you may ask him yourself."\n')

if not (MODELS / "austen-lstm" / "model.safetensors").is_file():
    pytest.skip("the shipped austen-lstm checkpoint is not in this checkout", allow_module_level=True)


def inside_quotes(text: str) -> list[bool]:
    """After reading character t: is a double quote open? (each " toggles, as the probe labels it)"""
    open_, out = False, []
    for ch in text:
        if ch == '"':
            open_ = not open_
        out.append(open_)
    return out


def test_the_quote_cell_colours_quoted_and_unquoted_text_apart(browser, tmp_path):
    with running_server(MODELS, tmp_path / "data", tmp_path / "serve.log", RNNSCOPE_DEFAULT_MODEL="austen-lstm") as base:
        pg = browser.new_page(viewport={"width": 1200, "height": 700})
        pg.set_default_timeout(30_000)
        pg.goto(base + "/")  # opens on the card's quote cell
        heading = pg.text_content("#view h2")
        pg.fill("#text", TEXT)
        pg.wait_for_function("t => document.querySelector('#chars').textContent === t", arg=TEXT)
        assert pg.text_content("#view h2") == heading
        values = pg.eval_on_selector_all("#chars .ch", "els => els.map(e => Number(Array.from(e.classList).find(c => /^q[0-9]+$/.test(c)).slice(1)) / 50 - 1)")
        bg = pg.eval_on_selector_all("#chars .ch", "els => els.map(e => getComputedStyle(e).backgroundColor)")
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "e2e-quote-cell.png"), full_page=True)
        # another unit, then the card's "inside quotes" shortcut brings the quote cell back, text kept
        pg.fill("#unit", "7")
        pg.press("#unit", "Enter")
        pg.wait_for_function("h => document.querySelector('#view h2').textContent !== h", arg=heading)
        pg.click("#view .known-unit >> text=inside quotes")
        pg.wait_for_function("h => document.querySelector('#view h2').textContent === h", arg=heading)
        assert pg.input_value("#text") == TEXT
        assert pg.locator("#view .known-unit.current").count() == 1
        pg.close()
    labels = inside_quotes(TEXT)
    assert len(values) == len(TEXT)
    inside = [v for v, q in zip(values, labels) if q]
    outside = [v for v, q in zip(values, labels) if not q]
    # nearly every (inside, outside) pair is ordered: the colour separates the two
    ordered = sum(a > b for a in inside for b in outside) / (len(inside) * len(outside))
    sign = 1 if ordered >= 0.5 else -1
    assert max(ordered, 1 - ordered) >= 0.95, ordered
    # and the page shows it: the colours inside and outside quotes are different sets of colours
    inside_bg = {c for c, q in zip(bg, labels) if q}
    outside_bg = {c for c, q in zip(bg, labels) if not q}
    assert len(inside_bg & outside_bg) <= 0.1 * len(inside_bg | outside_bg), (sign, inside_bg & outside_bg)
