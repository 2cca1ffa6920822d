"""The /compare page: each panel is coloured exactly as the main view colours that model, unit and text;
its candidates are the API's; a pick, the probe mode and the main view's link keep the state in the URL;
every bad setting is a message beside its control (422), a busy server a 503 saying so in place."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest

from app.trace.views import UNKNOWN_TITLE
from tests.app.compare.test_api import blocks, correlations
from tests.app.conftest import make_client
from tests.conftest import char_spans
from tests.share.slots import slot_held

HX = {"HX-Request": "true"}
TEXT = 'She said, "I shall go." He said nothing.\nThen: "Why?" she asked. "No," he said.'
ANCHOR = {"model": "tiny-lstm", "layer": "1", "state": "c", "unit": "3"}
PANEL = re.compile(r'<article class="cmp-panel cmp-(\w+)" data-model="([^"]+)" data-shown="([^"]+)">(.*?)</article>', re.S)
CHARS = re.compile(r'<div class="chars levels cmp-chars"[^>]*>(.*?)</div>', re.S)
CANDIDATE = re.compile(r'<button type="button" class="cand( current)?" data-pick="([^"]+)"[^>]*>([^<]*)<span class="cand-r">([^<]*)</span>')


def panels(html: str) -> list[dict]:
    out = []
    for role, model, shown, body in PANEL.findall(html):
        layer, state, unit = shown.split(":")
        out.append({"role": role, "model": model, "shown": (int(layer), state, int(unit)), "body": body,
                    "spans": char_spans(CHARS.search(body).group(1)),
                    "candidates": [(bool(cur), pick, score) for cur, pick, _, score in CANDIDATE.findall(body)]})
    return out


def page(client, headers=None, **params):
    return client.get("/compare", params={"text": TEXT, **ANCHOR, **params}, headers=headers or {})


def err(html: str, field: str) -> str:
    m = re.search(rf'<span id="err-{field}" class="err" role="alert"[^>]*>(.*?)</span>', html, re.S)
    return unescape(m.group(1)) if m else ""


def test_the_default_page_matches_the_cards_quote_unit_in_every_other_model(client):
    r = client.get("/compare")
    assert r.status_code == 200
    ps = panels(r.text)
    assert [(p["role"], p["model"]) for p in ps] == [("anchor", "tiny-lstm"), ("match", "tiny-gru"), ("match", "tiny-rnn")]
    assert ps[0]["shown"] == (1, "c", 3)  # tiny-lstm's card names c[3] of layer 1 its quote unit
    assert r.text.count("<h1") == 1 and "<title>Compare models · tiny-lstm c[1][3] · rnnscope</title>" in r.text
    assert 'aria-current="page">Compare</a>' in r.text
    assert '<script src="/static/compare.js" defer></script>' in r.text and "<script>" not in r.text


def test_each_panel_is_coloured_as_the_main_view_colours_its_unit(client):
    ps = panels(page(client, models=["tiny-gru", "tiny-rnn"]).text)
    assert len(ps) == 3
    for p in ps:
        layer, state, unit = p["shown"]
        main = client.get("/", params={"model": p["model"], "layer": layer, "state": state, "unit": unit, "text": TEXT})
        assert main.status_code == 200
        assert p["spans"] == char_spans(main.text), p["model"]
        assert "".join(s.ch for s in p["spans"]) == TEXT
        assert len({s.v for s in p["spans"]}) > 3


def test_the_candidates_are_the_apis_and_the_best_is_shown(client):
    ps = panels(page(client, models=["tiny-gru"]).text)
    api = client.post("/api/v1/match", json={"text": TEXT, "anchor": {**ANCHOR, "layer": 1, "unit": 3},
                                             "models": ["tiny-gru"]}).json()["matches"][0]["units"]
    gru = ps[1]
    assert [pick for _, pick, _ in gru["candidates"]] == [f"{u['layer']}:{u['state']}:{u['unit']}" for u in api]
    assert [score for _, _, score in gru["candidates"]] == [f"r {u['r']:+.3f}" for u in api]
    assert [cur for cur, _, _ in gru["candidates"]] == [True, False, False, False, False]
    assert gru["shown"] == (api[0]["layer"], api[0]["state"], api[0]["unit"])
    assert f"r {api[0]['r']:+.3f} with the anchor" in gru["body"] and "best match of 128 units" in gru["body"]


def test_a_pick_shows_that_candidate_and_stays_in_the_page(client, tiny_models_dir):
    first = panels(page(client, models=["tiny-gru"]).text)[1]
    second = first["candidates"][1][1]
    r = page(client, models=["tiny-gru"], pick=f"tiny-gru:{second}")
    gru = panels(r.text)[1]
    layer, state, unit = second.split(":")
    assert gru["shown"] == (int(layer), state, int(unit))
    assert [cur for cur, _, _ in gru["candidates"]] == [False, True, False, False, False]
    assert "candidate 2 of 5" in gru["body"]
    assert f'<input type="hidden" name="pick" value="tiny-gru:{second}">' in r.text
    # a unit that is no candidate: shown with its own r, which numpy agrees with
    r = page(client, models=["tiny-gru"], pick="tiny-gru:0:r:0")
    gru = panels(r.text)[1]
    assert gru["shown"] == (0, "r", 0) and "picked: not among the best 5" in gru["body"]
    anchor = blocks(tiny_models_dir, "tiny-lstm", TEXT)[(1, "c")][:, 3]
    expected = correlations(anchor, blocks(tiny_models_dir, "tiny-gru", TEXT))[(0, "r", 0)]
    assert f"r {expected:+.3f} with the anchor" in gru["body"]
    # a pick for a model that is not shown is left out; the anchor's panel always shows the anchor
    r = page(client, models=["tiny-gru"], pick=["tiny-rnn:0:h:1", "tiny-lstm:0:h:0"])
    assert [p["shown"] for p in panels(r.text)][0] == (1, "c", 3)


def test_matching_by_probe_shows_each_models_best_unit_for_it(client):
    r = page(client, by="probe", probe="quotes", models=["tiny-gru", "tiny-lstm"])
    assert r.status_code == 200
    ps = panels(r.text)
    assert [(p["role"], p["model"]) for p in ps] == [("probe", "tiny-gru"), ("probe", "tiny-lstm")]
    for p in ps:
        best = client.post("/api/v1/probe", json={"model": p["model"], "text": TEXT, "probe": "quotes"}).json()[0]
        assert p["shown"] == (best["layer"], best["state"], best["unit"])
        assert f"AUC {best['score']:.3f}" in p["body"]
    assert "quotes probe" in r.text and "characters marked" in r.text


def test_the_main_view_links_here_with_its_model_text_and_unit_as_the_anchor(client):
    main = client.get("/", params={"model": "tiny-gru", "layer": "1", "state": "h", "unit": "7", "text": TEXT}).text
    href = unescape(re.search(r'<a class="compare-link" href="([^"]+)" data-carry', main).group(1))
    q = parse_qs(urlsplit(href).query)
    assert urlsplit(href).path == "/compare"
    assert q == {"model": ["tiny-gru"], "layer": ["1"], "state": ["h"], "unit": ["7"], "text": [TEXT]}
    ps = panels(client.get(href).text)
    assert (ps[0]["role"], ps[0]["model"], ps[0]["shown"]) == ("anchor", "tiny-gru", (1, "h", 7))
    long = client.get("/", params={"model": "tiny-gru", "text": "ab " * 700}).text
    href = unescape(re.search(r'<a class="compare-link" href="([^"]+)"', long).group(1))
    assert "text" not in parse_qs(urlsplit(href).query)  # too long for a link: static/app.js carries it from the URL


@pytest.mark.parametrize("params, field, fragment", [
    ({"models": ["nope", "tiny-gru"]}, "models", "unknown model 'nope'"),
    ({"models": ["a", "b", "c", "d"]}, "models", "compare at most 4 models at once, got 5"),
    ({"models": ["tiny-lstm"]}, "models", "tick at least 2 models to compare side by side"),
    ({"model": "nope"}, "model", "unknown model 'nope'"),
    ({"unit": "99"}, "unit", "unit"),
    ({"unit": "x"}, "unit", "unit must be a whole number, got 'x'"),
    ({"layer": "5"}, "layer", "layer"),
    ({"state": "z"}, "state", "'z'"),
    ({"text": ""}, "text", "the text is empty"),
    ({"text": "y" * 20_001}, "text", "the limit is 20,000"),
    ({"text": "a"}, "unit", "at every character of this text, so nothing can match it"),
    ({"by": "magic"}, "by", "match by 'magic' is not one of: unit, probe"),
    ({"by": "probe", "probe": "nope"}, "probe", "unknown probe 'nope'"),
    ({"by": "probe", "probe": "regex"}, "pattern", "the regex probe needs a pattern"),
    ({"by": "probe", "probe": "quotes", "text": "no quotes here"}, "probe", "no character of this text is inside"),
])
def test_every_bad_setting_is_a_message_beside_its_control(client, params, field, fragment):
    models = params.pop("models", ["tiny-gru", "tiny-rnn"])
    r = page(client, models=models, **params)
    assert r.status_code == 422
    assert fragment in err(r.text, field)
    assert "Fix the setting marked above" in r.text and not panels(r.text)
    partial = page(client, headers=HX, models=models, **params)
    assert partial.status_code == 422 and partial.text.startswith('<section id="cmp-result"')
    assert f'<span id="err-{field}" class="err" role="alert" hx-swap-oob="true">' in partial.text
    assert "<html" not in partial.text


@pytest.mark.parametrize("pick, fragment", [
    ("garbage", "pick 'garbage' is not MODEL:LAYER:STATE:UNIT"),
    ("tiny-gru:9:h:0", "pick for tiny-gru: layer"),
    ("tiny-gru:0:c:0", "pick for tiny-gru:"),
    ("tiny-gru:0:h:x", "pick for tiny-gru: unit must be a whole number"),
])
def test_a_bad_pick_is_listed_in_place_of_the_panels(client, pick, fragment):
    r = page(client, models=["tiny-gru"], pick=pick)
    assert r.status_code == 422 and fragment in unescape(r.text) and not panels(r.text)


def test_many_unseen_characters_are_marked_and_noted(client):
    text = 'He said "€€€ ~~~ ok" twice, then "fine".'
    r = page(client, text=text, models=["tiny-gru"])
    gru = panels(r.text)[1]
    unk = [s for s in gru["spans"] if " unk" in s.cls]
    assert [s.ch for s in unk] == list("€€€~~~")
    assert r.text.count(f'title="{UNKNOWN_TITLE}"') >= 12  # both panels mark them
    assert "tiny-gru never saw 6 of these 40 characters (15%" in unescape(gru["body"])


def test_text_is_escaped_everywhere(client):
    text = '<script>alert(1)</script> "hi" & <b>bold</b>'
    r = page(client, text=text, models=["tiny-gru"])
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "<b>bold" not in r.text
    assert "".join(s.ch for s in panels(r.text)[1]["spans"]) == text


def test_a_busy_server_says_so_in_place_with_503(tiny_models_dir):
    with make_client(tiny_models_dir, max_concurrent_traces=1, queue_timeout=0.2) as c:
        with slot_held(c.app.state.service.slots):
            full = c.get("/compare", params={"text": "Nobody traced this.", "models": ["tiny-gru"]})
            partial = c.get("/compare", params={"text": "Nor this one.", "models": ["tiny-gru"]}, headers=HX)
    for r in (full, partial):
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert "the server is busy" in r.text and "The models are not coloured: the server is busy." in r.text
    assert partial.text.startswith('<section id="cmp-result"') and '<form id="cmp-form"' in full.text


def test_a_text_too_long_for_a_link_gets_no_main_view_link_but_keeps_the_neuron_page(client):
    short = panels(page(client, models=["tiny-gru"]).text)[1]["body"]
    assert ">main view</a>" in short and "text=She+said" in short
    long_text = 'He said "yes" and she said "no". ' * 70  # 2,310 characters
    body = panels(page(client, text=long_text, models=["tiny-gru"]).text)[1]["body"]
    assert ">main view</a>" not in body and ">neuron page</a>" in body
