"""The link-preview cards: the PNG twin of the SVG (same layout, same colours), its cache, and text that wraps
at word boundaries in both."""

from __future__ import annotations

import io
import shutil
import threading
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from app.share import preview, routes
from app.share.exports import ExportData
from app.share.preview import COLS, LINE_H, MAX_CHARS, PAD, ROWS, TOP, PngCache, card, clip_words, layout
from app.ui.scale import Scale, rgb
from tests.conftest import write_tiny_model

from .conftest import make_client, spans
from .test_pages import PARAMS, share

WORDS = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
         "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
         "neighbourhood, this truth is so well fixed in the minds of the surrounding families.")


@pytest.fixture()
def fresh_cache(monkeypatch) -> PngCache:
    """The PNG route's cache, empty for this test (cards of the same view are shared across apps otherwise)."""
    cache = PngCache()
    monkeypatch.setattr(routes, "PNG_CACHE", cache)
    return cache


def rows_of(text: str) -> list[str]:
    """The text as the card lays it out, one string per row (a hanging space stays on its row)."""
    cells, _ = layout(text)
    rows: dict[int, list[tuple[int, int]]] = {}
    for i, col, row in cells:
        rows.setdefault(row, []).append((col, i))
    return ["".join(text[i] for _, i in sorted(r)) for _, r in sorted(rows.items())]


def split_words(text: str) -> list[tuple[int, int, int]]:
    """(first row, last row, length) of every word the layout shows whole."""
    cells, _ = layout(text)
    row_of = {i: row for i, _, row in cells}
    out, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        j = i
        while j < len(text) and not text[j].isspace():
            j += 1
        if all(k in row_of for k in range(i, j)):
            out.append((row_of[i], row_of[j - 1], j - i))
        i = j
    return out


# ---- layout: word wrapping ------------------------------------------------------------
def test_lines_break_between_words_never_inside_one():
    words = split_words(WORDS)
    assert len(words) > 30
    assert all(first == last for first, last, _ in words)  # every shown word on one row
    rows = rows_of(WORDS)
    assert len(rows) >= 3 and all(len(r.rstrip(" ")) <= COLS for r in rows)
    assert all(not r.startswith(" ") for r in rows)  # a line-end space hangs on its line, not the next
    # each row is as full as the next word allowed: the next row's first word would not have fitted
    for a, b in zip(rows, rows[1:]):
        assert len(a.rstrip(" ")) + 1 + len(b.split(" ")[0]) > COLS, (a, b)


def test_a_word_longer_than_a_line_is_the_only_one_cut():
    long_word = "x" * (COLS + 15)
    text = f"short {long_word} tail words"
    rows = rows_of(text)
    assert rows[0] == "short "  # the long word starts its own row…
    assert rows[1] == "x" * COLS and rows[2].startswith("x" * 15)  # …and is cut only at the line's end
    assert rows[2] == "x" * 15 + " tail words"


def test_the_card_stops_before_a_word_it_cannot_finish():
    text = ("ab " + "word " * 100)[: MAX_CHARS + 5]  # the word at 298..301 straddles MAX_CHARS
    cells, truncated = layout(text)
    shown = "".join(text[i] for i, _, _ in cells)
    assert truncated and shown.rstrip(" ").endswith("word") and len(shown) <= MAX_CHARS
    assert text[len(shown):].lstrip(" ").startswith("word")  # the first character left out starts a word
    one_word = "y" * 400  # no space at all: cut, there is nothing else to show
    cells, truncated = layout(one_word)
    assert truncated and len(cells) == MAX_CHARS


def test_rows_are_capped_and_newlines_break():
    cells, truncated = layout("a\n" * 50)
    assert truncated and max(row for _, _, row in cells) == ROWS - 1
    assert rows_of("ab\ncd") == ["ab\n", "cd"]


def test_titles_are_clipped_at_a_word():
    title = "austen-lstm · layer 1 · c · unit 336 with a name long enough to need clipping somewhere"
    short = clip_words(title, 40)
    assert short.endswith("…") and len(short) <= 40
    assert title.startswith(short[:-1]) and title[len(short) - 1] == " "  # it stops where a word stopped
    assert clip_words("abc def", 40) == "abc def"
    assert clip_words("x" * 80, 10) == "x" * 9 + "…"  # one long word: cut, nothing else to do


# ---- the PNG route -----------------------------------------------------------------------
def pixel_colours(png: bytes, text: str) -> list[tuple[int, int, int]]:
    """The colour at the top-left inside each shown character's cell (above any glyph)."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    out = []
    for _, col, row in layout(text)[0]:
        x = int(PAD + col * preview.CELL_W) + 2
        y = TOP + row * LINE_H - LINE_H + 10
        out.append(img.getpixel((x, y)))
    return out


def test_png_preview_is_the_svg_card_as_a_png(client, fresh_cache):
    text = 'She said, "I shall go." Then: "Why not?" he asked, and nothing more.'
    sid = share(client, **{**PARAMS, "text": text})
    r = client.get(f"/s/{sid}/preview.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "public, max-age=3600"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "PNG" and img.size == (1200, 630)
    assert len(r.content) < 200_000
    page_positions = [v for _, v, _ in spans(client.get("/", params={**PARAMS, "text": text}).text)]
    assert pixel_colours(r.content, text) == [rgb(p) for p in page_positions]  # the page's colours, cell by cell
    svg = ET.fromstring(client.get(f"/s/{sid}/preview.svg").text)
    ns = "{http://www.w3.org/2000/svg}"
    fills = [rect.get("fill") for rect in svg.iter(f"{ns}rect")][2:2 + len(text)]
    assert fills == ["#%02x%02x%02x" % c for c in pixel_colours(r.content, text)]  # and the SVG's


def test_png_is_drawn_once_per_view_then_served_from_the_cache(client, fresh_cache, monkeypatch):
    sid = share(client, **PARAMS)
    first = client.get(f"/s/{sid}/preview.png")
    assert fresh_cache.drawn == 1
    monkeypatch.setattr(routes, "export_data", lambda *a, **k: pytest.fail("a cached card ran the model"))
    again = client.get(f"/s/{sid}/preview.png")
    assert again.content == first.content and fresh_cache.drawn == 1


def test_a_retrained_model_redraws_the_card(tiny_models_dir, tmp_path, fresh_cache):
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny-lstm", models / "tiny-lstm")
    with make_client(models, tmp_path / "data") as c:
        sid = share(c, model="tiny-lstm", text="a b c d e f g", layer=1, state="h", unit=2)
        before = c.get(f"/s/{sid}/preview.png").content
        time.sleep(0.01)
        write_tiny_model(models / "tiny-lstm", "lstm", seed=11)  # new weights, new version
        after = c.get(f"/s/{sid}/preview.png").content
    assert fresh_cache.drawn == 2 and before != after


def test_png_refusals_are_the_svgs(client, tiny_models_dir, tmp_path, fresh_cache):
    r = client.get("/s/aaaaaaaaaaaa/preview.png")
    assert r.status_code == 404 and "no shared view" in r.json()["detail"]
    r = client.get("/s/NOT-AN-ID/preview.png")
    assert r.status_code == 404 and "is not a share id" in r.json()["detail"]
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny-lstm", models / "tiny-lstm")
    write_tiny_model(models / "doomed-gru", "gru", seed=5)
    with make_client(models, tmp_path / "data2") as c:
        sid = share(c, model="doomed-gru", text="abc", layer=0, state="h", unit=1)
        shutil.rmtree(models / "doomed-gru")
        r = c.get(f"/s/{sid}/preview.png")
        assert r.status_code == 404 and "unknown model 'doomed-gru'" in r.json()["detail"]
        assert r.json() == c.get(f"/s/{sid}/preview.svg").json()
    assert fresh_cache.drawn == 0


def test_the_svg_wraps_at_words_too(client):
    sid = share(client, **{**PARAMS, "text": WORDS})
    svg = ET.fromstring(client.get(f"/s/{sid}/preview.svg").text)
    ns = "{http://www.w3.org/2000/svg}"
    group = next(g for g in svg.iter(f"{ns}g") if "monospace" in g.get("font-family", ""))
    row_of_glyph = [(t.text, float(t.get("y"))) for t in group.iter(f"{ns}text")]
    shown = [ch for ch in WORDS if not ch.isspace()][: len(row_of_glyph)]
    assert [ch for ch, _ in row_of_glyph] == shown
    # walk the words: all glyphs of a word share a baseline
    k = 0
    for word in WORDS.split():
        ys = {y for _, y in row_of_glyph[k:k + len(word)]}
        if k + len(word) <= len(row_of_glyph):
            assert len(ys) == 1, word
        k += len(word)


# ---- the cache itself ----------------------------------------------------------------------
def test_cache_is_bounded_in_bytes_and_drops_the_least_recent():
    cache = PngCache(max_bytes=100)
    cache.put("a", b"x" * 40)
    cache.put("b", b"y" * 40)
    assert cache.get("a") == b"x" * 40  # a is now the most recent
    cache.put("c", b"z" * 40)  # 120 > 100: b goes
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    cache.put("huge", b"h" * 101)  # larger than the whole budget: not kept
    assert cache.get("huge") is None and cache.get("a") and cache.get("c")


def test_concurrent_requests_for_one_card_draw_it_once():
    cache = PngCache()
    calls = []

    def draw() -> bytes:
        calls.append(1)
        time.sleep(0.05)
        return b"png"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_draw("k", draw))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"png"] * 8 and len(calls) == 1 and cache.drawn == 1


def test_card_colours_and_ink_follow_the_scale():
    text = "ab cd"
    pos = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    d = ExportData("m", 0, "h", 0, "neuron", text, pos, pos, pos, Scale(-1.0, 1.0, "tanh range"), [])
    c = card(d, "m · layer 0 · h · unit 0")
    assert [g.fill for g in c.glyphs] == ["#%02x%02x%02x" % rgb(p) for p in pos]
    assert [g.ink for g in c.glyphs] == ["#ffffff", "#000000", "#000000", "#000000", "#000000"]
    assert [g.ch for g in c.glyphs] == ["a", "b", "", "c", "d"]
    png = preview.preview_png(d, "m · layer 0 · h · unit 0")
    assert Image.open(io.BytesIO(png)).size == (1200, 630)


def test_without_system_fonts_the_card_uses_pillows_own(monkeypatch):
    """A machine without DejaVu still draws the card (Pillow >= 10.1 ships a scalable font)."""
    monkeypatch.setattr(preview, "FONT_DIRS", ())
    preview.font.cache_clear()
    try:
        assert preview.font("DejaVuSansMono.ttf", 26).getname()[0] != "DejaVu Sans Mono"
        text = "plain words, wrapped"
        pos = np.linspace(-1, 1, len(text))
        d = ExportData("m", 0, "h", 0, "neuron", text, pos, pos, pos, Scale(-1.0, 1.0, "tanh range"), [])
        img = Image.open(io.BytesIO(preview.preview_png(d, "m")))
        assert img.size == (1200, 630)
        assert pixel_colours(preview.preview_png(d, "m"), text) == [rgb(p) for p in pos]
    finally:
        preview.font.cache_clear()
