"""Find units on the shipped austen-lstm, in a real browser (issue #21 item 6): the quote cell is one row,
shown as its clean c with its speckled h and kept behind the row's ▸; a span over a short quote ranks the
quote cell first; the threshold says what its number means beside the slider.

A real `rnnscope serve` over models/zoo (tests/e2e/conftest.py's browser and page).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.e2e.conftest import ARTIFACTS, HTMX_ABORTS, PAGE_OPTIONS, STATUS_422, ZOO, wait_for_query
from tests.e2e.test_find_units import UNIT_ROWS, drag_select, wait_summary  # the same panel, the same moves

pytestmark = pytest.mark.e2e

QUOTE_UNIT = ("1", "c", "336")  # models/zoo/austen-lstm/config.json card: quote_unit
PARAGRAPH = ("Elizabeth was silent for some minutes. Her aunt, who had watched her closely all the morning, "
             "at last laid down her work and looked at her. \"Why?\" said she, at length; and then, as no answer "
             "came, she took up her work again and said nothing more of the matter until dinner.")

if not (ZOO / "austen-lstm" / "model.safetensors").is_file():
    pytest.skip("the shipped austen-lstm checkpoint is not in this checkout", allow_module_level=True)


@pytest.fixture(scope="module")
def server(shipped_server):
    return shipped_server


@pytest.fixture(scope="module")
def page_options():
    return {**PAGE_OPTIONS, "viewport": {"width": 1280, "height": 1000}, "timeout": 60_000,
            "expected": (*HTMX_ABORTS, STATUS_422)}


def rows(pg) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in pg.eval_on_selector_all(
        UNIT_ROWS, "rs => rs.map(r => [r.dataset.layer, r.dataset.state, r.dataset.unit])")]


def open_view(pg, text: str, state: str = "h", unit: str = "7") -> None:
    pg.goto(pg.base + f"/?model=austen-lstm&layer=1&state={state}&unit={unit}&mode=neuron&text=" + quote(text))
    pg.wait_for_selector("#chars .ch")


def test_the_quote_cell_is_one_row_shown_as_its_clean_c_and_its_other_states_are_one_click_away(page):
    pg = page
    text = '"I cannot think what you mean," said Elizabeth, turning away. "You will see him tomorrow," she replied.\n'
    open_view(pg, text)
    pg.select_option("#probe", "quotes")
    pg.click("#probe-form button[type=submit]")
    wait_summary(pg, "quotes:")
    got = rows(pg)
    assert got[0] == QUOTE_UNIT  # c, not the speckled h that ties with it (AUC 1.0 both)
    assert [r for r in got if (r[0], r[2]) == ("1", "336")] == [QUOTE_UNIT]  # one row for the unit
    api = pg.request.post(pg.base + "/api/v1/probe", data={"model": "austen-lstm", "text": text, "probe": "quotes",
                                                            "top": 20}).json()
    ties = {u["state"]: u for u in api if (u["layer"], u["unit"]) == (1, 336)}
    assert {"h", "c"} <= set(ties) and ties["h"]["score"] == ties["c"]["score"]
    assert ties["c"]["roughness"] < ties["h"]["roughness"] / 5  # what "reads cleanest" measures

    # the other states are behind the row's button, hidden until it is pressed
    first = pg.locator(UNIT_ROWS).first
    more = first.locator("button.more-states")
    assert more.get_attribute("aria-expanded") == "false"
    alts_id = more.get_attribute("aria-controls")
    alt_rows = pg.locator(f"#{alts_id} tr.pick-row")
    assert not alt_rows.first.is_visible()
    assert more.inner_text() == "▸\u00a07"
    more.click()
    assert more.get_attribute("aria-expanded") == "true" and alt_rows.first.is_visible()
    assert more.inner_text() == "▾\u00a07"
    states = alt_rows.evaluate_all("rs => rs.map(r => r.dataset.state)")
    assert {"h", "kept"} <= set(states) and "c" not in states and len(states) == 7
    assert pg.input_value("#state") == "h" and pg.input_value("#unit") == "7"  # opening the list picked nothing

    # one click on an alternative state shows it
    pg.locator(f'#{alts_id} tr.pick-row[data-state="h"] td').nth(5).click()
    pg.wait_for_function("() => document.querySelector('#view').dataset.painted === '1:h:336'")
    wait_for_query(pg, layer="1", state="h", unit="336")
    h_row = pg.locator(f'#{alts_id} tr.pick-row[data-state="h"]')
    assert "current" in h_row.get_attribute("class") and h_row.get_attribute("aria-current") == "true"
    # and the unit's row picks its shown state
    first.locator("td").nth(5).click()
    pg.wait_for_function("() => document.querySelector('#view').dataset.painted === '1:c:336'")
    wait_for_query(pg, layer="1", state="c", unit="336")
    assert pg.problems == [], pg.problems


def test_a_span_over_a_short_quote_ranks_the_quote_cell_first_and_the_threshold_says_its_scale(page):
    pg = page
    open_view(pg, PARAGRAPH)
    pg.check("#probe-form input[name=source][value=selection]")

    # the threshold's scale, beside the slider
    scale = pg.locator("#threshold-scale")
    assert scale.is_visible()
    assert "colour scale" in scale.inner_text() and "−1 purple · 0 white · +1 orange" in scale.inner_text()
    assert "95th percentile" in scale.get_attribute("title")  # what the scale is for c and kept
    assert pg.inner_text("#threshold-meaning") == "30% of the way from white to orange"
    slider, label = pg.locator("#threshold").bounding_box(), scale.bounding_box()
    assert abs(label["y"] - (slider["y"] + slider["height"])) < 60  # right under it, not elsewhere in the panel
    assert pg.get_attribute("#threshold", "aria-describedby") == "threshold-scale"

    start = PARAGRAPH.index('"Why?"')
    drag_select(pg, start, start + len('"Why?"') - 1)
    wait_summary(pg, f"span {start}–{start + 6}")
    assert rows(pg)[0] == QUOTE_UNIT, rows(pg)[:5]
    api = pg.request.post(pg.base + "/api/v1/span", data={"model": "austen-lstm", "text": PARAGRAPH, "start": start,
                                                           "end": start + 6, "threshold": 0.3, "top": 5}).json()
    assert (api[0]["layer"], api[0]["state"], api[0]["unit"], api[0]["score"]) == (1, "c", 336, 1.0)

    # the words follow the slider
    pg.fill("#threshold", "-0.4")
    assert pg.inner_text("#threshold-meaning") == "40% of the way from white to purple"
    wait_summary(pg, "on above -0.4 of each unit's colour scale")
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "e2e-find-units-shipped.png"), full_page=True)
    assert pg.problems == [], pg.problems
