"""HTTP edges: 5,000-digit integers named by field (422, not a field-less 400), HEAD wherever GET is answered,
an HTML 404 page for browsers (JSON for the API and other clients)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.conftest import write_tiny_model
from tests.share.server import running_server

HUGE = "9" * 5000
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def detail(r) -> str:
    assert r.headers["content-type"] == "application/json", r.text[:200]
    return r.json()["detail"]


def post_raw(client, path: str, body: str):
    return client.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


# ---- integers too long to convert ---------------------------------------------------------
@pytest.mark.parametrize("path, body, field", [
    ("/api/v1/trace", '{"model": "tiny-lstm", "text": "ab", "layer": %s}', "layer"),
    ("/api/v1/trace", '{"model": "tiny-lstm", "text": "ab", "units": [1, 2, -%s]}', "units[2]"),
    ("/api/v1/share", '{"text": "ab", "unit": %s}', "unit"),
    ("/api/v1/span", '{"model": "tiny-lstm", "text": "abc", "start": 0, "end": %s}', "end"),
    ("/api/v1/intervene", '{"model": "tiny-lstm", "text": "abc", "layer": 0, "state": "h", "unit": 0, '
                          '"start": %s}', "start"),
    ("/api/v1/gradients", '{"models": ["tiny-lstm"], "text": "abc", "lookback": %s}', "lookback"),
])
def test_a_5000_digit_integer_in_a_body_is_a_422_naming_its_field(client, path, body, field):
    r = post_raw(client, path, body % HUGE)
    assert r.status_code == 422
    assert detail(r) == f"{field} is a 5,000-digit integer; numbers in a request have at most 4,300 digits"


def test_integers_up_to_the_limit_reach_the_field_checks(client):
    r = post_raw(client, "/api/v1/trace", '{"model": "tiny-lstm", "text": "ab", "layer": %s}' % ("9" * 4300))
    assert r.status_code == 422 and detail(r).startswith("layer")


@pytest.mark.parametrize("url, field", [
    (f"/api/v1/neurons/tiny-lstm/0/h/{HUGE}", "unit"),
    (f"/api/v1/neurons/tiny-lstm/{HUGE}/h/0", "layer"),
    (f"/api/v1/generate/stream?model=tiny-lstm&text=ab&seed={HUGE}", "seed"),
])
def test_a_5000_digit_integer_in_a_path_or_query_is_a_422_naming_its_field(client, url, field):
    r = client.get(url)
    assert r.status_code == 422 and field in detail(r)


@pytest.mark.parametrize("url, field", [("/", "unit"), ("/generate", "seed")])
def test_a_5000_digit_integer_in_a_page_query_is_shown_beside_its_control(client, url, field):
    r = client.get(url, params={field: HUGE, "text": "ab"})
    assert r.status_code == 422 and "whole number" in r.text


# ---- HEAD -----------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["/", "/healthz", "/api/v1/models", "/docs", "/openapi.json", "/static/app.css",
                                 "/generate", "/export.csv?model=tiny-lstm&text=ab"])
def test_head_answers_wherever_get_does_with_the_same_headers_and_no_body(client, url):
    got = client.get(url, headers={"Accept-Encoding": "identity"})
    head = client.head(url, headers={"Accept-Encoding": "identity"})
    assert got.status_code == 200 and head.status_code == 200, (url, head.status_code)
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    # the GET's length (the main page holds timings, so two renders may differ by a few bytes)
    assert int(head.headers["content-length"]) == pytest.approx(len(got.content), abs=64)
    assert "content-security-policy" in head.headers  # the security headers as for a GET


def test_head_keeps_the_get_status_where_get_is_not_answered(client):
    assert client.head("/api/v1/trace").status_code == 405  # POST only: GET is a 405 too
    r = client.head("/no/such/page", headers=HTML)
    assert r.status_code == 404 and r.content == b"" and r.headers["content-type"].startswith("text/html")


def test_head_on_the_generation_stream_sends_its_headers_and_does_not_run_it(client):
    url = "/api/v1/generate/stream?model=tiny-lstm&text=ab&n=2000"
    t0 = time.perf_counter()
    r = client.head(url)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"].startswith("text/event-stream")
    print(f"HEAD on a 2,000-character stream: {time.perf_counter() - t0:.2f} s")
    assert client.get("/healthz").status_code == 200  # the server is free again


# ---- 404 --------------------------------------------------------------------------------------
def test_an_unknown_page_gets_an_html_404_in_the_sites_layout(client):
    r = client.get("/no/such/<page>", headers=HTML)
    assert r.status_code == 404 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>page not found · rnnscope</title>" in r.text and '<header class="top">' in r.text
    assert "<code>/no/such/&lt;page&gt;</code>" in r.text and "<page>" not in r.text  # escaped
    assert "content-security-policy" in r.headers


@pytest.mark.parametrize("url, headers", [
    ("/api/v1/nope", HTML),  # the API: JSON even for a browser
    ("/no/such/page", {"Accept": "application/json"}),
    ("/no/such/page", {"Accept": "*/*"}),  # curl and most scripts
    ("/no/such/page", {}),
])
def test_the_api_and_non_html_clients_keep_the_json_404(client, url, headers):
    r = client.get(url, headers=headers)
    assert r.status_code == 404 and detail(r) == "Not Found"


def test_other_http_errors_keep_fastapis_json(client):
    r = client.get("/api/v1/trace", headers=HTML)  # POST only
    assert r.status_code == 405 and detail(r) == "Method Not Allowed" and r.headers["allow"] == "POST"


# ---- a real server (uvicorn + h11) -----------------------------------------------------------
@pytest.mark.slow
def test_head_against_a_real_server(tmp_path):
    write_tiny_model(tmp_path / "models" / "tiny-lstm", "lstm", seed=4)
    with running_server(tmp_path / "models", tmp_path / "data", tmp_path / "serve.log") as base:
        for path in ("/", "/healthz"):
            with urllib.request.urlopen(urllib.request.Request(base + path, method="HEAD"), timeout=30) as r:
                assert r.status == 200 and r.read() == b"" and int(r.headers["Content-Length"]) > 0
        with urllib.request.urlopen(base + "/healthz", timeout=30) as r:
            assert json.loads(r.read())["status"] == "ok"
