"""The standalone HTML export's colours against WCAG, cell by cell (its styles are written by app/share/exports.py).

The page's text reaches 4.5:1 at every value (tests/e2e/test_contrast.py); the export writes its own inline
colours from the same constants (app.ui.scale), checked here at every level the page can show.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from app.share.exports import ExportData, to_html
from app.ui.scale import Scale, rgb

STYLE = re.compile(r'<span[^>]*style="background:(#[0-9a-f]{6});color:(#[0-9a-f]{6})(?:;box-shadow:inset 0 -?\d+(?:\.\d+)?px 0 '
                   r'(#[0-9a-f]{6}))?"')
POSITIONS = np.round(np.arange(-1.0, 1.0001, 0.02), 2)  # every level the page can show


def contrast(a: str, b: str) -> float:
    def lum(h: str) -> float:
        c = [int(h[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def export(compare: bool) -> list[tuple[str, str, str | None]]:
    text = "x" * len(POSITIONS)
    d = ExportData("m", 0, "h", 0, "neuron", text, POSITIONS, POSITIONS, POSITIONS, Scale(-1.0, 1.0, "tanh range"), [])
    if compare:  # a second unit at full strength everywhere: a bar under every character
        d.compare, d.values2, d.positions2, d.scale2 = (0, "h", 1), np.ones(len(text)), np.ones(len(text)), d.scale
    html = to_html(d)
    assert '<div class="chars">' in html, "the export's text box changed: update export()"
    cells = STYLE.findall(html.split('<div class="chars">', 1)[1])  # the characters, not the legends
    assert len(cells) == len(text), "the export's cell style changed: update STYLE"
    return cells


def test_export_text_reaches_aa_at_every_level():
    bad = [(bg, fg, round(contrast(fg, bg), 2)) for bg, fg, _ in export(False) if contrast(fg, bg) < 4.5]
    assert bad == []


def test_export_compare_bar_reaches_3_to_1_at_every_level():
    bad = [(bg, bar, round(contrast(bar, bg), 2)) for bg, _, bar in export(True) if contrast(bar, bg) < 3]
    assert bad == []


def test_the_checks_can_see_a_failure():
    assert round(contrast("#ffffff", "#000000"), 1) == 21.0
    assert contrast("#1d1d1f", "#%02x%02x%02x" % rgb(-0.72)) < 4.5  # the export's dark text on -0.72
    assert contrast("#000000", "#%02x%02x%02x" % rgb(-0.72)) >= 4.5  # the page's
