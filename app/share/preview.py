"""The link-preview image of a shared view: its first characters coloured, as an SVG and a PNG card (1200×630).

Both come from one layout (`card`), so they show the same thing; most sites that unfurl links render only
PNG or JPEG previews, which is why the PNG exists and og:image points at it. Text wraps at spaces, never
inside a word unless the word alone is wider than a line.

Colours come from app/ui/scale.py, which mirrors the page's CSS, over the whole text's scale, so the card
shows the same colours as the page. In the SVG every piece of text is XML-escaped, and characters XML cannot
hold (control characters, unpaired surrogates) become U+FFFD.

The PNG route is public and drawing costs tens of milliseconds: `PngCache` keeps recent cards (bounded in
bytes) and draws one at a time, so repeated or concurrent requests for a card cost one drawing.
"""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from markupsafe import escape
from PIL import Image, ImageDraw, ImageFont

from app.share.exports import ExportData, hex_colour
from app.ui.scale import DARK_TEXT, LIGHT_TEXT, legend, text_is_light

WIDTH, HEIGHT = 1200, 630
PAD = 48
FONT = 26  # px
CELL_W = FONT * 0.6  # a monospace advance
LINE_H = 40
TOP = 150  # first text row's baseline
MAX_CHARS = 300
ROWS = (HEIGHT - TOP - 90) // LINE_H
COLS = int((WIDTH - 2 * PAD) // CELL_W)
TITLE_CHARS = 62
MONO = "'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace"
SANS = "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif"
NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
SHOW = {"\t": "⇥"}
HEADER_BG = "#2b2140"
TITLE_INK = "#d9d3ea"
MUTED = "#6b6b73"
DARK_INK = "#%02x%02x%02x" % DARK_TEXT
LIGHT_INK = "#%02x%02x%02x" % LIGHT_TEXT
SWATCH_W, SWATCH_H = 44, 26
LEGEND_Y = HEIGHT - 56


def xml_text(value: str) -> str:
    return str(escape(NOT_XML.sub("\ufffd", value)))


def layout(text: str) -> tuple[list[tuple[int, int, int]], bool]:
    """(index, column, row) for each shown character, and whether some of the text is left out.

    Lines break at newlines and before a word that would not fit, so no word is split unless it alone is
    wider than a line (then it is cut at the line's end). A space keeps its cell, as every character does (its
    colour is the unit's value there): one right after a full line hangs in the right margin (PAD is wider
    than a cell), a second one starts the next line. Stops at MAX_CHARS characters or ROWS rows, before a
    word that would not end by then.
    """
    out: list[tuple[int, int, int]] = []
    col = row = 0
    shown = text[:MAX_CHARS]
    i = 0
    while i < len(shown):
        ch = shown[i]
        if ch == "\n":
            out.append((i, col, row))
            col, row, i = 0, row + 1, i + 1
        elif ch.isspace():
            if col > COLS:  # a second space past a full line starts the next one
                col, row = 0, row + 1
                if row >= ROWS:
                    return out, True
            out.append((i, col, row))  # the first one hangs in the right margin, as a word processor's does
            col, i = col + 1, i + 1
            continue
        else:
            end = i
            while end < len(text) and not text[end].isspace():  # the whole word, even past MAX_CHARS
                end += 1
            if end > MAX_CHARS and i > 0:  # the card ends before a word it could show only the start of
                return out, True
            if col > 0 and col + (end - i) > COLS:  # does not fit the rest of this line: start the next
                col, row = 0, row + 1
            for j in range(i, min(end, len(shown))):
                if col >= COLS:  # only a word longer than a line gets here
                    col, row = 0, row + 1
                if row >= ROWS:
                    return out, True
                out.append((j, col, row))
                col += 1
            i = end
        if row >= ROWS:
            return out, i < len(text)
    return out, len(text) > MAX_CHARS


def clip_words(s: str, n: int) -> str:
    """At most n characters, cut after the last whole word that fits (mid-word only when one word is longer)."""
    if len(s) <= n:
        return s
    head = s[: n - 1]
    cut = head.rstrip().rfind(" ")
    if cut > 0 and not s[n - 1].isspace():
        head = head[:cut]
    return head.rstrip(" ·,;:") + "…"


@dataclass(frozen=True)
class Glyph:
    """One character cell: its box, background, and the glyph drawn in it ('' for whitespace)."""

    x: float
    y: float  # baseline
    w: float
    fill: str
    ch: str
    ink: str


@dataclass(frozen=True)
class Swatch:
    x: float
    fill: str
    label: str
    ink: str


@dataclass(frozen=True)
class Card:
    """What both images draw, in image pixels."""

    title: str
    glyphs: list[Glyph]
    more: str  # "… 1,234 more characters" or ""
    more_y: float
    swatches: list[Swatch]
    note: str


def card(d: ExportData, title: str) -> Card:
    cells, truncated = layout(d.text)
    glyphs = []
    for i, col, row in cells:
        p = float(d.positions[i])
        ch = SHOW.get(d.text[i], d.text[i])
        glyphs.append(Glyph(PAD + col * CELL_W, TOP + row * LINE_H, CELL_W if d.text[i] != "\n" else CELL_W * 0.6,
                            hex_colour(p), "" if ch.isspace() else ch, LIGHT_INK if text_is_light(p) else DARK_INK))
    last_row = cells[-1][2] if cells else 0
    more = f"… {len(d.text) - len(cells):,} more characters" if truncated else ""
    swatches = [Swatch(PAD + k * SWATCH_W, hex_colour(s.position), s.label,
                       LIGHT_INK if text_is_light(s.position) else DARK_INK) for k, s in enumerate(legend(d.scale))]
    return Card(clip_words(title, TITLE_CHARS), glyphs, more, TOP + (last_row + 1) * LINE_H, swatches,
                f"{d.scale.label} · {len(d.text):,} characters")


# ---- SVG --------------------------------------------------------------------------------
def preview_svg(d: ExportData, title: str) -> str:
    """A self-contained SVG: header, coloured characters, legend. No scripts, no external references."""
    c = card(d, title)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{xml_text(title)}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<rect width="{WIDTH}" height="96" fill="{HEADER_BG}"/>',
        f'<text x="{PAD}" y="60" font-family="{SANS}" font-size="34" font-weight="700" fill="#ffffff">rnnscope</text>',
        f'<text x="{PAD + 190}" y="60" font-family="{SANS}" font-size="26" fill="{TITLE_INK}">{xml_text(c.title)}</text>',
    ]
    texts = []
    for g in c.glyphs:
        parts.append(f'<rect x="{g.x:.1f}" y="{g.y - LINE_H + 8}" width="{g.w:.1f}" height="{LINE_H - 4}" fill="{g.fill}"/>')
        if g.ch:
            texts.append(f'<text x="{g.x:.1f}" y="{g.y}" fill="{g.ink}">{xml_text(g.ch)}</text>')
    parts.append(f'<g font-family="{MONO}" font-size="{FONT}">{"".join(texts)}</g>')
    if c.more:
        parts.append(f'<text x="{PAD}" y="{c.more_y}" font-family="{SANS}" font-size="22" fill="{MUTED}">'
                     f'{xml_text(c.more)}</text>')
    legend_parts = []
    for s in c.swatches:
        legend_parts.append(f'<rect x="{s.x}" y="{LEGEND_Y}" width="{SWATCH_W}" height="{SWATCH_H}" fill="{s.fill}"/>')
        if s.label:
            legend_parts.append(f'<text x="{s.x + SWATCH_W / 2}" y="{LEGEND_Y + 18}" text-anchor="middle" '
                                f'font-family="{SANS}" font-size="15" fill="{s.ink}">{xml_text(s.label)}</text>')
    legend_parts.append(f'<text x="{PAD + len(c.swatches) * SWATCH_W + 16}" y="{LEGEND_Y + 18}" font-family="{SANS}" '
                        f'font-size="17" fill="{MUTED}">{xml_text(c.note)}</text>')
    parts.append("".join(legend_parts))
    parts.append("</svg>")
    return "\n".join(parts)


# ---- PNG --------------------------------------------------------------------------------
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"),
             Path("/usr/local/share/fonts"), Path("/Library/Fonts"))
FontT = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=16)
def font(name: str, size: int) -> FontT:
    """DejaVu (Debian's fonts-dejavu-core, which Chromium pulls in) where installed: it has a glyph for most
    characters; else Pillow's own font (Pillow >= 10.1 ships one that scales), so the card never needs one."""
    for folder in FONT_DIRS:
        path = folder / name
        if path.is_file():
            try:
                return ImageFont.truetype(str(path), size)
            except OSError:
                continue
    return ImageFont.load_default(size)


def preview_png(d: ExportData, title: str) -> bytes:
    """The same card as preview_svg, drawn with Pillow."""
    c = card(d, title)
    img = Image.new("RGB", (WIDTH, HEIGHT), "#ffffff")
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, WIDTH - 1, 95), fill=HEADER_BG)
    draw.text((PAD, 60), "rnnscope", font=font("DejaVuSans-Bold.ttf", 34), fill="#ffffff", anchor="ls")
    draw.text((PAD + 190, 60), c.title, font=font("DejaVuSans.ttf", 26), fill=TITLE_INK, anchor="ls")
    mono = font("DejaVuSansMono.ttf", FONT)
    for g in c.glyphs:
        top = g.y - LINE_H + 8
        draw.rectangle((round(g.x), top, round(g.x + g.w) - 1, top + LINE_H - 5), fill=g.fill)
        if g.ch:  # centred in its cell, whatever the font's own advance
            draw.text((g.x + g.w / 2, g.y), g.ch, font=mono, fill=g.ink, anchor="ms")
    sans_small = font("DejaVuSans.ttf", 22)
    if c.more:
        draw.text((PAD, c.more_y), c.more, font=sans_small, fill=MUTED, anchor="ls")
    label_font = font("DejaVuSans.ttf", 15)
    for s in c.swatches:
        draw.rectangle((s.x, LEGEND_Y, s.x + SWATCH_W - 1, LEGEND_Y + SWATCH_H - 1), fill=s.fill)
        if s.label:
            draw.text((s.x + SWATCH_W / 2, LEGEND_Y + 18), s.label, font=label_font, fill=s.ink, anchor="ms")
    draw.text((PAD + len(c.swatches) * SWATCH_W + 16, LEGEND_Y + 18), c.note, font=font("DejaVuSans.ttf", 17),
              fill=MUTED, anchor="ls")
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=6)
    return out.getvalue()


class PngCache:
    """Recent PNG cards by key, at most `max_bytes` in all (least recently used go first); `get_or_draw`
    draws a missing card at most one at a time, so a burst of requests costs one drawing per card and one
    core at most."""

    def __init__(self, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the dictionary
        self._drawing = threading.Lock()  # one drawing at a time
        self.drawn = 0  # cards drawn so far (tests and the bench read it)

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            png = self._items.get(key)
            if png is not None:
                self._items.move_to_end(key)
            return png

    def put(self, key: Hashable, png: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes -= len(old) if old is not None else 0
            if len(png) > self.max_bytes:
                return
            self._items[key] = png
            self._bytes += len(png)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    def get_or_draw(self, key: Hashable, draw: Callable[[], bytes]) -> bytes:
        png = self.get(key)
        if png is not None:
            return png
        with self._drawing:
            png = self.get(key)  # drawn while this request waited
            if png is None:
                png = draw()
                self.drawn += 1
                self.put(key, png)
        return png


PNG_CACHE = PngCache()
