"""The main page's "Find units" panel (/ui/find-units) and the second unit ("compare with")."""

from __future__ import annotations

import json
import re
from html import unescape

import numpy as np
import pytest

from app.ui.scale import neuron_scale
from models.checkpoint import load_checkpoint
from models.trace import run_trace

from tests.conftest import char_spans
from tests.share.slots import slot_held

HX = {"HX-Request": "true"}
TEXT = 'She said, "I shall go." He said nothing.\nThen: "Why?"'
ROW = re.compile(r'<tr class="pick-row( current)?( alt)?" data-layer="(\d+)" data-state="(\w+)" data-unit="(\d+)"')
TIE = 0.005
def cells(html: str) -> list[tuple[str, float, float | None, str]]:
    """(classes, colour position, compare bar position, character) of every character span of the view."""
    return [(c.cls, c.v, c.w, c.ch) for c in char_spans(html)]


def rows(html: str) -> list[tuple[int, str, int, bool]]:
    """The panel's unit rows (one per unit), as (layer, state, unit, current)."""
    return [(int(layer), state, int(unit), bool(cur)) for cur, alt, layer, state, unit in ROW.findall(html) if not alt]


def groups(html: str) -> list[list[tuple[int, str, int, bool]]]:
    """Each unit row followed by its other states' rows (behind its expand button)."""
    out: list[list[tuple[int, str, int, bool]]] = []
    for cur, alt, layer, state, unit in ROW.findall(html):
        if not alt:
            out.append([])
        out[-1].append((int(layer), state, int(unit), bool(cur)))
    return out


def expected_groups(api: list[dict], n: int) -> list[tuple[int, int, str]]:
    """(layer, unit, state shown) of the first n units of a flat API ranking: units in the order they first
    appear; shown, the least rough of the unit's states within TIE of its best score."""
    order: list[tuple[int, int]] = []
    for a in api:
        if (a["layer"], a["unit"]) not in order:
            order.append((a["layer"], a["unit"]))
    out = []
    for layer, unit in order[:n]:
        mine = [a for a in api if (a["layer"], a["unit"]) == (layer, unit)]
        best = max(a["score"] for a in mine)
        near = [a for a in mine if a["score"] >= best - TIE - 1e-9]
        shown = min(near, key=lambda a: (a["roughness"] if a["roughness"] is not None else float("inf")))
        out.append((layer, unit, shown["state"]))
    return out


def test_main_page_has_the_panel_with_every_probe(client):
    html = client.get("/", params={"text": TEXT}).text
    assert '<section id="find-units"' in html and 'hx-get="/ui/find-units"' in html and 'hx-include="#controls"' in html
    options = re.findall(r'<option value="([a-z_]+)" title="[^"]*"(?: selected)?>',
                         html.split('<select id="probe"')[1].split("</select>")[0])
    assert options == ["quotes", "brackets", "bracket_depth", "line_position", "indent", "comment", "string",
                       "short_string", "long_string", "word_start", "vowel", "regex"]
    assert '<script src="/static/probe.js" defer></script>' in html
    assert "<script>" not in html  # no inline script: the CSP forbids it


def test_panel_ranks_the_same_units_as_the_api_and_marks_the_current_one(client):
    api = client.post("/api/v1/probe", json={"model": "tiny-lstm", "text": TEXT, "probe": "quotes", "top": 20}).json()
    first = api[0]
    r = client.get("/ui/find-units", params={"model": "tiny-lstm", "text": TEXT, "source": "probe", "probe": "quotes",
                                             "layer": str(first["layer"]), "state": first["state"],
                                             "unit": str(first["unit"])}, headers=HX)
    assert r.status_code == 200
    everything = client.post("/api/v1/probe", json={"model": "tiny-lstm", "text": TEXT, "probe": "quotes",
                                                    "top": 200}).json()
    got = rows(r.text)
    assert len(got) == 20  # twenty units, each one row
    assert [(la, u, s) for la, s, u, _ in got] == expected_groups(everything, 20)
    # behind each row, the unit's other states: every state of an LSTM layer once
    for g in groups(r.text):
        assert {u for _, _, u, _ in g} == {g[0][2]} and len({la for la, *_ in g}) == 1
        assert sorted(s for _, s, _, _ in g) == sorted(["h", "c", "i", "f", "g", "o", "kept", "written"])
    current = [(la, s, u) for g in groups(r.text) for la, s, u, cur in g if cur]
    assert current == [(first["layer"], first["state"], first["unit"])]  # marked once, wherever it is
    assert f'href="/neuron/tiny-lstm/{first["layer"]}/{first["state"]}/{first["unit"]}"' in r.text
    assert f"{first['score']:.3f}" in r.text and "AUC" in r.text
    # the API call above traced the text; the panel scored the cached trace
    assert re.search(r"quotes: 17 of 53 characters marked · 256 units scored in \d+ ms · trace from cache", r.text)
    assert "<html" not in r.text  # a fragment for the panel


def test_panel_span_source_ranks_the_selection(client):
    params = {"model": "tiny-gru", "text": TEXT, "source": "selection", "start": "10", "end": "22", "threshold": "0.1"}
    r = client.get("/ui/find-units", params=params, headers=HX)
    assert r.status_code == 200, r.text
    api = client.post("/api/v1/span", json={"model": "tiny-gru", "text": TEXT, "start": 10, "end": 22,
                                            "threshold": 0.1, "top": 20}).json()
    everything = client.post("/api/v1/span", json={"model": "tiny-gru", "text": TEXT, "start": 10, "end": 22,
                                                   "threshold": 0.1, "top": 200}).json()
    assert [(la, u, s) for la, s, u, _ in rows(r.text)] == expected_groups(everything, 20)
    assert expected_groups(api, 3) == expected_groups(everything, 3)  # the API's own top agrees
    assert ("span 10–22 (12 characters: “&#34;I shall go.”; its first and last count neither way), "
            "on above 0.1 of each unit&#39;s colour scale") in r.text
    assert "Δ on" in r.text


@pytest.mark.parametrize("params, fragment", [
    ({"source": "selection"}, "no span is selected: drag over the text"),
    ({"source": "selection", "start": "5", "end": "5"}, "the selected span is empty"),
    ({"source": "selection", "start": "0", "end": "999"}, "the span ends at character 999 but the text has 53"),
    ({"source": "selection", "start": "2", "end": "8", "threshold": "hot"}, "threshold must be a number, got &#39;hot&#39;"),
    ({"source": "selection", "start": "x", "end": "8"}, "start must be a whole number"),
    ({"source": "probe", "probe": "nope"}, "unknown probe &#39;nope&#39;"),
    ({"source": "probe", "probe": "regex", "pattern": "(["}, "invalid regular expression"),
    ({"source": "probe", "probe": "regex", "pattern": ""}, "the regex probe needs a pattern"),
    ({"source": "probe", "probe": "comment"}, "no character of this text is inside a # comment"),
    ({"source": "probe", "top": "0"}, "top must be between 1 and 200, got 0"),
    ({"source": "sideways"}, "source &#39;sideways&#39; is not one of: probe, selection"),
    ({"source": "probe", "text": ""}, "the text is empty"),
    ({"source": "probe", "model": "nope"}, "unknown model &#39;nope&#39;"),
])
def test_panel_errors_are_inline_messages(client, params, fragment):
    r = client.get("/ui/find-units", params={"model": "tiny-lstm", "text": TEXT, **params}, headers=HX)
    assert 400 <= r.status_code < 500, r.text
    assert '<p class="err" role="alert"' in r.text and fragment in r.text
    assert "<table" not in r.text


def test_panel_escapes_the_text_it_quotes(client):
    evil = 'x <script>alert(1)</script> "y" z'
    r = client.get("/ui/find-units", params={"model": "tiny-lstm", "text": evil, "source": "selection",
                                             "start": "2", "end": "20", "threshold": "-0.2"}, headers=HX)
    assert r.status_code == 200, r.text
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text


def test_view_header_links_to_the_neuron_page(client):
    html = client.get("/", params={"model": "tiny-gru", "layer": "1", "state": "z", "unit": "7", "text": "ab"}).text
    assert '<a class="neuron-link" href="/neuron/tiny-gru/1/z/7">' in html


# ---- second unit ---------------------------------------------------------------------------
def _expected_w(models_dir, layer: int, state: str, unit: int, text: str) -> list[float]:
    ck = load_checkpoint(models_dir / "tiny-lstm")
    values = run_trace(ck.model, ck.vocab, text, layers=[layer], states=[state], units=[unit], half=True).states[layer][state][:, 0]
    values = values.astype(np.float32)
    return neuron_scale(state, values).positions(values).tolist()


def test_second_unit_outlines_each_character_by_its_value(client, tiny_models_dir):
    params = {"model": "tiny-lstm", "layer": "1", "state": "c", "unit": "3", "text": TEXT,
              "layer2": "0", "state2": "h", "unit2": "5"}
    r = client.get("/", params=params)
    assert r.status_code == 200
    spans = cells(r.text)
    assert "".join(ch for *_, ch in spans) == TEXT
    w = [x for _, _, x, _ in spans]
    np.testing.assert_allclose(w, _expected_w(tiny_models_dir, 0, "h", 5, TEXT), atol=0.05 + 1e-9)  # bars: 0.1 steps
    assert len(set(w)) >= 3  # the bars follow the value (5 px in 0.5 px steps)
    assert "underline: <a href=\"/neuron/tiny-lstm/0/h/5\">layer 0 · h · unit 5</a>" in r.text
    assert r.text.count('class="sw2"') == 11  # the second unit's legend
    data = json.loads(unescape(r.text.split("data-trace='")[1].split("'")[0]))
    assert data["what2"] == "h[0][5]" and len(data["w"]) == len(TEXT)  # the tooltip shows the second value
    # the controls show it on, with its values
    assert re.search(r'<input type="checkbox" id="compare" checked>', r.text)
    assert re.search(r'<input id="unit2" name="unit2" type="number"[^>]* value="5"', r.text)
    # the htmx partial carries the same outline
    partial = client.get("/", params=params, headers=HX)
    assert [x for _, _, x, _ in cells(partial.text)] == [x for _, _, x, _ in spans]


def test_second_unit_defaults_to_the_main_units_layer_and_state(client, tiny_models_dir):
    r = client.get("/", params={"model": "tiny-lstm", "layer": "1", "state": "c", "unit": "3", "text": TEXT, "unit2": "9"})
    w = [x for _, _, x, _ in cells(r.text)]
    np.testing.assert_allclose(w, _expected_w(tiny_models_dir, 1, "c", 9, TEXT), atol=0.05 + 1e-9)


def test_no_second_unit_means_no_outline_and_disabled_fields(client):
    r = client.get("/", params={"model": "tiny-lstm", "layer": "0", "state": "h", "unit": "3", "text": TEXT, "unit2": ""})
    assert r.status_code == 200
    assert all(w is None for _, _, w, _ in cells(r.text)) and 'class="sw2"' not in r.text
    assert re.search(r'<select id="layer2" name="layer2" aria-label="second unit: layer" disabled>', r.text)
    assert re.search(r'<input id="unit2"[^>]* value="4"[^>]* disabled>', r.text)  # the next unit, ready to switch on


@pytest.mark.parametrize("params, fragment", [
    ({"unit2": "16"}, "compare with: unit 16 is out of range: this model has units 0..15"),
    ({"unit2": "two"}, "compare with: unit2 must be a whole number, got &#39;two&#39;"),
    ({"unit2": "1", "layer2": "5"}, "compare with: layer 5 is out of range"),
    ({"unit2": "1", "state2": "z"}, "compare with: state &#39;z&#39; does not exist in a lstm model"),
])
def test_bad_second_unit_is_an_inline_message(client, params, fragment):
    r = client.get("/", params={"model": "tiny-lstm", "text": TEXT, **params}, headers=HX)
    assert r.status_code == 422
    assert r.headers["HX-Reswap"] == "none"
    assert f'<span id="err-compare" class="err" role="alert" hx-swap-oob="true">{fragment}' in r.text


def test_busy_server_answers_the_panel_and_the_api_with_503_and_a_message(tiny_models_dir):
    from tests.app.conftest import make_client

    with make_client(tiny_models_dir, max_concurrent_traces=1, queue_timeout=0.2) as c:
        with slot_held(c.app.state.service.slots):  # another request's model run holds the only slot
            panel = c.get("/ui/find-units", params={"model": "tiny-lstm", "text": "He said \"hi\" twice",
                                                    "probe": "quotes"}, headers=HX)
            api = c.post("/api/v1/probe", json={"model": "tiny-lstm", "text": 'He said "hi"', "probe": "quotes"})
    assert panel.status_code == 503 and panel.headers["Retry-After"] == "5"
    assert '<div id="probe-results"' in panel.text and "the server is busy" in panel.text
    assert api.status_code == 503 and "the server is busy" in api.json()["detail"]


def test_a_probe_of_a_cached_text_does_not_queue_behind_model_runs(tiny_models_dir):
    from tests.app.conftest import make_client

    text = 'He said "hi" twice, "then" left.'
    with make_client(tiny_models_dir, max_concurrent_traces=1, queue_timeout=0.2) as c:
        assert c.get("/", params={"model": "tiny-lstm", "text": text}).status_code == 200  # now cached
        with slot_held(c.app.state.service.slots):  # another request's model run holds the only model slot
            api = c.post("/api/v1/probe", json={"model": "tiny-lstm", "text": text, "probe": "quotes"})
            new = c.post("/api/v1/probe", json={"model": "tiny-lstm", "text": text + " More.", "probe": "quotes"})
    assert api.status_code == 200 and api.json()[0]["state"], api.text
    assert new.status_code == 503, "a text not traced yet still needs the model slot"


# ---- the probe is part of the view: the URL opens the panel on it ----------------------------
def _panel(html: str) -> dict:
    form = re.search(r'<form id="probe-form"[^>]*>', html).group(0)
    select = html.split('<select id="probe"')[1].split("</select>")[0]
    pattern = re.search(r'<input id="pattern"[^>]*>', html).group(0)
    return {
        "probe": re.findall(r'<option value="([a-z_]+)"[^>]*\bselected>', select),
        "default": re.search(r'data-default="([a-z_]+)"', html.split('<select id="probe"')[1]).group(1),
        "title": unescape(re.search(r'<span id="probe-title"[^>]*>(.*?)</span>', html).group(1)),
        "pattern": unescape(re.search(r'\bvalue="([^"]*)"', pattern).group(1)),
        "disabled": " disabled" in pattern,
        "load": 'hx-trigger="load, ' in form,
    }


@pytest.mark.parametrize("params, expected", [
    ({}, {"probe": ["quotes"], "pattern": "", "disabled": True, "load": False}),
    ({"probe": "vowel"}, {"probe": ["vowel"], "pattern": "", "disabled": True, "load": True}),
    ({"probe": "regex", "pattern": "[A-Z][a-z]+"}, {"probe": ["regex"], "pattern": "[A-Z][a-z]+", "disabled": False,
                                                     "load": True}),
    ({"probe": "regex"}, {"probe": ["regex"], "pattern": "", "disabled": False, "load": False}),  # nothing to rank yet
    ({"probe": "vowel", "pattern": "x"}, {"probe": ["vowel"], "pattern": "", "disabled": True, "load": True}),
    ({"probe": "nope", "pattern": "x"}, {"probe": ["quotes"], "pattern": "", "disabled": True, "load": False}),
    ({"probe": "quotes"}, {"probe": ["quotes"], "pattern": "", "disabled": True, "load": False}),
])
def test_the_url_opens_the_panel_on_its_probe_and_pattern(client, params, expected):
    from models.probes import PROBES

    r = client.get("/", params={"model": "tiny-lstm", "text": TEXT, **params})
    assert r.status_code == 200  # an unknown probe in a hand-edited URL is not an error: the default opens
    got = _panel(r.text)
    assert got["default"] == "quotes" and got["title"] == PROBES[expected["probe"][0]].title
    assert {k: got[k] for k in expected} == expected


def test_the_main_form_sends_the_probe_so_the_pushed_url_holds_it(client):
    html = client.get("/", params={"text": TEXT}).text
    form = re.search(r'<form id="controls"[^>]*>', html).group(0)
    assert 'hx-include="#probe, #pattern"' in form and 'hx-push-url="true"' in form
    # the htmx request with the panel's settings renders the same view (they only shape the panel)
    base = {"model": "tiny-lstm", "layer": "1", "state": "c", "unit": "3", "text": TEXT}
    plain = client.get("/", params=base, headers=HX)
    probed = client.get("/", params={**base, "probe": "regex", "pattern": "[a-z]"}, headers=HX)
    assert probed.status_code == 200 and cells(probed.text) == cells(plain.text)
    assert '<section id="find-units"' not in probed.text  # the panel is outside the swapped view


def test_the_panel_does_not_rank_on_load_without_a_view(client):
    r = client.get("/", params={"model": "tiny-lstm", "text": TEXT, "unit": "999", "probe": "vowel"})
    assert r.status_code == 422 and _panel(r.text)["probe"] == ["vowel"] and not _panel(r.text)["load"]


def test_a_pattern_in_the_url_is_escaped(client):
    evil = '"><script>alert(1)</script>'
    html = client.get("/", params={"text": TEXT, "probe": "regex", "pattern": evil}).text
    assert "<script>alert" not in html and _panel(html)["pattern"] == evil


def test_a_ranking_opens_the_units_other_states_when_the_view_shows_one_of_them(client):
    base = {"model": "tiny-lstm", "text": TEXT, "source": "probe", "probe": "quotes"}
    plain = client.get("/ui/find-units", params=base, headers=HX).text
    assert 'aria-expanded="true"' not in plain and plain.count('class="alt-states" hidden') == 20
    first_alts = groups(plain)[0][1:]
    layer, state, unit, _ = first_alts[2]  # one of the first unit's other states
    html = client.get("/ui/find-units", params={**base, "layer": str(layer), "state": state, "unit": str(unit)},
                      headers=HX).text
    assert html.count('aria-expanded="true"') == 1 and html.count('class="alt-states" hidden') == 19
    assert re.search(r'<tbody id="alts-1" class="alt-states">', html)
    assert re.search(rf'<tr class="pick-row current alt" data-layer="{layer}" data-state="{state}" data-unit="{unit}" '
                     r'aria-current="true">', html)
    assert '<button type="button" class="pick more-states" aria-expanded="true" aria-controls="alts-1" data-count="7"' in html
