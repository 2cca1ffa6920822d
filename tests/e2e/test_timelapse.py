"""The training-step slider in a real browser against `rnnscope serve` (issue #23 part 2): stepping it
repaints the spans on screen (POST /ui/paint, no swap) with the colours a fresh page at that step renders,
keeps focus on the slider, moves the chart's mark and the sample, updates the tooltip's guesses, puts the
step in the URL (absent for the final weights) and in history; a model change hides or refills it; a bad
step typed in its box is said in place; the page passes axe.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote, urlencode

import pytest

from tests.app.trace.test_snapshots import SNAP, STEPS, snapshot_models
from tests.conftest import write_tiny_model
from tests.e2e.conftest import query, wait_for_query
from tests.e2e.test_accessibility import PageCase, blocking, report, run_axe
from tests.e2e.test_repaint import classes, rendered_classes

pytestmark = pytest.mark.e2e

TEXT = 'He said, "I do not know."\nShe smiled. "Then we shall see," said he.'
START = f"/?model={SNAP}&layer=0&state=h&unit=5&mode=neuron&text={quote(TEXT)}"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """snap-lstm (6 snapshots), plain-gru and tiny-lstm (no snapshots; the server's default model)."""
    models = snapshot_models(tmp_path_factory.mktemp("e2e-timelapse"))
    write_tiny_model(models / "tiny-lstm", "lstm", seed=3)
    return models


def at_step(pg, key: str) -> None:
    pg.wait_for_selector(f'#view[data-snapshot="{key}"]')


def test_stepping_the_slider_repaints_the_same_spans_as_a_fresh_page_at_that_step(page):
    pg = page
    pg.goto(pg.base + START)
    at_step(pg, "final")
    final = classes(pg, "q")
    pg.evaluate("window.__spans = Array.from(document.querySelectorAll('#chars > .ch'))")
    fetched: list[str] = []
    pg.on("request", lambda r: fetched.append(f"{r.method} {r.resource_type} {r.url}"))
    slider = pg.locator("#snapshot-slider")
    slider.focus()
    seen: dict[str, list[str]] = {}
    timings = []
    for key, label in (("Home", "0"), ("ArrowRight", "1"), ("ArrowRight", "2"), ("End", "final"), ("ArrowLeft", "12")):
        t0 = time.perf_counter()
        pg.keyboard.press(key)
        at_step(pg, label)
        timings.append(time.perf_counter() - t0)
        assert pg.get_attribute("#view", "data-painted") == "0:h:5"  # the same unit, other weights
        if label == "final":
            pg.wait_for_function("() => !new URLSearchParams(location.search).has('snapshot')")
        else:
            wait_for_query(pg, snapshot=label)
        assert classes(pg, "q") == rendered_classes(pg, pg.url, "q"), label
        assert pg.input_value("#snapshot") == ("" if label == "final" else label)
        step_text = pg.text_content("#snapshot-out")
        if label == "final":
            assert step_text.startswith("final weights · step 12")
            assert pg.text_content("#timeline h3").startswith("Final weights")
        else:
            assert step_text == f"step {label} · {int(label) * 80:,} characters seen"
            assert pg.text_content("#timeline h3").startswith(f"Training step {label}")
            assert pg.is_visible("#timeline pre")
            assert pg.locator("#timeline circle.tl-bpc.now title").text_content().startswith(f"step {label}:")
        assert pg.get_attribute("#snapshot-slider", "aria-valuetext") == step_text
        assert pg.evaluate("document.activeElement.id") == "snapshot-slider"  # focus stays: keep stepping
        seen[label] = classes(pg, "q")
    assert seen["final"] == final and seen["0"] != final and seen["0"] != seen["12"]
    assert pg.evaluate("window.__spans.every((s, i) => document.querySelectorAll('#chars > .ch')[i] === s)")
    assert [f for f in fetched if "/ui/paint" in f]
    assert not [f for f in fetched if f.startswith("GET xhr ")]  # never an htmx swap of the view
    assert pg.title().endswith("· step 12 · rnnscope")
    # history: back walks the steps
    pg.go_back()
    at_step(pg, "final")
    pg.go_back()
    at_step(pg, "2")
    assert query(pg)["snapshot"] == "2" and pg.input_value("#snapshot") == "2"
    assert pg.input_value("#snapshot-slider") == "2"
    print(f"\nslider step, key press to repainted (s): {', '.join(f'{t:.3f}' for t in timings)}")
    assert not pg.problems, pg.problems


def tip_text(pg, index: int) -> str:
    pg.locator("#chars .ch").nth(index).hover()
    pg.wait_for_selector("#tip:not([hidden])")
    return pg.text_content("#tip")


def test_the_tooltip_shows_the_steps_surprisal_and_guesses(page, browser):
    pg = page
    pg.goto(pg.base + START)
    at_step(pg, "final")
    before = tip_text(pg, 12)
    pg.locator("#snapshot-slider").focus()
    pg.keyboard.press("Home")
    at_step(pg, "0")
    after = tip_text(pg, 12)
    assert after != before
    fresh = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    try:
        fresh.goto(pg.base + START + "&snapshot=0")
        fresh.wait_for_selector('#view[data-snapshot="0"]')
        assert tip_text(fresh, 12) == after  # what a fresh page at step 0 says, value and guesses
    finally:
        fresh.context.close()
    assert not pg.problems, pg.problems


def test_a_model_change_hides_or_refills_the_slider(page):
    pg = page
    pg.goto(pg.base + START + f"&snapshot={STEPS[2]}")
    at_step(pg, str(STEPS[2]))
    assert pg.is_visible("#snapshot-slider")
    pg.select_option("#model", "tiny-lstm")
    pg.wait_for_selector('#view[data-model="tiny-lstm"]')
    assert not pg.is_visible("#snapshot-field") and pg.is_disabled("#snapshot")
    assert "snapshot" not in query(pg)
    assert pg.get_attribute("#view", "data-snapshot") is None and not pg.locator("#timeline").count()
    pg.select_option("#model", SNAP)
    pg.wait_for_selector(f'#view[data-model="{SNAP}"]')
    at_step(pg, "final")  # another model's steps are not this one's: back to the final weights
    assert pg.is_visible("#snapshot-slider") and pg.input_value("#snapshot") == ""
    assert pg.input_value("#snapshot-slider") == str(len(STEPS))
    assert "snapshot" not in query(pg)  # a blank step (the final weights) is left out of the URL
    assert pg.text_content("#err-snapshot") == ""
    assert not pg.problems, pg.problems


def test_a_typed_step_snaps_with_the_arrows_and_a_bad_one_is_said_in_place(page, page_options):
    pg = page
    pg.goto(pg.base + START)
    at_step(pg, "final")
    pg.fill("#snapshot", "5")
    pg.press("#snapshot", "Enter")
    pg.wait_for_function("() => document.querySelector('#err-snapshot').textContent.includes('no snapshot at step 5')")
    assert f"its snapshots are at steps {', '.join(map(str, STEPS))}" in pg.text_content("#err-snapshot")
    assert pg.get_attribute("#view", "data-snapshot") == "final"  # the view on screen stays
    pg.press("#snapshot", "ArrowUp")  # from 5, the next snapshot up
    after = STEPS[STEPS.index(3) + 1]
    at_step(pg, str(after))
    assert pg.input_value("#snapshot") == str(after) and pg.text_content("#err-snapshot") == ""
    assert pg.input_value("#snapshot-slider") == str(STEPS.index(after))
    pg.press("#snapshot", "ArrowDown")
    at_step(pg, "3")
    pg.fill("#snapshot", "1")
    pg.press("#snapshot", "Enter")
    at_step(pg, "1")
    assert pg.input_value("#snapshot-slider") == "1"
    problems = [p for p in pg.problems if "status of 422" not in p]
    assert not problems, problems


def test_a_ranking_in_find_units_follows_the_step(page):
    pg = page
    pg.goto(pg.base + START)
    at_step(pg, "final")
    pg.click("#probe-form button[type=submit]")
    pg.wait_for_selector("#probe-results tr.pick-row")
    rows = "() => Array.from(document.querySelectorAll('#probe-results tr.pick-row'), r => r.dataset.layer + ':' + r.dataset.state + ':' + r.dataset.unit).join(' ')"
    at_final = pg.evaluate(rows)
    panel = pg.base + "/ui/find-units?" + urlencode({"model": SNAP, "text": TEXT, "probe": "quotes", "layer": 0, "state": "h",
                                                      "unit": 5, "snapshot": 0})
    html = pg.evaluate("u => fetch(u).then(r => r.text())", panel)
    want = " ".join(":".join(m) for m in re.findall(r'class="pick-row[^"]*" data-layer="(\d+)" data-state="(\w+)" data-unit="(\d+)"', html))
    assert want and want != at_final  # step 0's ranking is another one: the panel must rank again
    pg.locator("#snapshot-slider").focus()
    with pg.expect_request(lambda r: "/ui/find-units" in r.url and "snapshot=0" in r.url):
        pg.keyboard.press("Home")
    at_step(pg, "0")
    pg.wait_for_function(f"w => ({rows})() === w", arg=want)
    assert not pg.problems, pg.problems


def test_dragging_the_slider_with_the_mouse_lands_on_a_step(page):
    pg = page
    pg.goto(pg.base + START)
    at_step(pg, "final")
    box = pg.locator("#snapshot-slider").bounding_box()
    pg.mouse.move(box["x"] + box["width"] - 4, box["y"] + box["height"] / 2)
    pg.mouse.down()
    pg.mouse.move(box["x"] + 4, box["y"] + box["height"] / 2, steps=8)
    pg.mouse.up()
    at_step(pg, "0")
    wait_for_query(pg, snapshot="0")
    assert classes(pg, "q") == rendered_classes(pg, pg.url, "q")
    assert not pg.problems, pg.problems


def test_surprisal_mode_steps_by_swapping_the_view(page):
    pg = page
    pg.goto(pg.base + START + "&mode=surprisal")
    at_step(pg, "final")
    pg.locator("#snapshot-slider").focus()
    pg.keyboard.press("Home")
    at_step(pg, "0")
    wait_for_query(pg, snapshot="0")
    assert classes(pg, "q") == rendered_classes(pg, pg.url, "q")
    assert re.search(r"[0-9.]+ bits/char on this text", pg.text_content("#stats"))
    assert not pg.problems, pg.problems


def test_axe_finds_nothing_serious_on_the_slider_and_the_time_lapse_panel(browser, server):
    case = PageCase("timelapse", START + f"&snapshot={STEPS[3]}", "#timeline pre")
    found = blocking(run_axe(browser, server, "", case, _axe()))
    assert not found, report(case, found)


def _axe():
    from tests.e2e.test_accessibility import AXE
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: `npm ci` copies it from the axe-core devDependency (package.json)")
    return AXE
