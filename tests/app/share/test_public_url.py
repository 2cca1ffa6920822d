"""RNNSCOPE_PUBLIC_URL: absolute URLs (share links, link-preview tags, export source) never come from the Host
header when it is set; without it they come from the request, as before."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from app.core.config import Settings

from .conftest import make_client

VIEW = {"model": "tiny-lstm", "text": "Where am I?", "layer": 0, "state": "h", "unit": 3, "mode": "neuron"}
EVIL = {"Host": "evil.example"}
PUBLIC = "https://rnnscope.example.org/demo"


@pytest.fixture()
def public(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "data", public_url=PUBLIC + "/") as c:
        yield c


def absolute_urls(html: str) -> set[str]:
    return set(re.findall(r'https?://[^"\'<>\s]+', html))


def test_public_url_is_checked_and_loses_its_trailing_slash():
    assert Settings(public_url="https://rnnscope.example.org/").public_url == "https://rnnscope.example.org"
    assert Settings(public_url="http://10.0.0.5:8000/a/b//").public_url == "http://10.0.0.5:8000/a/b"
    assert Settings(public_url="").public_url is None and Settings().public_url is None
    for bad, why in [("ftp://rnnscope.example.org", "http:// or https://"), ("rnnscope.example.org", "http://"),
                     ("https://", "http://"), ("https://x.org/?a=1", "query"), ("https://x.org/#top", "fragment"),
                     ("https://x.org?", "query"), ("https://user:pw@x.org", "password")]:
        with pytest.raises(ValidationError, match=re.escape(why)):
            Settings(public_url=bad)


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("RNNSCOPE_PUBLIC_URL", "https://demo.example.org/")
    assert Settings().public_url == "https://demo.example.org"


def test_a_forged_host_stays_out_of_the_api_link(public):
    r = public.post("/api/v1/share", json=VIEW, headers=EVIL)
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    assert r.json()["url"] == f"{PUBLIC}/s/{sid}"
    read = public.get(f"/api/v1/share/{sid}", headers=EVIL).json()
    assert read["url"] == f"{PUBLIC}/s/{sid}"


def test_a_forged_host_stays_out_of_the_share_button_and_the_preview_tags(public):
    form = {k: str(v) for k, v in VIEW.items()}
    r = public.post("/share", data=form, headers={**EVIL, "HX-Request": "true"})
    assert r.status_code == 200 and "evil.example" not in r.text
    sid = public.post("/api/v1/share", json=VIEW).json()["id"]
    assert f'value="{PUBLIC}/s/{sid}"' in r.text
    page = public.get(f"/s/{sid}", headers=EVIL)
    assert page.status_code == 200 and "evil.example" not in page.text
    assert f'<meta property="og:url" content="{PUBLIC}/s/{sid}">' in page.text
    assert f'<meta property="og:image" content="{PUBLIC}/s/{sid}/preview.png">' in page.text
    assert absolute_urls(page.text) <= {f"{PUBLIC}/s/{sid}", f"{PUBLIC}/s/{sid}/preview.png",
                                        "http://www.w3.org/2000/svg"}


def test_a_forged_host_stays_out_of_the_exports(public):
    params = {k: str(v) for k, v in VIEW.items()}
    for ext in ("html", "csv", "json"):
        r = public.get(f"/export.{ext}", params=params, headers=EVIL)
        assert r.status_code == 200 and "evil.example" not in r.text, ext
    html = public.get("/export.html", params=params, headers=EVIL).text
    assert f"Made with rnnscope from {PUBLIC}/." in html


def test_without_public_url_links_follow_the_request_as_before(client):
    r = client.post("/api/v1/share", json=VIEW, headers=EVIL)
    sid = r.json()["id"]
    assert r.json()["url"] == f"http://evil.example/s/{sid}"
    assert client.post("/api/v1/share", json=VIEW).json()["url"] == f"http://testserver/s/{sid}"
    page = client.get(f"/s/{sid}")
    assert f'<meta property="og:url" content="http://testserver/s/{sid}">' in page.text
    html = client.get("/export.html", params={k: str(v) for k, v in VIEW.items()}).text
    assert "Made with rnnscope from http://testserver/." in html


@pytest.mark.parametrize("path, target", [("/healthz/", "/healthz"), ("/api/v1/models/?x=1", "/api/v1/models?x=1"),
                                          ("/generate/", "/generate")])
def test_a_forged_host_stays_out_of_trailing_slash_redirects(public, path, target):
    r = public.get(path, headers=EVIL, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == PUBLIC + target


def test_without_public_url_redirects_follow_the_request_as_before(client):
    r = client.get("/healthz/", headers=EVIL, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "http://evil.example/healthz"
