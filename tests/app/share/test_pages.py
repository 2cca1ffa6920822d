"""/s/{id} pages, the Share button's partial, link previews, deleted models, and escaping."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from html import unescape

from app.ui.scale import rgb
from tests.conftest import write_tiny_model

from .conftest import make_client, selected, spans, textarea, unit_value

HX = {"HX-Request": "true"}
PARAMS = {"model": "tiny-gru", "layer": "1", "state": "z", "unit": "7", "mode": "neuron", "text": 'x "q" y\nz end'}
EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(2)>\'&amp;'


def glyphs(svg_root) -> list[str]:
    """The preview's text characters, in order (the monospace group; not the header or legend)."""
    ns = "{http://www.w3.org/2000/svg}"
    group = next(g for g in svg_root.iter(f"{ns}g") if "monospace" in g.get("font-family", ""))
    return [t.text for t in group.iter(f"{ns}text")]


def share(client, **params) -> str:
    """Share over the JSON API, which takes numbers as JSON numbers (the page's query has strings)."""
    body = {k: int(v) if k in ("layer", "unit") else v for k, v in params.items()}
    r = client.post("/api/v1/share", json=body)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_the_link_opens_the_same_view_as_the_main_page(client):
    sid = share(client, **PARAMS)
    shared = client.get(f"/s/{sid}")
    direct = client.get("/", params=PARAMS)
    assert shared.status_code == 200 and shared.text.startswith("<!doctype html>")
    assert spans(shared.text) == spans(direct.text) and len(spans(shared.text)) == len(PARAMS["text"])
    assert textarea(shared.text) == PARAMS["text"]
    assert (selected(shared.text, "model"), selected(shared.text, "layer"), selected(shared.text, "state"),
            unit_value(shared.text)) == ("tiny-gru", "1", "z", "7")
    assert "<title>tiny-gru · layer 1 · z · unit 7 · rnnscope</title>" in shared.text
    assert f"Shared view <code>{sid}</code>" in shared.text
    assert shared.text.count("</head>") == 1 and shared.text.count("og:title") == 1


def test_surprisal_mode_and_extra_settings_survive_the_link(client):
    sid = share(client, **{**PARAMS, "mode": "surprisal", "unit2": "2"})
    html = client.get(f"/s/{sid}").text
    assert 'value="surprisal" checked' in html
    direct = client.get("/", params={**PARAMS, "mode": "surprisal", "unit2": "2"}).text
    assert spans(html) == spans(direct)
    stored = client.get(f"/api/v1/share/{sid}").json()["view"]
    assert stored["unit2"] == "2" and stored["mode"] == "surprisal"


def test_link_preview_tags(client):
    sid = share(client, **PARAMS)
    html = client.get(f"/s/{sid}").text
    head = html.split("</head>")[0]

    def meta(attr: str, name: str) -> str:
        m = re.search(rf'<meta {attr}="{re.escape(name)}" content="([^"]*)">', head)
        assert m, name
        return unescape(m.group(1))

    assert meta("property", "og:title") == "tiny-gru · layer 1 · z · unit 7"
    assert meta("property", "og:description") == 'x "q" y z end'  # whitespace folded to one line
    assert meta("property", "og:url") == f"http://testserver/s/{sid}"
    assert meta("property", "og:image") == f"http://testserver/s/{sid}/preview.png"  # the SVG stays at preview.svg
    assert meta("property", "og:image:type") == "image/png"
    assert meta("property", "og:image:alt") == "the shared text coloured by tiny-gru · layer 1 · z · unit 7"
    assert meta("name", "twitter:image") == f"http://testserver/s/{sid}/preview.png"
    assert meta("name", "twitter:card") == "summary_large_image"
    assert meta("name", "twitter:title") == "tiny-gru · layer 1 · z · unit 7"
    assert client.get("/").text.count("og:title") == 0  # only share pages carry them


def test_preview_svg_has_the_pages_colours_and_escaped_text(client):
    sid = share(client, **{**PARAMS, "text": EVIL})
    r = client.get(f"/s/{sid}/preview.svg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    assert "<script" not in r.text and "<img" not in r.text
    root = ET.fromstring(r.text)  # well-formed XML: every character was escaped
    ns = "{http://www.w3.org/2000/svg}"
    assert "".join(glyphs(root)) == EVIL.replace(" ", "")  # each visible character, in order; spaces are gaps
    page_positions = [v for _, v, _ in spans(client.get("/", params={**PARAMS, "text": EVIL}).text)]
    fills = [rect.get("fill") for rect in root.iter(f"{ns}rect")][2:2 + len(EVIL)]  # after background + header
    assert fills == ["#%02x%02x%02x" % rgb(p) for p in page_positions]


def test_preview_shows_the_first_300_characters(client):
    text = ("abcdefghij" * 40)[:400]
    sid = share(client, **{**PARAMS, "text": text})
    svg = client.get(f"/s/{sid}/preview.svg").text
    shown = glyphs(ET.fromstring(svg))
    assert "".join(shown) == text[:len(shown)] and 250 <= len(shown) <= 300
    assert "more characters" in svg


def test_preview_replaces_characters_xml_cannot_hold(client):
    sid = share(client, **{**PARAMS, "text": "a\x01b\x0bc"})
    svg = client.get(f"/s/{sid}/preview.svg").text
    ET.fromstring(svg)
    assert "\x01" not in svg and "\ufffd" in svg


def test_xss_in_shared_text_is_escaped_on_the_page(client):
    sid = share(client, **{**PARAMS, "text": EVIL})
    html = client.get(f"/s/{sid}").text
    assert "<script>alert" not in html and "<img src=x" not in html
    assert textarea(html) == EVIL
    assert "".join(ch for _, _, ch in spans(html)) == EVIL
    assert 'content="&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;' in html


def test_share_button_partial_on_the_main_page(client):
    html = client.get("/", params=PARAMS).text
    bar = html.split('<div class="share-bar"', 1)[1].split("</div>", 1)[0]
    assert 'hx-post="/share"' in bar and 'hx-include="#controls, #probe, #pattern"' in bar  # the panel's probe too
    links = re.findall(r'href="(/export\.(?:html|csv|json)\?[^"]*)"', bar)
    assert len(links) == 3
    query = unescape(links[1]).split("?", 1)[1]
    assert query == "model=tiny-gru&layer=1&state=z&unit=7&mode=neuron&text=x+%22q%22+y%0Az+end"
    partial = client.get("/", params=PARAMS, headers=HX).text  # htmx swaps re-render it with the new settings
    assert 'class="share-bar"' in partial and "unit=7" in partial
    assert 'class="share-bar"' not in client.get("/", params={**PARAMS, "unit": "999"}).text  # no view, no share


def test_share_button_post_returns_the_link_partial(client):
    form = {**PARAMS, "text": PARAMS["text"].replace("\n", "\r\n"), "unit2": ""}  # as a browser sends a textarea
    r = client.post("/share", data=form, headers=HX)
    assert r.status_code == 200 and "<html" not in r.text
    url = re.search(r'<input id="share-url" class="share-url" type="text" readonly value="([^"]+)"', r.text).group(1)
    assert url == f"http://testserver/s/{share(client, **PARAMS)}"  # same view as the API's
    assert 'class="share-copy" data-copy="share-url"' in r.text


def test_share_button_refusals_come_back_as_readable_partials(client):
    cases = [
        ({**PARAMS, "unit": "999"}, 422, "unit 999 is out of range: this model has units 0..15"),
        ({**PARAMS, "model": "gone"}, 404, "unknown model &#39;gone&#39;"),
        ({**PARAMS, "text": "a" * 20_001}, 413, "the text is 20,001 characters long"),
        ({"model": "tiny-lstm"}, 422, "text is missing"),
    ]
    for form, status, message in cases:
        r = client.post("/share", data=form, headers=HX)
        assert r.status_code == status and "Cannot share: " in r.text and message in r.text, (status, r.text)
    r = client.post("/share", json=PARAMS, headers=HX)
    assert r.status_code == 415 and "application/x-www-form-urlencoded" in r.text


def test_bad_and_unknown_links_get_a_page_that_says_so(client):
    r = client.get("/s/aaaaaaaaaaaa")
    assert r.status_code == 404 and "This shared view does not exist" in r.text
    assert "no shared view &#39;aaaaaaaaaaaa&#39;: the link is wrong or was made on another server" in r.text
    r = client.get("/s/NOT-AN-ID")
    assert r.status_code == 404 and "is not a share id" in r.text
    r = client.get("/s/aaaaaaaaaaaa/preview.svg")
    assert r.status_code == 404 and "no shared view" in r.json()["detail"]


def test_link_to_a_deleted_model_opens_with_a_message_and_the_text(tiny_models_dir, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny-lstm", models / "tiny-lstm")
    write_tiny_model(models / "doomed-gru", "gru", seed=5)
    text = 'Kept "text" <b>\nline two'
    with make_client(models, tmp_path / "data") as c:
        sid = share(c, model="doomed-gru", text=text, layer=1, state="n", unit=2)
        shutil.rmtree(models / "doomed-gru")
        r = c.get(f"/s/{sid}")
        assert r.status_code == 200
        assert "This link was shared for model <code>doomed-gru</code>, which this server no longer has." in r.text
        assert "unknown model &#39;doomed-gru&#39;; installed models: tiny-lstm" in r.text  # beside the picker
        assert textarea(r.text) == text
        assert r.headers["content-type"].startswith("text/html")
        preview = c.get(f"/s/{sid}/preview.svg")
        assert preview.status_code == 404 and "unknown model 'doomed-gru'" in preview.json()["detail"]
        shutil.rmtree(models / "tiny-lstm")  # no models at all: the text is still on the page
        r = c.get(f"/s/{sid}")
        assert r.status_code == 200 and "this server has no models installed" in r.text
        assert f'<pre class="share-text">{text.replace("<", "&lt;").replace(">", "&gt;").replace(chr(34), "&#34;")}</pre>' in r.text
