"""Dynamics pages: full pages and htmx blocks, what the SVG draws, inline messages, escaping,
nav links that carry the shared URL state."""

from __future__ import annotations

import html
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from app.ui.svg import Keys, Point, Series, line_plot, log_axis, scatter

from tests.app.conftest import make_client

HX = {"HX-Request": "true"}
TEXT = 'She said, "I shall go." He left.'


def polyline_points(html: str) -> list[int]:
    return [len(m.split()) for m in re.findall(r'<polyline points="([^"]*)"', html)]


def err(html: str, field: str) -> str:
    m = re.search(rf'<span id="err-{field}" class="err"[^>]*>([^<]*)</span>', html)
    assert m, f"no message slot for {field}"
    return m.group(1)


# ------------------------------------------------------------------ nav and shared state


def test_main_page_nav_links_every_dynamics_view(client):
    html = client.get("/").text
    for path in ("/generate", "/gradients", "/toy", "/saturation", "/intervene"):
        assert f'href="{path}"' in html


def test_dynamics_pages_carry_the_shared_state_in_their_links(client):
    q = {"model": "tiny-gru", "layer": "1", "state": "z", "unit": "4", "text": "Hi there"}
    html = client.get("/toy", params=q).text
    hrefs = re.findall(r'<a href="(/(?:generate|gradients|intervene|saturation|toy)?\?[^"]*)" data-carry', html)
    assert len(hrefs) == 5
    for href in hrefs:
        got = {k: v[0] for k, v in parse_qs(urlsplit(href.replace("&amp;", "&")).query).items()}
        assert got == q
    assert 'aria-current="page">Scalar RNN' in html


def test_a_nav_click_from_another_view_opens_on_the_same_state(client):
    r = client.get("/gradients", headers={"Referer": "http://testserver/?model=tiny-gru&unit=4&mode=surprisal&text=a+b"},
                   follow_redirects=False)
    assert r.status_code == 303
    assert parse_qs(urlsplit(r.headers["location"]).query) == {"model": ["tiny-gru"], "unit": ["4"], "text": ["a b"]}
    foreign = client.get("/gradients", headers={"Referer": "http://elsewhere.example/?model=tiny-gru"},
                         follow_redirects=False)
    assert foreign.status_code == 200
    explicit = client.get("/gradients?lookback=3", headers={"Referer": "http://testserver/?model=tiny-gru"},
                          follow_redirects=False)
    assert explicit.status_code == 200  # a request that says what it wants is never redirected


# ------------------------------------------------------------------ generate


def test_generate_page_without_a_run_shows_the_form_only(client):
    r = client.get("/generate")
    assert r.status_code == 200
    assert 'id="dyn-form"' in r.text and "data-stream" not in r.text
    assert '<script src="/static/dynamics.js" defer></script>' in r.text


def test_generate_page_with_a_run_points_at_the_stream_and_colours_the_prime(client):
    r = client.get("/generate", params={"model": "tiny-lstm", "text": TEXT, "n": "12", "temperature": "0.5",
                                        "seed": "4", "layer": "1", "state": "c", "unit": "3"})
    assert r.status_code == 200
    m = re.search(r'data-stream="([^"]+)"', r.text)
    assert m
    url = m.group(1).replace("&amp;", "&")
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q == {"model": "tiny-lstm", "text": TEXT, "n": "12", "temperature": "0.5", "seed": "4", "layer": "1",
                 "state": "c", "unit": "3"}
    assert r.text.count('class="ch prime') == len(TEXT)
    assert "seed 4: this link reproduces the run exactly" in r.text
    with client.stream("GET", url) as s:
        body = "".join(s.iter_text())
    assert body.count("event: char") == 12


@pytest.mark.parametrize("params,field,fragment", [
    ({"n": "5000"}, "n", "length must be between 1 and 2,000 characters, got 5,000"),
    ({"n": "ten"}, "n", "length must be a whole number, got &#39;ten&#39;"),
    ({"temperature": "inf"}, "temperature", "temperature must be a finite number"),
    ({"temperature": "-1"}, "temperature", "temperature must be between 0 (greedy) and 10"),
    ({"seed": "1.5"}, "seed", "seed must be a whole number"),
    ({"model": "nope"}, "model", "unknown model &#39;nope&#39;"),
    ({"text": ""}, "text", "the prime text is empty"),
    ({"unit": "99"}, "unit", "unit 99 is out of range"),
])
def test_generate_page_bad_inputs_show_inline(client, params, field, fragment):
    r = client.get("/generate", params={"n": "10", **params})
    assert r.status_code == 422
    assert fragment in err(r.text, field)
    assert "data-stream" not in r.text


# ------------------------------------------------------------------ gradient flow


def test_gradients_full_page_loads_its_result_in_place(client):
    r = client.get("/gradients", params={"text": TEXT})
    assert r.status_code == 200
    assert 'hx-trigger="load"' in r.text and "<polyline" not in r.text  # the slow part comes as a block


def test_gradients_block_draws_one_point_per_step_for_each_model(client):
    r = client.get("/gradients", params={"text": TEXT, "position": "20", "lookback": "8",
                                         "compare": ["tiny-lstm", "tiny-rnn"]}, headers=HX)
    assert r.status_code == 200, r.text
    assert r.text.count('class="panel"') == 2
    assert polyline_points(r.text) == [9, 9, 9, 9]  # ||dh_T/dh_t|| and saliency for t = 12..20, per model
    assert r.text.count('<circle class="dot"') == 4 * 9
    assert r.text.count('data-t="') == 2 * 9  # the window's characters, clickable to move T
    assert r.text.count(' at-t"') == 2 and r.text.count(" target") == 2
    assert "‖∂h_T/∂h_(T−1)‖ = " in r.text


def test_gradients_panels_follow_the_model_list_whatever_order_they_are_asked_in(client):
    r = client.get("/gradients", params={"text": "abcdef", "model": "tiny-rnn", "lookback": "3"}, headers=HX)
    assert re.findall(r'data-model="([^"]+)"', r.text) == ["tiny-gru", "tiny-lstm", "tiny-rnn"]  # page model included
    asked = client.get("/gradients", params={"text": "abcdef", "lookback": "3",
                                             "compare": ["tiny-rnn", "tiny-gru", "tiny-lstm"]}, headers=HX)
    assert re.findall(r'data-model="([^"]+)"', asked.text) == ["tiny-gru", "tiny-lstm", "tiny-rnn"]


def y_ticks(svg_html: str) -> list[tuple[str, float]]:
    """The y-axis tick labels of one plot (right-aligned left of the frame) and their heights."""
    return [(label, float(y)) for y, label in
            re.findall(r'<text class="tick" x="53" y="([\d.]+)" text-anchor="end">([^<]*)</text>', svg_html)]


def test_gradient_panels_share_one_log_axis_with_spaced_ticks(client):
    r = client.get("/gradients", params={"text": TEXT, "lookback": "25", "compare": ["tiny-rnn", "tiny-lstm", "tiny-gru"]},
                   headers=HX)
    assert r.status_code == 200, r.text
    plots = re.findall(r"<svg .*?</svg>", r.text, re.S)
    assert len(plots) == 3
    ticks = [y_ticks(p) for p in plots]
    assert ticks[0] and ticks[0] == ticks[1] == ticks[2]  # the same labels at the same heights in every panel
    heights = [y for _, y in ticks[0]]
    assert all(b - a >= 18 for a, b in zip(heights, heights[1:]))  # 10 px labels, 18 px apart at least: no overlap
    assert "all 3 plots share one log y-axis" in r.text
    # every panel's values lie on that one axis: the lowest curve of all touches the shared floor, and no
    # panel's points go above the frame's top or below its bottom
    ys = [float(y) for p in plots for pts in re.findall(r'<polyline points="([^"]*)"', p)
          for y in re.findall(r",([\d.]+)", pts)]
    assert min(ys) >= 26 - 0.1 and max(ys) <= 230 - 40 + 0.1


def test_log_ticks_are_round_powers_that_fit_and_read_plainly():
    from app.ui.svg import Axis, log_ticks
    wide = [label for _, label in log_ticks(Axis(1e-19, 100.0, True), 164)]
    assert wide == ["1", "1e-3", "1e-6", "1e-9", "1e-12", "1e-15", "1e-18"]  # 1 is labelled, one style
    assert [label for _, label in log_ticks(Axis(1e-3, 1.0, True), 164)] == ["1", "0.1", "0.01", "0.001"]
    for decades in range(1, 25):
        ticks = log_ticks(Axis(10.0**-decades, 1.0, True), 164)
        assert 2 <= len(ticks) <= 164 // 18 + 1


@pytest.mark.parametrize("params,field,fragment", [
    ({"position": "50"}, "position", "position 50 is out of range: the text has positions 0..5"),
    ({"position": "x"}, "position", "position must be a whole number"),
    ({"lookback": "0"}, "lookback", "lookback must be between 1 and 400"),
    ({"lookback": "401"}, "lookback", "lookback must be between 1 and 400"),
    ({"compare": ["a", "b", "c", "d"]}, "models", "compare at most 3 models at once, got 4"),
    ({"compare": ["nope"]}, "models", "unknown model &#39;nope&#39;"),
    ({"text": ""}, "text", "the text is empty"),
])
def test_gradients_bad_inputs_show_inline(client, params, field, fragment):
    full = client.get("/gradients", params={"text": "abcdef", **params})
    assert full.status_code == 422 and fragment in err(full.text, field)
    block = client.get("/gradients", params={"text": "abcdef", **params}, headers=HX)
    assert block.status_code == 422
    assert re.search(rf'id="err-{field}" class="err" role="alert" hx-swap-oob="true">[^<]*{re.escape(fragment)}',
                     block.text)


def test_gradients_escape_the_users_text(client):
    evil = '<script>alert(1)</script>"&'
    r = client.get("/gradients", params={"text": evil, "lookback": "30", "compare": "tiny-rnn"}, headers=HX)
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "&lt;" in r.text


# ------------------------------------------------------------------ scalar RNN


def test_toy_page_works_without_any_model(tmp_path):
    with make_client(tmp_path) as c:
        r = c.get("/toy")
    assert r.status_code == 200
    assert polyline_points(r.text) == [3, 3]  # h_t and dh_T/dh_t for the notes' three steps
    assert "∂h_3/∂h_1 = 1.67e-05: over 2 steps back the gradient vanishes" in r.text


def test_toy_block_follows_w_hh(client):
    explode = client.get("/toy", params={"w_hh": "3", "w_xh": "0", "b": "0", "xs": " ".join(["0"] * 12)}, headers=HX)
    assert "the gradient explodes" in explode.text and "1.77e+05" in explode.text  # 3^11
    assert polyline_points(explode.text) == [12, 12]
    vanish = client.get("/toy", params={"w_hh": "0.5", "w_xh": "0", "b": "0", "xs": " ".join(["0"] * 12)}, headers=HX)
    assert "the gradient vanishes" in vanish.text and "4.88e-04" in vanish.text  # 0.5^11


def test_toy_overflow_is_drawn_as_a_gap_not_an_error(client):
    r = client.get("/toy", params={"w_hh": "1e6", "w_xh": "0", "b": "0", "xs": " ".join(["0"] * 60)}, headers=HX)
    assert r.status_code == 200
    assert "overflow" in r.text and "the gradient explodes" in r.text


@pytest.mark.parametrize("params,field,fragment", [
    ({"w_hh": "nan"}, "w_hh", "w_hh must be a finite number"),
    ({"w_hh": "abc"}, "w_hh", "w_hh must be a number, got &#39;abc&#39;"),
    ({"b": "1e999"}, "b", "b must be a finite number"),
    ({"xs": "1 zwei"}, "xs", "input 2 (&#39;zwei&#39;) is not a number"),
    ({"xs": ""}, "xs", "give at least one input"),
])
def test_toy_bad_inputs_show_inline(client, params, field, fragment):
    r = client.get("/toy", params=params, headers=HX)
    assert r.status_code == 422
    assert re.search(rf'id="err-{field}"[^>]*hx-swap-oob="true">[^<]*{re.escape(fragment)}', r.text)
    assert "<polyline" not in r.text


# ------------------------------------------------------------------ gate saturation


def test_saturation_scatter_is_one_keyboard_widget_with_a_unit_per_dot(client):
    r = client.get("/saturation", params={"model": "tiny-lstm", "text": TEXT}, headers=HX)
    assert r.status_code == 200, r.text
    links = re.findall(r'<circle class="pt p-g-[ifo]"[^>]* data-href="(/\?model=tiny-lstm&amp;layer=(\d)&amp;state=([ifo])'
                       r'&amp;unit=(\d+))">', r.text)
    assert len(links) == 2 * 3 * 16  # layers x gates x units
    assert {(layer, g) for _, layer, g, _ in links} == {(str(k), g) for k in (0, 1) for g in "ifo"}
    # one tab stop per plot, no link (or anything else focusable) inside it, and a readout it announces into
    svgs = re.findall(r"<svg [^>]*>", r.text)
    assert len(svgs) == 2 and all('tabindex="0"' in s and 'role="application"' in s for s in svgs)
    assert "<a " not in "".join(re.findall(r"<svg .*?</svg>", r.text, re.S))
    assert r.text.count('tabindex="0"') == 2
    for layer in (0, 1):
        assert f'aria-describedby="sat-readout-{layer}" data-live="sat-readout-{layer}"' in r.text
        assert f'<p id="sat-readout-{layer}" class="plot-readout" role="status">' in r.text
    assert "the current text (32 characters), not held-out text" in r.text
    assert "its model card names corpus &#39;tiny&#39;, which rnnscope cannot rebuild" in r.text
    gru = client.get("/saturation", params={"model": "tiny-gru", "text": TEXT}, headers=HX)
    assert len(re.findall(r'data-href="/\?model=tiny-gru', gru.text)) == 2 * 2 * 16


def test_saturation_without_text_or_held_out_file_measures_the_default_text(client):
    r = client.get("/saturation", params={"model": "tiny-gru"}, headers=HX)
    assert r.status_code == 200 and "the current text (" in r.text


def test_saturation_of_a_vanilla_rnn_says_why_inline(client):
    r = client.get("/saturation", params={"model": "tiny-rnn"})
    assert r.status_code == 422
    assert "tiny-rnn is a vanilla RNN: it has no gates to saturate" in err(r.text, "model")


def test_saturation_too_long_text_is_said_in_the_block(tiny_models_dir):
    with make_client(tiny_models_dir, max_chars=10) as c:
        r = c.get("/saturation", params={"model": "tiny-lstm", "text": "x" * 11}, headers=HX)
    assert r.status_code == 422 and "the limit here is 10" in r.text


# ------------------------------------------------------------------ interventions


def test_intervene_block_colours_the_text_and_the_edited_text(client):
    params = {"model": "tiny-lstm", "text": TEXT, "layer": "1", "state": "c", "unit": "3", "value": "0",
              "start": "5", "watch": '"'}
    r = client.get("/intervene", params=params, headers=HX)
    assert r.status_code == 200, r.text
    clamp = re.search(r'id="clamp-chars".*?</div>', r.text, re.S).group(0)
    assert clamp.count('<span class="ch') == len(TEXT)
    assert clamp.count(" clamped") == len(TEXT) - 5
    cf = re.search(r'id="cf-chars".*?</div>', r.text, re.S).group(0)
    assert cf.count('<span class="ch') == len(TEXT) - 1  # default edit: the first double quote removed
    assert polyline_points(r.text) == [len(TEXT) - 1, len(TEXT) - 1]  # p(" next) before and after
    assert "really comes next (2 places)" in r.text


def test_intervene_marks_unaligned_characters(client):
    r = client.get("/intervene", params={"model": "tiny-lstm", "text": "abc def", "edited": "abcXYdef", "state": "h",
                                         "layer": "0", "unit": "0"}, headers=HX)
    cf = re.search(r'id="cf-chars".*?</div>', r.text, re.S).group(0)
    assert cf.count(" na\"") == 2 and "no counterpart in the original" in cf
    assert "2 without a counterpart" in r.text


def test_intervene_gate_state_refuses_the_clamp_but_still_shows_the_counterfactual(client):
    params = {"model": "tiny-lstm", "text": TEXT, "layer": "0", "state": "f", "unit": "1"}
    full = client.get("/intervene", params=params)
    assert full.status_code == 422
    assert "only a state can be clamped, not &#39;f&#39;" in err(full.text, "state")
    assert 'hx-trigger="load"' in full.text  # the counterfactual still loads
    block = client.get("/intervene", params=params, headers=HX)
    assert 'class="err section-err"' in block.text and 'id="cf-chars"' in block.text


@pytest.mark.parametrize("params,field,fragment", [
    ({"value": "nan"}, "value", "the clamp value must be a finite number"),
    ({"value": "x"}, "value", "the clamp value must be a number"),
    ({"start": "999"}, "start", "start 999 is out of range"),
    ({"watch": "ab"}, "watch", "watch must be exactly one character"),
    ({"watch": "€"}, "watch", "never saw &#39;€&#39; in training"),
    ({"edited": ""}, "edited", "the edited text is empty"),
    ({"text": ""}, "text", "the text is empty"),
    ({"layer": "7"}, "layer", "layer 7 is out of range"),
])
def test_intervene_bad_inputs_show_inline(client, params, field, fragment):
    r = client.get("/intervene", params={"model": "tiny-lstm", "text": TEXT, "state": "h", **params})
    assert r.status_code == 422
    assert fragment in err(r.text, field)


def test_intervene_page_states_the_limit_it_applies(client, tiny_models_dir):
    from app.dynamics.results import MAX_INTERVENE_CHARS

    page = client.get("/intervene", params={"model": "tiny-lstm", "text": TEXT, "state": "h"})
    assert page.status_code == 200
    assert f"(up to {MAX_INTERVENE_CHARS:,} characters)" in page.text and "20,000" not in page.text
    long = client.get("/intervene", params={"model": "tiny-lstm", "text": "a" * (MAX_INTERVENE_CHARS + 1), "state": "h"})
    assert long.status_code == 422
    assert f"the limit here is {MAX_INTERVENE_CHARS:,}" in err(long.text, "text")
    with make_client(tiny_models_dir, max_chars=300) as small:  # a server limit below it is the one shown
        assert "(up to 300 characters)" in small.get("/intervene", params={"model": "tiny-lstm", "state": "h"}).text


def test_intervene_escapes_text_everywhere(client):
    evil = '<img src=x onerror=alert(1)>"'
    r = client.get("/intervene", params={"model": "tiny-lstm", "text": evil, "state": "h", "layer": "0", "unit": "0",
                                         "watch": '"'}, headers=HX)
    assert r.status_code == 200
    assert "<img" not in r.text and "&lt;" in r.text


def preds_of(html: str) -> dict:
    m = re.search(r"id=\"clamp-chars\"[^>]*data-preds='([^']*)'", html)
    assert m, "no hover data on the clamped text"
    return json.loads(m.group(1))  # tojson escapes < > & ' so the attribute holds plain JSON


def summary_of(html: str) -> str:
    m = re.search(r'<div id="pred-summary".*?</table>', html, re.S)
    assert m, "no predictions summary"
    return m.group(0)


def guesses(block: str, title: str) -> list[tuple[str, str]]:
    part = block.split(f"<h4>{title}</h4>", 1)[1].split("</ol>", 1)[0]
    return re.findall(r'<code>([^<]*)</code><span class="bar" style="--p:[0-9.]+"></span>'
                      r'<span class="pct">([^<]*)</span>', part)


def intervene_page_and_api(client, text: str, **clamp):
    """One clamp of tiny-lstm (layer, state, unit, value, start, watch) asked of the /intervene block and of
    POST /api/v1/intervene: the page's response and the API's JSON, to hold one against the other."""
    r = client.get("/intervene", params={"model": "tiny-lstm", "text": text, **{k: str(v) for k, v in clamp.items()}},
                   headers=HX)
    assert r.status_code == 200, r.text
    return r, client.post("/api/v1/intervene", json={"model": "tiny-lstm", "text": text, **clamp}).json()


def test_intervene_shows_the_guesses_before_and_after_on_hover_and_a_summary_after_the_clamp(client):
    r, api = intervene_page_and_api(client, TEXT, layer=1, state="c", unit=3, value=2, start=5, watch='"')
    shown = {" ": "␣", "\n": "↵"}
    # Hover data: every position's before list, the after list from the clamp on, all formatted in Python.
    data = preds_of(r.text)
    assert data["start"] == 5 and len(data["before"]) == len(data["after"]) == len(TEXT)
    assert data["after"][:5] == [None] * 5 and "clamp starts at position 5" in data["same"]
    for t in (0, 5, 20):
        assert [g[0] for g in data["before"][t]] == [shown.get(g["char"], g["char"]) for g in api["topk_before"][t]]
        assert [g[1] for g in data["before"][t]] == [f"{100 * g['p']:.1f}" for g in api["topk_before"][t]]
    assert [g[1] for g in data["after"][20]] == [f"{100 * g['p']:.1f}" for g in api["topk_after"][20]]
    actual = [t for t, row in enumerate(data["before"]) for g in row if len(g) == 3]  # the true next character
    assert all(row[[g[0] for g in row].index(shown.get(TEXT[t + 1], TEXT[t + 1]))][2] == 1
               for t, row in enumerate(data["before"]) if t in actual)
    assert 'id="iv-tip"' in r.text and re.search(r'id="clamp-chars"[^>]*tabindex="0"', r.text)
    # The summary: the first prediction the clamp can change (position start), side by side, and the biggest moves.
    block = summary_of(r.text)
    assert 'data-t="5"' in block and "at position 5" in block and "the first prediction made with c[1][3]" in block
    before, after = guesses(block, "unit free (before)"), guesses(block, "clamped (after)")
    assert len(before) == len(after) == 5
    assert [g[1] for g in after] == [f"{100 * g['p']:.1f}%" for g in api["topk_after"][5]]
    rows = re.findall(r'<tr class="(up|down|same)"><td><code>([^<]*)</code></td><td>([^<]*)</td><td>([^<]*)</td>'
                      r'<td>([^<]*)</td></tr>', block)
    assert len(rows) == 5
    assert [html.unescape(c) for _, c, *_ in rows] == [shown.get(c["char"], c["char"]) for c in api["top_changes"][5]]
    assert all(cls == ("up" if ch.startswith("+") else "down") for cls, _, _, _, ch in rows)
    assert re.search(r'<span class="ch[^"]*\bat-t\b[^"]*"[^>]*data-t="5"', r.text)


def test_intervene_summary_at_a_picked_position_reuses_the_cached_runs(client):
    params = {"model": "tiny-lstm", "text": TEXT, "layer": "1", "state": "h", "unit": "2", "start": "8"}
    first = client.get("/intervene", params=params, headers=HX)
    assert "both runs from the cache" not in first.text
    later = client.get("/intervene", params={**params, "at": "20"}, headers=HX)
    assert later.status_code == 200 and "both runs from the cache" in later.text
    block = summary_of(later.text)
    assert 'data-t="20"' in block and "12 steps after the clamp starts (position 8)" in block
    assert f"the actual next character {TEXT[21]!r}" in html.unescape(block)
    early = summary_of(client.get("/intervene", params={**params, "at": "2"}, headers=HX).text)
    assert "comes before the clamp starts" in early
    assert guesses(early, "unit free (before)") == guesses(early, "clamped (after)")
    last = summary_of(client.get("/intervene", params={**params, "at": str(len(TEXT) - 1)}, headers=HX).text)
    assert "there is no actual next character" in last


def test_intervene_topk_sets_the_list_lengths_and_zero_shows_none(client):
    params = {"model": "tiny-lstm", "text": TEXT, "layer": "0", "state": "h", "unit": "1", "start": "3"}
    three = client.get("/intervene", params={**params, "topk": "3"}, headers=HX)
    assert all(len(row) == 3 for row in preds_of(three.text)["before"])
    assert len(guesses(summary_of(three.text), "clamped (after)")) == 3
    none = client.get("/intervene", params={**params, "topk": "0"}, headers=HX)
    assert none.status_code == 200 and 'id="clamp-chars"' in none.text
    assert "data-preds" not in none.text and 'id="pred-summary"' not in none.text
    full = client.get("/intervene", params=params)
    assert re.search(r'<input id="topk" name="topk" type="number"[^>]*max="20"[^>]*value="5"', full.text)
    assert re.search(r'<input id="at" name="at" type="number"[^>]*value=""', full.text)


@pytest.mark.parametrize("params,field,fragment", [
    ({"topk": "21"}, "topk", "topk must be a whole number from 0 to 20"),
    ({"topk": "-1"}, "topk", "topk must be a whole number from 0 to 20"),
    ({"topk": "many"}, "topk", "topk must be a whole number, got &#39;many&#39;"),
    ({"at": "999"}, "at", "position 999 is out of range: the text has positions 0..31"),
    ({"at": "x"}, "at", "the position to compare must be a whole number"),
])
def test_intervene_topk_and_position_errors_show_inline(client, params, field, fragment):
    r = client.get("/intervene", params={"model": "tiny-lstm", "text": TEXT, "state": "h", **params})
    assert r.status_code == 422
    assert fragment in err(r.text, field)
    block = client.get("/intervene", params={"model": "tiny-lstm", "text": TEXT, "state": "h", **params}, headers=HX)
    assert block.status_code == 422 and fragment in block.text and "data-preds" not in block.text


def test_intervene_predictions_escape_text_and_predicted_characters(client):
    evil = "<img src=x onerror=alert(1)>'&\""
    r = client.get("/intervene", params={"model": "tiny-lstm", "text": evil, "state": "h", "layer": "0", "unit": "0",
                                         "topk": "20", "at": "0"}, headers=HX)
    assert r.status_code == 200
    assert "<img" not in r.text
    raw = re.search(r"data-preds='([^']*)'", r.text).group(1)
    assert not set("<>&'") & set(raw)  # the vocabulary has < > & ' and they are predicted: escaped as \u00XX
    chars = {g[0] for row in json.loads(raw)["before"] for g in row}
    assert chars & {"<", ">", "&", "'"}  # a near-uniform tiny model guesses some of them (and they are escaped)
    block = summary_of(r.text)
    assert "after &#39;&lt;&#39; at position 0" in block and "<code><</code>" not in block


# ------------------------------------------------------------------ no models


@pytest.mark.parametrize("path", ["/generate", "/gradients", "/saturation", "/intervene"])
def test_model_views_say_how_to_get_a_model(tmp_path, path):
    with make_client(tmp_path) as c:
        r = c.get(path)
    assert r.status_code == 200 and "No models are installed" in r.text and 'href="/toy"' in r.text


# ------------------------------------------------------------------ svg helpers


def test_line_plot_breaks_lines_at_gaps_and_floors_zeros_on_a_log_axis():
    html = str(line_plot([Series("a", [1.0, float("nan"), 1e-3, 0.0], "jac", dots=True)], [0, 1, 2, 3], title="t <x>",
                         x_label="x", y_label="y", log_y=True))
    assert polyline_points(html) == [1, 2]
    assert html.count('<circle class="dot"') == 3
    assert "t &lt;x&gt;" in html and "<x>" not in html
    axis = log_axis([1e-3, 5.0, 0.0])
    assert (axis.lo, axis.hi) == (1e-3, 10.0)


def test_scatter_escapes_titles_and_links():
    keys = Keys("out-1", 'move "<b>"')
    html = str(scatter([Point(0.2, 0.5, "g-f", 'f "<b>"', '/?a=1&b="2"')], title="s", x_label="x", y_label="y",
                       legend=[("g-f", "f")], keys=keys))
    assert 'data-href="/?a=1&amp;b=&#34;2&#34;"' in html and "<b>" not in html
    assert 'aria-label="s: move &#34;&lt;b&gt;&#34;"' in html and "<a " not in html
    plain = str(scatter([Point(0.2, 0.5, "g-f", "f", "/?a=1")], title="s", x_label="x", y_label="y", legend=[]))
    assert "href" not in plain and "tabindex" not in plain  # without Keys a dot links nowhere: never a tab stop


def test_svg_refuses_a_class_that_is_not_a_plain_name():
    with pytest.raises(ValueError):
        line_plot([Series("a", [1.0], 'x" onload="y')], [0], title="t", x_label="x", y_label="y")


def test_generate_page_shows_every_bad_field_at_once(client):
    r = client.get("/generate", params={"n": "99999", "temperature": "x", "seed": "-3", "text": ""})
    assert r.status_code == 422
    assert "length must be between 1 and 2,000" in err(r.text, "n")
    assert "temperature must be a number" in err(r.text, "temperature")
    assert "seed must be a whole number from 0" in err(r.text, "seed")
    assert "the prime text is empty" in err(r.text, "text")
