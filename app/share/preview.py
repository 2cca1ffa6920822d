"""The link-preview image of a shared view: its first characters coloured, as an SVG card (1200×630).

Colours come from app/ui/scale.py's rgb(), which mirrors the page's CSS, over the whole text's scale,
so the card shows the same colours as the page. Every piece of text is XML-escaped, and characters
XML cannot hold (control characters, unpaired surrogates) become U+FFFD.
"""

from __future__ import annotations

import re

from markupsafe import escape

from app.share.exports import ExportData, hex_colour
from app.ui.scale import legend, text_is_light

WIDTH, HEIGHT = 1200, 630
PAD = 48
FONT = 26  # px
CELL_W = FONT * 0.6  # a monospace advance
LINE_H = 40
TOP = 150  # first text row's top
MAX_CHARS = 300
ROWS = (HEIGHT - TOP - 90) // LINE_H
COLS = int((WIDTH - 2 * PAD) // CELL_W)
MONO = "'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace"
SANS = "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif"
NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
SHOW = {"\t": "⇥"}


def xml_text(value: str) -> str:
    return str(escape(NOT_XML.sub("\ufffd", value)))


def layout(text: str) -> tuple[list[tuple[int, int, int]], bool]:
    """(index, column, row) for each shown character: wrap at COLS and at newlines; stop at MAX_CHARS or ROWS."""
    out = []
    col = row = 0
    for i, ch in enumerate(text[:MAX_CHARS]):
        if row >= ROWS:
            return out, True
        if ch == "\n":
            out.append((i, col, row))
            col, row = 0, row + 1
            continue
        if col >= COLS:
            col, row = 0, row + 1
            if row >= ROWS:
                return out, True
        out.append((i, col, row))
        col += 1
    return out, len(text) > MAX_CHARS


def preview_svg(d: ExportData, title: str) -> str:
    """A self-contained SVG: header, coloured characters, legend. No scripts, no external references."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{xml_text(title)}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<rect width="{WIDTH}" height="96" fill="#2b2140"/>',
        f'<text x="{PAD}" y="60" font-family="{SANS}" font-size="34" font-weight="700" fill="#ffffff">rnnscope</text>',
        f'<text x="{PAD + 190}" y="60" font-family="{SANS}" font-size="26" fill="#d9d3ea">{xml_text(_clip(title, 62))}</text>',
    ]
    cells, truncated = layout(d.text)
    glyphs = []
    for i, col, row in cells:
        p = float(d.positions[i])
        x = PAD + col * CELL_W
        y = TOP + row * LINE_H
        width = CELL_W if d.text[i] != "\n" else CELL_W * 0.6
        parts.append(f'<rect x="{x:.1f}" y="{y - LINE_H + 8}" width="{width:.1f}" height="{LINE_H - 4}" '
                     f'fill="{hex_colour(p)}"/>')
        ch = SHOW.get(d.text[i], d.text[i])
        if not ch.isspace():
            fill = "#ffffff" if text_is_light(p) else "#1d1d1f"
            glyphs.append(f'<text x="{x:.1f}" y="{y}" fill="{fill}">{xml_text(ch)}</text>')
    parts.append(f'<g font-family="{MONO}" font-size="{FONT}">{"".join(glyphs)}</g>')
    if truncated:
        last_row = cells[-1][2] if cells else 0
        parts.append(f'<text x="{PAD}" y="{TOP + (last_row + 1) * LINE_H}" font-family="{SANS}" font-size="22" '
                     f'fill="#6b6b73">… {len(d.text) - len(cells):,} more characters</text>')
    parts.append(_legend_svg(d))
    parts.append("</svg>")
    return "\n".join(parts)


def _legend_svg(d: ExportData) -> str:
    sw, h = 44, 26
    y = HEIGHT - 56
    out = []
    swatches = legend(d.scale)
    for k, swatch in enumerate(swatches):
        p, label = swatch.position, swatch.label
        x = PAD + k * sw
        out.append(f'<rect x="{x}" y="{y}" width="{sw}" height="{h}" fill="{hex_colour(p)}"/>')
        if label:
            ink = "#ffffff" if text_is_light(p) else "#1d1d1f"
            out.append(f'<text x="{x + sw / 2}" y="{y + 18}" text-anchor="middle" font-family="{SANS}" font-size="15" '
                       f'fill="{ink}">{xml_text(label)}</text>')
    note = f"{d.scale.label} · {len(d.text):,} characters"
    out.append(f'<text x="{PAD + len(swatches) * sw + 16}" y="{y + 18}" font-family="{SANS}" font-size="17" '
               f'fill="#6b6b73">{xml_text(note)}</text>')
    return "".join(out)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
