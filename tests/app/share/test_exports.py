"""Downloads: standalone HTML (no scripts), CSV (formula-safe) and JSON, matching the page they come from."""

from __future__ import annotations

import csv
import io
import json
import re
from html import unescape

import pytest

from app.ui.scale import rgb

from tests.conftest import VOCAB_TEXT, char_spans

from .conftest import spans

PARAMS = {"model": "tiny-lstm", "layer": "0", "state": "h", "unit": "4", "mode": "neuron",
          "text": 'He said "=SUM(A1)".\n@home -3 +4\tend~'}
EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def page_trace(html: str) -> dict:
    """The per-character numbers the page hands to its tooltip (data-trace)."""
    return json.loads(unescape(re.search(r"data-trace='([^']*)'", html).group(1)))


def test_csv_has_one_row_per_character_with_the_pages_values(client):
    r = client.get("/export.csv", params=PARAMS)
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="rnnscope-tiny-lstm-l0-h-u4.csv"'
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["position", "char", "value", "surprisal"]
    body = rows[1:]
    assert [int(row[0]) for row in body] == list(range(len(PARAMS["text"])))
    data = page_trace(client.get("/", params=PARAMS).text)
    assert [float(row[2]) for row in body] == data["v"]
    assert body[0][3] == ""  # nothing predicted the first character
    arrived = [float(row[3]) for row in body[1:]]
    assert all(abs(a - s) < 0.006 for a, s in zip(arrived, data["s"][:-1]))  # the page keeps 2 decimals


def test_csv_guards_cells_a_spreadsheet_would_run_as_formulas(client):
    body = list(csv.reader(io.StringIO(client.get("/export.csv", params=PARAMS).text)))[1:]
    chars = [row[1] for row in body]
    text = PARAMS["text"]
    for ch, cell in zip(text, chars):
        if ch in "=+-@\t":
            assert cell == "'" + ch
        else:
            assert cell == ch
    assert "\n" in chars  # a newline is a quoted cell, not a broken row
    assert any(float(row[2]) < 0 for row in body)  # negative numbers stay numbers


def test_json_matches_the_csv_and_describes_itself(client):
    r = client.get("/export.json", params=PARAMS)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"] == 'attachment; filename="rnnscope-tiny-lstm-l0-h-u4.json"'
    d = r.json()
    assert (d["model"], d["layer"], d["state"], d["unit"], d["mode"], d["text"]) == (
        "tiny-lstm", 0, "h", 4, "neuron", PARAMS["text"])
    rows = list(csv.reader(io.StringIO(client.get("/export.csv", params=PARAMS).text)))[1:]
    assert d["values"] == [float(row[2]) for row in rows]
    assert d["surprisal_bits"][0] is None and len(d["surprisal_bits"]) == d["length"] == len(PARAMS["text"])
    assert d["unknown_positions"] == [t for t, ch in enumerate(PARAMS["text"]) if ch not in VOCAB_TEXT]
    assert len(d["unknown_positions"]) == 4  # "@", "+", tab and "~" are not in the tiny vocabulary
    assert d["scale"] == {"lo": -1.0, "hi": 1.0, "label": "tanh range"}
    assert d["colour_positions"] == [v for _, v, _ in spans(client.get("/", params=PARAMS).text)]


def test_html_export_is_standalone_scriptless_and_coloured_like_the_page(client):
    r = client.get("/export.html", params=PARAMS)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-disposition"] == 'attachment; filename="rnnscope-tiny-lstm-l0-h-u4.html"'
    html = r.text
    assert "<script" not in html.lower() and "<link" not in html.lower() and "src=" not in html
    assert "<style>" in html  # inline CSS: opens offline
    cells = re.findall(r'<span(?: class="([^"]*)")? style="background:(#[0-9a-f]{6});color:(#[0-9a-f]{6})" '
                       r'title="([^"]*)">(.*?)</span>', html, re.S)
    assert "".join(unescape(c[4]) for c in cells) == PARAMS["text"]
    page_positions = [v for _, v, _ in spans(client.get("/", params=PARAMS).text)]
    assert [c[1] for c in cells] == ["#%02x%02x%02x" % rgb(p) for p in page_positions]
    assert cells[-1][0] == "unk" and "never seen in training" in cells[-1][3]
    assert cells[0][3].startswith("#0 · value ") and "surprisal – bits" in cells[0][3]
    assert "tanh range" in html and html.count('class="sw"') == 11  # the legend


def test_surprisal_mode_export_is_coloured_by_surprisal(client):
    params = {**PARAMS, "mode": "surprisal"}
    r = client.get("/export.html", params=params)
    assert r.headers["content-disposition"] == 'attachment; filename="rnnscope-tiny-lstm-l0-h-u4-surprisal.html"'
    assert "surprisal of each character (bits)" in r.text and "bits, capped at 8" in r.text
    page_positions = [v for _, v, _ in spans(client.get("/", params=params).text)]
    colours = re.findall(r'style="background:(#[0-9a-f]{6});', r.text.split('<div class="chars">')[1])
    assert colours == ["#%02x%02x%02x" % rgb(p) for p in page_positions]


def test_exports_escape_hostile_text(client):
    params = {**PARAMS, "text": EVIL}
    html = client.get("/export.html", params=params).text
    assert "<script" not in html and "<img" not in html
    assert html.count("&lt;") == EVIL.count("<") and html.count("&#34;") == EVIL.count('"')
    assert "".join(unescape(ch) for ch in re.findall(r'title="[^"]*">(.*?)</span>', html, re.S)) == EVIL
    assert json.loads(client.get("/export.json", params=params).text)["text"] == EVIL
    rows = list(csv.reader(io.StringIO(client.get("/export.csv", params=params).text)))[1:]
    assert "".join(row[1].removeprefix("'") for row in rows) == EVIL and ["'="] * 2 == [r[1] for r in rows if "=" in r[1]]


def test_bad_export_requests_get_one_clear_message(client):
    cases = [
        ({**PARAMS, "unit": "999"}, 422, "unit 999 is out of range: this model has units 0..15"),
        ({**PARAMS, "model": "gone"}, 404, "unknown model 'gone'"),
        ({**PARAMS, "layer": "x"}, 422, "layer must be a whole number, got 'x'"),
        ({k: v for k, v in PARAMS.items() if k != "text"}, 422, "text is missing"),
        ({**PARAMS, "text": ""}, 422, "the text is empty"),
        ({**PARAMS, "text": "a" * 20_001}, 413, "the text is 20,001 characters long"),
    ]
    for ext in ("html", "csv", "json"):
        for params, status, message in cases:
            r = client.get(f"/export.{ext}", params=params)
            assert r.status_code == status and message in r.json()["detail"], (ext, r.text[:200])


def test_exports_carry_the_compare_unit_on_screen(client):
    params = {**PARAMS, "layer2": "1", "state2": "c", "unit2": "5"}
    data = page_trace(client.get("/", params=params).text)
    rows = list(csv.reader(io.StringIO(client.get("/export.csv", params=params).text)))
    assert rows[0] == ["position", "char", "value", "surprisal", "compare_value"]
    assert [float(row[4]) for row in rows[1:]] == data["w"]  # the second unit's values, as the page has them
    assert [float(row[2]) for row in rows[1:]] == data["v"]
    d = client.get("/export.json", params=params).json()
    assert (d["compare"]["layer"], d["compare"]["state"], d["compare"]["unit"]) == (1, "c", 5)
    assert d["compare"]["values"] == data["w"] and len(d["compare"]["colour_positions"]) == len(PARAMS["text"])
    html = client.get("/export.html", params=params).text
    assert "Bar under each character: layer 1 · c · unit 5" in html
    # the bars the page draws (app.ui.levels: 0.1 steps of 5 px; below for positive, above for negative)
    page_bars = [c.w for c in char_spans(client.get("/", params=params).text)]
    cells = re.findall(r'<span[^>]*style="background:#[0-9a-f]{6};color:#[0-9a-f]{6}(?:;box-shadow:inset 0 (-?[0-9.]+)px 0 #[0-9a-f]{6})?"',
                       html.split('<div class="chars">', 1)[1])
    assert len(cells) == len(PARAMS["text"]) and any(page_bars)
    assert [float(px) if px else 0.0 for px in cells] == pytest.approx([-5 * w for w in page_bars])
    assert client.get("/export.json", params=PARAMS).json()["compare"] is None  # no second unit, none exported
    assert "box-shadow" not in client.get("/export.html", params=PARAMS).text
