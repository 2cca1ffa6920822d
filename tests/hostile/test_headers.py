"""Security headers on every kind of response the app makes: pages, htmx partials, API JSON, static files,
errors (404, 405, 413, 415, 422, 429, 503, 500), share pages, downloads, the preview image, streams, docs."""

from __future__ import annotations

import threading

import pytest

from .conftest import HX, make_client
from .test_limits import occupy_every_slot

REQUIRED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def check(r) -> None:
    for name, value in REQUIRED.items():
        assert r.headers.get(name) == value, (r.request.url, name, r.headers.get(name))
    csp = r.headers.get("content-security-policy", "")
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'",
                      "base-uri 'none'"):
        assert directive in csp, (r.request.url, csp)
    assert "unsafe-eval" not in csp and "script-src 'self' 'unsafe-inline'" not in csp
    assert "camera=()" in r.headers.get("permissions-policy", "")


@pytest.fixture()
def app_client(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "d", rate_limit=1000, max_body_bytes=4096,
                     max_concurrent_traces=1, queue_timeout=0.2) as c:
        @c.app.get("/_test/boom", include_in_schema=False)
        def boom() -> None:  # an unexpected exception: the one path Starlette answers outside the middleware
            raise RuntimeError("boom")

        yield c


def test_every_response_type_carries_the_security_headers(app_client):
    c = app_client
    text = {"text": 'She said "hi".'}
    share = c.post("/api/v1/share", json={"model": "tiny-lstm", **text})
    assert share.status_code == 200
    sid = share.json()["id"]
    cases = {
        "page": (c.get("/", params=text), 200),
        "htmx partial": (c.get("/", params=text, headers=HX), 200),
        "page refusal (htmx)": (c.get("/", params={"unit": "-1"}, headers=HX), 422),
        "api json": (c.get("/api/v1/models"), 200),
        "api trace": (c.post("/api/v1/trace", json={"model": "tiny-lstm", "text": "ab", "layer": 0}), 200),
        "api 404": (c.post("/api/v1/trace", json={"model": "nope", "text": "ab"}), 404),
        "api 422": (c.post("/api/v1/trace", json={"model": "tiny-lstm", "text": ""}), 422),
        "body 413": (c.post("/api/v1/trace", json={"model": "tiny-lstm", "text": "a" * 5000}), 413),
        "body 415": (c.post("/api/v1/trace", content=b"{}", headers={"Content-Type": "text/plain"}), 415),
        "body 422 NaN": (c.post("/api/v1/trace", content=b'{"topk": NaN}', headers={"Content-Type": "application/json"}), 422),
        "route 404": (c.get("/no/such/page"), 404),
        "method 405": (c.delete("/api/v1/models"), 405),
        "static css": (c.get("/static/app.css"), 200),
        "static js": (c.get("/static/app.js"), 200),
        "static 404": (c.get("/static/nope.js"), 404),
        "healthz": (c.get("/healthz"), 200),
        "openapi": (c.get("/openapi.json"), 200),
        "docs": (c.get("/docs"), 200),
        "share page": (c.get(f"/s/{sid}"), 200),
        "share 404 page": (c.get("/s/aaaaaaaaaaaa"), 404),
        "share api": (c.get(f"/api/v1/share/{sid}"), 200),
        "share button": (c.post("/share", data={"model": "tiny-lstm", **text}, headers=HX), 200),
        "preview svg": (c.get(f"/s/{sid}/preview.svg"), 200),
        "export html": (c.get("/export.html", params=text), 200),
        "export csv": (c.get("/export.csv", params=text), 200),
        "export json": (c.get("/export.json", params=text), 200),
        "neuron page": (c.get("/neuron/tiny-lstm/0/h/1"), 200),
        "neuron 404": (c.get("/neuron/tiny-lstm/0/h/99"), 404),
        "stream": (c.get("/api/v1/generate/stream", params={"model": "tiny-lstm", "text": "ab", "n": "3"}), 200),
        "500": (c.get("/_test/boom"), 500),
    }
    for name, (r, status) in cases.items():
        assert r.status_code == status, (name, r.status_code, r.text[:200])
        check(r)
    assert cases["500"][0].json() == {"detail": "internal error: the server log has the details"}

    release = occupy_every_slot(c.app.state.service)
    try:
        for r in (c.get("/", params={"text": "new text"}), c.get("/", params={"text": "new"}, headers=HX),
                  c.post("/api/v1/trace", json={"model": "tiny-lstm", "text": "new", "layer": 0})):
            assert r.status_code == 503 and r.headers["retry-after"]
            check(r)
    finally:
        release.set()


def test_rate_limited_responses_carry_them_too(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "d", rate_limit=1) as c:
        assert c.get("/api/v1/models").status_code == 200
        for r in (c.get("/api/v1/models"), c.get("/")):
            assert r.status_code == 429
            check(r)


def test_headers_survive_concurrency(app_client):
    """The middleware keeps no per-request state between requests: many at once all get the headers."""
    results = []

    def hit(i: int) -> None:
        results.append(app_client.get("/", params={"text": f"text {i % 3}", "unit": str(i % 16)}, headers=HX))

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 12
    for r in results:
        assert r.status_code in (200, 503)
        check(r)
