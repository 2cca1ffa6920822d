"""HTML page: full page vs htmx partial, inline errors, escaping, headers, URL state, trace cache."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest

from app.trace.views import DEFAULT_TEXT

from tests.app.conftest import make_client
from tests.conftest import char_spans

HX = {"HX-Request": "true"}
def spans(html: str) -> list[tuple[str, float, str]]:
    """(classes, colour position, character) for every character span."""
    return [(s.cls, s.v, s.ch) for s in char_spans(html)]


def test_fresh_load_is_a_full_page_on_the_cards_quote_unit(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert html.startswith("<!doctype html>") and '<form id="controls"' in html and '<section id="view"' in html
    # the tiny-lstm card names layer 1 / c / unit 3 as its quote unit
    assert '<option value="1" selected>' in html and '<option value="c"' in html and 'value="3"' in html
    assert "layer 1 · c · unit 3" in html
    chars = spans(html)
    assert "".join(ch for _, _, ch in chars) == DEFAULT_TEXT and '"' in DEFAULT_TEXT
    assert len({v for _, v, _ in chars}) > 10  # the colours vary along the text
    for option in ("tiny-lstm · LSTM 2×16 · 6.25 bpc", "tiny-gru · GRU 2×16", "tiny-rnn · RNN 1×8"):
        assert option in html
    assert 'src="/static/vendor/htmx.min.js"' in html


def test_state_picker_offers_the_cells_states(client):
    html = client.get("/", params={"model": "tiny-gru"}).text
    state_select = html.split('<select id="state"')[1].split("</select>")[0]
    assert re.findall(r'<option value="([a-z]+)"', state_select) == ["h", "r", "z", "n"]
    assert "layer 0 · h · unit 0" in html  # no quote unit on this card


def test_htmx_request_gets_only_the_view_block_and_oob_error_slots(client):
    r = client.get("/", params={"model": "tiny-lstm", "layer": "0", "state": "h", "unit": "2", "text": "ab"}, headers=HX)
    assert r.status_code == 200
    assert "<html" not in r.text and "<form" not in r.text
    assert r.text.startswith("<title>tiny-lstm · layer 0 · h · unit 2 · rnnscope</title><section id=\"view\"")
    assert r.text.count('hx-swap-oob="true"') == 7  # every inline message slot is cleared (incl. compare)
    assert r.headers["vary"].startswith("HX-Request")
    assert "HX-Push-Url" not in r.headers  # htmx pushes the request URL itself (hx-push-url)


def test_history_restore_gets_the_full_page_even_with_hx_request(client):
    r = client.get("/", params={"text": "ab"}, headers={**HX, "HX-History-Restore-Request": "true"})
    assert r.text.startswith("<!doctype html>")


def test_the_request_url_htmx_pushes_reproduces_the_view_when_opened_fresh(client):
    params = {"model": "tiny-gru", "layer": "1", "state": "z", "unit": "7", "mode": "surprisal", "text": 'x "q" y\nz'}
    partial = client.get("/", params=params, headers=HX)
    full = client.get("/", params=params)
    assert full.status_code == 200 and full.text.startswith("<!doctype html>")
    assert spans(full.text) == spans(partial.text)
    assert '<option value="tiny-gru" data-layers="2" data-hidden="16" data-states="h r z n" selected>' in full.text
    assert '<option value="1" selected>' in full.text
    assert re.search(r'<option value="z" title="[^"]*" selected>', full.text)
    assert 'value="surprisal" checked' in full.text
    assert '<textarea id="text" name="text" rows="5" spellcheck="false" autocomplete="off" aria-describedby="err-text">\nx &#34;q&#34; y\nz</textarea>' in full.text


def test_neuron_layer_and_state_changes_recolour_from_the_cache(client, service):
    base = {"model": "tiny-lstm", "layer": "0", "state": "h", "text": 'He said "yes".'}
    first = client.get("/", params={**base, "unit": "0"}, headers=HX)
    assert "traced in" in first.text
    runs = service.traces_run
    hits = service.cache.hits
    views = [client.get("/", params={**base, "unit": str(u)}, headers=HX) for u in (1, 2)]
    views.append(client.get("/", params={**base, "layer": "1", "state": "kept", "unit": "5"}, headers=HX))
    views.append(client.get("/", params={**base, "unit": "1", "mode": "surprisal"}, headers=HX))
    assert service.traces_run == runs  # the model did not run again
    assert service.cache.hits == hits + 4
    assert all("re-coloured from cache" in v.text for v in views)
    colours = [[v for _, v, _ in spans(r.text)] for r in [first, *views]]
    assert colours[0] != colours[1] != colours[2]


def test_every_response_says_how_long_the_server_took(client):
    """Server-Timing: the server's own time, so a slow page can be told from a slow network."""
    seen = []
    for r in (client.get("/", params={"model": "tiny-lstm", "text": 'He said "no".'}, headers=HX),
              client.get("/", params={"model": "tiny-lstm", "text": 'He said "no".', "unit": "4"}, headers=HX),
              client.get("/api/v1/models"), client.get("/no-such-page")):
        m = re.fullmatch(r"app;dur=([0-9]+\.[0-9])", r.headers.get("server-timing", ""))
        assert m, (r.request.url, r.headers.get("server-timing"))
        seen.append(float(m.group(1)))
    assert seen[0] > 0  # a first trace runs the model: it cannot take no time


def test_long_texts_cache_one_layer_and_state_so_neuron_steps_stay_free(tiny_models_dir):
    # a tiny cache: the whole trace of this text does not fit, one (layer, state) does
    with make_client(tiny_models_dir, cache_bytes=200_000, full_trace_share=0.5) as c:
        service = c.app.state.service
        text = "abc def. " * 100
        assert not service.fits_whole(service.registry.get("tiny-lstm"), len(text))
        c.get("/", params={"model": "tiny-lstm", "layer": "1", "state": "c", "unit": "0", "text": text}, headers=HX)
        runs = service.traces_run
        r = c.get("/", params={"model": "tiny-lstm", "layer": "1", "state": "c", "unit": "9", "text": text}, headers=HX)
        assert service.traces_run == runs and "re-coloured from cache" in r.text
        c.get("/", params={"model": "tiny-lstm", "layer": "0", "state": "c", "unit": "9", "text": text}, headers=HX)
        assert service.traces_run == runs + 1


def test_a_rewritten_checkpoint_is_reloaded_and_never_served_from_stale_cache(tmp_path):
    from tests.conftest import write_tiny_model

    write_tiny_model(tmp_path / "m", seed=0)
    with make_client(tmp_path, default_model="m") as c:
        before = spans(c.get("/", params={"text": "abc abc", "unit": "1"}).text)
        write_tiny_model(tmp_path / "m", seed=5)
        after = spans(c.get("/", params={"text": "abc abc", "unit": "1"}).text)
        assert before != after


@pytest.mark.parametrize(
    "params, field, message",
    [
        ({"text": ""}, "text", "the text is empty"),
        ({"model": "missing"}, "model", "unknown model &#39;missing&#39;; installed models: tiny-gru, tiny-lstm, tiny-rnn"),
        ({"model": "../../etc"}, "model", "unknown model"),
        ({"layer": "2"}, "layer", "layer 2 is out of range: this model has layers 0..1"),
        ({"layer": "one"}, "layer", "layer must be a whole number, got &#39;one&#39;"),
        ({"unit": "16"}, "unit", "unit 16 is out of range: this model has units 0..15"),
        ({"unit": "-3"}, "unit", "unit -3 is out of range"),
        ({"unit": "2.5"}, "unit", "unit must be a whole number"),
        ({"model": "tiny-gru", "state": "c"}, "state", "state &#39;c&#39; does not exist in a gru model"),
        ({"mode": "rainbow"}, "mode", "mode &#39;rainbow&#39; is not one of: neuron, surprisal"),
    ],
)
def test_bad_settings_show_inline_and_keep_the_previous_view(client, params, field, message):
    r = client.get("/", params=params, headers=HX)
    assert r.status_code == 422
    assert r.headers["HX-Reswap"] == "none" and r.headers["HX-Push-Url"] == "false"  # view and URL kept
    assert "<section" not in r.text
    slot = re.search(rf'<span id="err-{field}"[^>]*>(.*?)</span>', r.text).group(1)
    assert message in slot
    full = client.get("/", params=params)  # a fresh load says the same beside the control
    assert full.status_code == 422 and message in full.text and "<form" in full.text


def test_text_over_the_cap_is_refused_inline(tiny_models_dir):
    with make_client(tiny_models_dir, max_chars=5) as c:
        r = c.get("/", params={"text": "abcdef"}, headers=HX)
        assert r.status_code == 422
        assert "the text is 6 characters long; the limit is 5" in r.text
        assert c.get("/", params={"text": "abcde"}, headers=HX).status_code == 200


XSS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "</textarea><script>x</script>", "'-alert(1)-'"]


@pytest.mark.parametrize("payload", XSS)
def test_user_text_is_escaped_everywhere(client, payload):
    for headers in ({}, HX):
        r = client.get("/", params={"text": payload}, headers=headers)
        assert r.status_code == 200
        assert "<script>alert" not in r.text and "<img" not in r.text and "<script>x" not in r.text
        assert "".join(ch for _, _, ch in spans(r.text)) == payload
        data = re.search(r"data-trace='([^']*)'", r.text)  # stays inside its single-quoted attribute
        assert len(json.loads(unescape(data.group(1)))["v"]) == len(payload)


@pytest.mark.parametrize("payload", XSS)
def test_url_parameters_are_escaped_in_messages(client, payload):
    for name in ("model", "layer", "unit", "state", "mode"):
        r = client.get("/", params={name: payload})
        assert r.status_code == 422
        assert "<script>alert" not in r.text and "<img" not in r.text and "<script>x" not in r.text


def test_no_inline_script_and_security_headers(client):
    for path in ("/", "/docs", "/api/v1/models", "/healthz", "/static/app.css"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
        assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    html = client.get("/").text
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag
    assert not re.search(r"<[^>]+\son[a-z]+=", html)  # no inline event handlers either


def test_newlines_spaces_and_unseen_characters_are_kept_and_marked(client):
    text = "a b\n~€"
    chars = spans(client.get("/", params={"text": text}, headers=HX).text)
    assert [ch for _, _, ch in chars] == list(text)
    classes = {ch: cls for cls, _, ch in chars}
    assert "nl" in classes["\n"] and "unk" in classes["~"] and "unk" in classes["€"] and "unk" not in classes["a"]
    html = client.get("/", params={"text": text}).text
    assert 'title="the model never saw this character' in html


def test_surprisal_mode_colours_by_surprisal(client):
    r = client.get("/", params={"text": "hello there", "mode": "surprisal"}, headers=HX)
    assert "surprisal of each character" in r.text and "mode-surprisal" in r.text
    cells = spans(r.text)
    values = [v for _, v, _ in cells]
    assert all(0.0 <= v <= 1.0 for v in values) and len(set(values)) > 3
    assert "na" in cells[0][0] and "na" not in cells[-1][0]  # nothing predicts the first character
    surprisal = client.post("/api/v1/trace", json={"model": "tiny-lstm", "text": "hello there", "units": [0],
                                                    "layer": 0, "state": "h"}).json()["surprisal_bits"]
    # character t is coloured by how surprising it was: the trace's surprisal at t-1, over the 8-bit cap
    assert values[1:] == pytest.approx([min(s / 8, 1) for s in surprisal[:-1]], abs=0.01 + 1e-9)  # levels: 0.02 steps


def test_crlf_from_form_posts_becomes_newline(client):
    chars = spans(client.get("/", params={"text": "a\r\nb"}, headers=HX).text)
    assert [ch for _, _, ch in chars] == ["a", "\n", "b"]


def test_page_says_how_to_train_when_no_models_are_installed(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with make_client(tmp_path) as c:
        r = c.get("/")
        assert r.status_code == 200
        assert "No models are installed" in r.text and "rnnscope train" in r.text
        assert "broken" in r.text and "corrupt" in r.text
        assert c.get("/api/v1/models").json() == []
        r = c.post("/api/v1/trace", json={"model": "austen-lstm", "text": "a"})
        assert r.status_code == 404 and r.json()["detail"] == "unknown model 'austen-lstm': no models are installed"


def test_static_htmx_is_served_from_the_vendor_folder(client):
    r = client.get("/static/vendor/htmx.min.js")
    assert r.status_code == 200 and "htmx" in r.text[:2000]
