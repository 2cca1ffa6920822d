"""A catalogue of hostile and odd inputs, each with the answer it must get: a clear, specific 4xx, or a
correct 200 where the input is legitimate text (emoji, right-to-left, NUL, whitespace), never a 5xx.

The tiny models' vocabulary is tests.conftest.VOCAB_TEXT: anything else is "unseen" and must be marked so.
"""

from __future__ import annotations

import json
import re
import time
from html import unescape

import pytest

from tests.conftest import VOCAB_TEXT, char_spans

from .conftest import HX, make_client

TRACE = "/api/v1/trace"
ONE = {"model": "tiny-lstm", "layer": 0, "state": "h", "units": [0]}  # one unit: small answers
LEAKS = ("root:x:", "BaseSettings", "import ", "[project]")  # bits of files outside what is served


def detail(r) -> str:
    assert r.headers["content-type"].startswith("application/json"), r.text[:200]
    d = r.json()["detail"]
    assert isinstance(d, str)
    return d


def page_error(r, field: str) -> str:
    """The inline message an htmx request put beside one control."""
    m = re.search(rf'<span id="err-{field}"[^>]*>(.*?)</span>', r.text, re.S)
    assert m, r.text[:300]
    return unescape(m.group(1))


def cells(html: str) -> list[tuple[str, str]]:
    """(classes, character) of every coloured character on a page or partial."""
    return [(s.cls, s.ch) for s in char_spans(html)]


def unseen(text: str) -> list[int]:
    return [i for i, ch in enumerate(text) if ch not in VOCAB_TEXT]


def raw_json(client, path: str, body: bytes):
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


# ---- empty, whitespace, size --------------------------------------------------------------
def test_empty_text_is_a_clear_422_everywhere(client):
    assert client.post(TRACE, json={**ONE, "text": ""}).status_code == 422
    assert detail(client.post(TRACE, json={**ONE, "text": ""})).startswith("the text is empty")
    r = client.get("/", params={"text": ""}, headers=HX)
    assert r.status_code == 422 and page_error(r, "text").startswith("the text is empty")
    r = client.post("/api/v1/share", json={"model": "tiny-lstm", "text": ""})
    assert r.status_code == 422 and "empty" in detail(r)


def test_whitespace_only_text_is_legitimate_and_every_character_gets_a_value(client):
    text = " \t\n  \n"
    r = client.post(TRACE, json={**ONE, "text": text})
    assert r.status_code == 200
    body = r.json()
    assert body["text"] == text and body["length"] == len(text)
    assert len(body["layers"][0]["states"]["h"]) == len(text) and body["unknown_positions"] == unseen(text)
    page = client.get("/", params={"text": text}, headers=HX)
    assert page.status_code == 200 and [ch for _, ch in cells(page.text)] == list(text)


def test_a_1mb_body_is_refused_before_parsing_with_the_limit(client):
    big = json.dumps({**ONE, "text": "a" * 1_000_000}).encode()
    r = raw_json(client, TRACE, big)
    assert r.status_code == 413
    assert re.fullmatch(r"the request body is 1,000,\d{3} bytes; the limit is [\d,]+: send a shorter text", detail(r))


def test_a_1mb_chunked_body_without_length_is_refused_too(client):
    def chunks():
        yield b'{"model": "tiny-lstm", "text": "'
        for _ in range(100):
            yield b"a" * 10_000
        yield b'"}'

    r = client.post(TRACE, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "the request body is over" in detail(r)


def test_100k_newlines_over_the_limit_say_the_numbers_and_within_a_raised_limit_trace(client, tiny_models_dir,
                                                                                        tmp_path):
    r = client.post(TRACE, json={**ONE, "text": "\n" * 100_000})
    assert r.status_code == 413
    assert detail(r) == "the text is 100,000 characters long; the limit is 20,000: shorten it"
    page = client.get("/", params={"text": "\n" * 20_001}, headers=HX)
    assert page.status_code == 422 and "20,001 characters long; the limit is 20,000" in page_error(page, "text")
    with make_client(tiny_models_dir, tmp_path / "d2", max_chars=100_000) as big:
        ok = big.post(TRACE, json={**ONE, "text": "\n" * 100_000, "topk": 0})
        assert ok.status_code == 200 and ok.json()["length"] == 100_000
        assert len(ok.json()["layers"][0]["states"]["h"]) == 100_000


# ---- odd but legitimate characters ----------------------------------------------------------
ODD_TEXTS = {
    "nul": "a\x00b\x00",
    "rtl_and_override": 'שלום, "she said" \u202eevil\u202c مرحبا',
    "combining": "e\u0301 a\u0300\u0323 n\u0303o",
    "emoji": "hi 👩\u200d👩\u200d👧 🏳️\u200d🌈 ok!",
    "controls": "tab\there\x1b[31mred\x7f\r\n",
}


@pytest.mark.parametrize("name", list(ODD_TEXTS))
def test_odd_characters_are_preserved_one_position_each_and_unseen_ones_marked(client, name):
    text = ODD_TEXTS[name]
    r = client.post(TRACE, json={**ONE, "text": text})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["text"] == text and body["length"] == len(text)  # one position per code point, nothing dropped
    assert len(body["layers"][0]["states"]["h"]) == len(text)
    assert body["unknown_positions"] == unseen(text) and body["unknown_positions"]
    page = client.get("/", params={"text": text}, headers=HX)
    assert page.status_code == 200
    want = text.replace("\r\n", "\n")  # the page's form normalises line ends, as browsers do
    shown = cells(page.text)
    assert [ch for _, ch in shown] == list(want)
    assert [i for i, (cls, _) in enumerate(shown) if "unk" in cls] == unseen(want)


def test_lone_surrogates_are_refused_by_name_in_every_json_route(client):
    for path, body in [
        (TRACE, b'{"model": "tiny-lstm", "text": "a\\ud800b"}'),
        (TRACE, b'{"model": "tiny-\\udfff", "text": "ab"}'),
        ("/api/v1/share", b'{"text": "x", "mode": "\\ud83d"}'),
        ("/api/v1/probe", b'{"model": "tiny-lstm", "text": "\\udc00", "probe": "quotes"}'),
    ]:
        r = raw_json(client, path, body)
        assert r.status_code == 422, (path, r.text)
        assert "unpaired UTF-16 surrogate" in detail(r) and "\\ud800" in detail(r)
    # a proper pair (one emoji) is fine
    r = raw_json(client, TRACE, b'{"model": "tiny-lstm", "text": "\\ud83d\\ude00!", "layer": 0, "state": "h"}')
    assert r.status_code == 200 and r.json()["text"] == "\U0001f600!"


def test_bytes_that_are_not_utf8_are_refused_by_offset(client):
    r = raw_json(client, TRACE, b'{"model": "tiny-lstm", "text": "a\xffb"}')
    assert r.status_code == 422 and detail(r) == ("the request body is not UTF-8 text (byte 0xff at offset 33): "
                                                  "send JSON in UTF-8")
    # in a URL, broken %-escapes decode to U+FFFD (an unseen character), not an error
    r = client.get("/?text=a%FFb", headers=HX)
    assert r.status_code == 200 and [ch for _, ch in cells(r.text)] == ["a", "\ufffd", "b"]


# ---- numbers ------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, fragment", [
    ({"layer": 10**30}, "layer 1000000000000000000000000000000 is out of range: this model has layers 0..1"),
    ({"layer": -1}, "layer: Input should be greater than or equal to 0"),  # in the schema
    ({"units": [2**70]}, f"unit {2**70} is out of range: this model has units 0..15"),
    ({"units": [-3]}, "units.0: Input should be greater than or equal to 0"),
    ({"units": []}, "units: List should have at least 1 item after validation, not 0"),
    ({"units": list(range(5000))}, "units: List should have at most 4096 items"),
    ({"topk": 10**9}, "topk: Input should be less than or equal to 100"),
    ({"topk": -1}, "topk: Input should be greater than or equal to 0"),
    ({"layer": 1.5}, "layer: Input should be a valid integer"),
    ({"layer": "0; DROP TABLE shares"}, "layer: Input should be a valid integer"),
])
def test_huge_negative_and_malformed_indices_in_the_api(client, extra, fragment):
    r = client.post(TRACE, json={"model": "tiny-lstm", "text": "ab", **extra})
    assert r.status_code == 422 and fragment in detail(r), r.text[:300]


@pytest.mark.parametrize("params, field, fragment", [
    ({"unit": "9" * 40}, "unit", "out of range"),
    ({"unit": "-1"}, "unit", "unit -1 is out of range"),
    ({"layer": "-1"}, "layer", "layer -1 is out of range"),
    ({"layer": "1e9"}, "layer", "layer must be a whole number, got '1e9'"),
    ({"unit2": "-5"}, "compare", "compare with: unit -5 is out of range"),
    ({"state": "../../h"}, "state", "state '../../h' does not exist"),
])
def test_huge_negative_and_malformed_indices_in_the_page(client, params, field, fragment):
    r = client.get("/", params={"text": "ab", **params}, headers=HX)
    assert r.status_code == 422 and fragment in page_error(r, field)


def test_huge_and_negative_indices_in_neuron_urls(client):
    r = client.get("/api/v1/neurons/tiny-lstm/0/h/99999999999999999999")
    assert r.status_code == 422 and "unit 99999999999999999999 is out of range" in detail(r)
    r = client.get("/neuron/tiny-lstm/0/h/-1")
    assert r.status_code == 404 and "unit -1 is out of range" in r.text
    r = client.get("/neuron/tiny-lstm/99999999999999999999/h/0")
    assert r.status_code == 404 and "layer 99999999999999999999 is out of range" in r.text


@pytest.mark.parametrize("path, body, constant", [
    (TRACE, b'{"model": "tiny-lstm", "text": "ab", "topk": NaN}', "NaN"),
    (TRACE, b'{"model": "tiny-lstm", "text": "ab", "layer": Infinity}', "Infinity"),
    ("/api/v1/span", b'{"model": "tiny-lstm", "text": "abc", "start": 0, "end": 1, "threshold": -Infinity}',
     "-Infinity"),
    ("/api/v1/share", b'{"text": "ab", "unit": NaN}', "NaN"),
])
def test_nan_and_infinity_are_not_json_numbers(client, path, body, constant):
    r = raw_json(client, path, body)
    assert r.status_code == 422
    assert detail(r) == f"the request body holds {constant}, which is not a JSON number: send a finite number"


def test_numbers_that_overflow_to_infinity_are_refused_by_field(client):
    r = raw_json(client, TRACE, b'{"model": "tiny-lstm", "text": "ab", "layer": 1e999}')
    assert r.status_code == 422 and detail(r) == "layer: Input should be a valid integer"
    r = raw_json(client, "/api/v1/span", b'{"model": "tiny-lstm", "text": "abc", "start": 0, "end": 1, '
                                         b'"threshold": 1e999}')
    assert r.status_code == 422 and "threshold" in detail(r) and "finite" in detail(r)


# ---- shapes and content types -------------------------------------------------------------
@pytest.mark.parametrize("content_type, sent", [
    ("text/plain", "text/plain"),
    ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
    ("multipart/form-data; boundary=x", "multipart/form-data"),
    ("application/xml", "application/xml"),
    (None, "a body without a Content-Type"),
])
def test_api_bodies_that_are_not_json_get_415(client, content_type, sent):
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post(TRACE, content=json.dumps({**ONE, "text": "ab"}).encode(), headers=headers)
    assert r.status_code == 415
    assert detail(r) == f"send the request body as JSON (Content-Type: application/json), not {sent}"


def test_json_with_a_charset_or_a_json_suffix_is_accepted(client):
    for kind in ("application/json; charset=utf-8", "application/vnd.api+json"):
        r = client.post(TRACE, content=json.dumps({**ONE, "text": "ab"}).encode(), headers={"Content-Type": kind})
        assert r.status_code == 200, (kind, r.text[:200])


def test_the_share_button_form_refuses_json(client):
    r = client.post("/share", json={"text": "ab"}, headers=HX)
    assert r.status_code == 415 and "send the view as a form" in r.text


@pytest.mark.parametrize("body, fragment", [
    (b"[" * 100_000 + b"]" * 100_000, "the request body nests deeper than 32 levels"),
    (b'{"model": "tiny-lstm", "text": "ab", "units": ' + b"[" * 40 + b"]" * 40 + b"}", "nests deeper than 32"),
    (b'{"model": "tiny-lstm", "text": ', "the request body is not valid JSON"),
    (b'"just a string"', "the request body must be a JSON object"),
    (b'{"model": "tiny-lstm", "text": "ab", "evil": 1}', "evil is not a field of this request"),
    (b'{"model": "' + b"m" * 1000 + b'", "text": "ab"}', "model: String should have at most 128 characters"),
])
def test_malformed_json_shapes_get_a_specific_422(client, body, fragment):
    r = raw_json(client, TRACE, body)
    assert r.status_code == 422 and fragment in detail(r), r.text[:300]


# ---- path traversal -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "/etc/passwd", "tiny-lstm/../tiny-gru", "%2e%2e",
                                  "tiny-lstm\x00", ".tiny-lstm", "TINY-LSTM"])
def test_model_names_never_become_paths(client, name):
    r = client.post(TRACE, json={"model": name, "text": "ab"})
    assert r.status_code == 404 and detail(r).startswith(f"unknown model {name!r}; installed models: ")
    page = client.get("/", params={"model": name, "text": "ab"}, headers=HX)
    assert page.status_code == 422 and "unknown model" in page_error(page, "model")
    r = client.get("/export.json", params={"model": name, "text": "ab"})
    assert r.status_code == 404 and "unknown model" in detail(r)


@pytest.mark.parametrize("path", [
    "/s/..%2F..%2Fetc%2Fpasswd", "/s/....%2F%2F....%2F%2Fetc", "/api/v1/share/..%2F..%2Fetc%2Fpasswd",
    "/api/v1/share/%2e%2e%2f%2e%2e%2fapp", "/neuron/..%2F..%2Fetc/0/h/0", "/neuron/%2e%2e/0/h/0",
    "/api/v1/neurons/..%2F..%2Fetc%2Fpasswd/0/h/0", "/api/v1/neurons/%2e%2e/0/h/0",
    "/api/v1/saturation/..%2F..%2Fetc%2Fpasswd?text=ab", "/static/..%2F..%2Fapp%2Fconfig.py",
    "/static/../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml", "/s/aaaaaaaaaaaa/../../../etc/passwd",
])
def test_traversal_in_urls_is_a_404_that_leaks_nothing(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert not any(leak in r.text for leak in LEAKS)


# ---- script injection ----------------------------------------------------------------------
XSS = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def no_live_markup(html: str) -> None:
    assert "<script>alert" not in html and "<img src=x" not in html and "onerror=alert(2)>" not in html


def test_script_in_the_text_is_shown_as_text(client):
    for headers in (HX, {}):
        r = client.get("/", params={"text": XSS}, headers=headers)
        assert r.status_code == 200
        no_live_markup(r.text)
        assert [ch for _, ch in cells(r.text)] == list(XSS)


@pytest.mark.parametrize("params, field", [({"model": XSS}, "model"), ({"unit": XSS}, "unit"),
                                           ({"mode": XSS}, "mode"), ({"state": XSS}, "state"),
                                           ({"unit2": XSS}, "compare")])
def test_script_in_a_setting_comes_back_escaped_in_its_message(client, params, field):
    for headers in (HX, {}):
        r = client.get("/", params={"text": "ab", **params}, headers=headers)
        assert r.status_code == 422
        no_live_markup(r.text)
        assert "&lt;script&gt;" in r.text and "<script>alert(1)" in page_error(r, field)


@pytest.mark.parametrize("path", ["/s/%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/s/%3Cimg%20src%3Dx%20onerror%3Dalert(2)%3E",
                                  "/neuron/%3Cimg%20src%3Dx%20onerror%3Dalert(2)%3E/0/h/0",
                                  "/neuron/tiny-lstm/0/%3Cimg%20src%3Dx%20onerror%3Dalert(2)%3E/0"])
def test_script_in_share_ids_and_neuron_urls_is_escaped(client, path):
    r = client.get(path)
    assert r.status_code == 404
    no_live_markup(r.text)


def test_script_in_api_errors_is_inert_json(client):
    r = client.post(TRACE, json={"model": XSS, "text": "ab"})
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff" and XSS in detail(r)


def test_a_shared_view_with_script_reopens_escaped(client):
    r = client.post("/api/v1/share", json={"model": "tiny-lstm", "text": XSS, "note": "<b>x</b>"})
    assert r.status_code == 200, r.text
    page = client.get(f"/s/{r.json()['id']}")
    assert page.status_code == 200
    no_live_markup(page.text)
    assert "<b>x</b>" not in page.text


# ---- regular expressions --------------------------------------------------------------------
@pytest.mark.parametrize("pattern, text", [("(a+)+$", "a" * 5000 + "!"), ("(x+x+)+y", "x" * 3000),
                                           ("(a|aa)+$", "a" * 4000 + "b"), ("^(([a-z])+.)+[A-Z]([a-z])+$", "a" * 3000)])
def test_catastrophic_regex_probes_are_cut_off_with_a_clear_422(client, pattern, text):
    t0 = time.monotonic()
    r = client.post("/api/v1/probe", json={"model": "tiny-lstm", "text": text, "probe": "regex", "pattern": pattern})
    if r.status_code == 404 and "unknown model" not in r.text:
        pytest.skip("this build has no probe API")
    assert time.monotonic() - t0 < 15
    assert r.status_code == 422 and "took longer than" in detail(r) and "simplify it" in detail(r), r.text[:300]


def test_invalid_regex_probes_say_why(client):
    r = client.post("/api/v1/probe", json={"model": "tiny-lstm", "text": "abc", "probe": "regex", "pattern": "(["})
    if r.status_code == 404 and "unknown model" not in r.text:
        pytest.skip("this build has no probe API")
    assert r.status_code == 422 and detail(r)
