"""The main view's colours as classes: a character's place on the colour scale, rounded to one of
101 levels, is the class `qK` (K = 0 … 100, K = 50 at zero); the compare unit's bar is `uK` (below,
positive) or `oK` (above, negative), K = 1 … 10 of 5 px.

Why classes rather than `style="--v:…"` with a `color-mix()` rule: Chromium recomputes that rule for
every span whose value changes, and a unit step re-colours every span. Measured in one run on 2,500
spans: ~130 ms of style recalculation a step with the custom property, ~25 ms with classes (20,000
spans: ~1 s against ~115 ms). Elements that share a class share their computed colour. The rounding
(at most 0.01 of the scale's half-width) is below what an eye tells apart on this scale.

The stylesheet (GET /ui/levels.css) is written from app.ui.scale, so the page, the terminal and the
exports keep one colour scale and one light-text rule.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from app.ui.scale import DARK_TEXT, LIGHT_TEXT, rgb, text_is_light

STEPS = 50  # levels each side of zero
BAR_STEPS = 10  # compare-bar thicknesses each side
BAR_PX = 5.0  # the thickest bar


def _positions(values: np.ndarray, hi: float) -> np.ndarray:
    """values / hi in [-1, 1], NaN -> 0, in float64: the arithmetic static/app.js does on the same
    float16 values, so a repaint and a fresh page give every character the same class."""
    p = np.asarray(values, dtype=np.float64) / float(hi)
    return np.clip(np.nan_to_num(p, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


def levels(values: np.ndarray, hi: float) -> list[int]:
    """Raw values on a scale ending at +-hi -> level numbers 0 … 2*STEPS (halves round up, as JS's Math.round)."""
    return np.floor((_positions(values, hi) + 1.0) * STEPS + 0.5).astype(np.int64).tolist()


def level_positions(values: np.ndarray, hi: float) -> np.ndarray:
    """Where each character's colour sits on the scale as the page shows it: its level's position."""
    return np.asarray(levels(values, hi), dtype=np.float64) / STEPS - 1.0


def bar_positions(values: np.ndarray, hi: float) -> np.ndarray:
    """The compare bar as the page draws it: +-n/BAR_STEPS (0 where no bar shows)."""
    p = _positions(values, hi)
    return np.sign(p) * np.floor(np.abs(p) * BAR_STEPS + 0.5) / BAR_STEPS


def bar_classes(values: np.ndarray, hi: float) -> list[str]:
    """The compare unit's values -> " uK" / " oK" (or "" when the bar would be thinner than one step)."""
    p = _positions(values, hi)
    k = np.floor(np.abs(p) * BAR_STEPS + 0.5).astype(np.int64)
    return [f" {'u' if x > 0 else 'o'}{n}" if n else "" for x, n in zip(p.tolist(), k.tolist())]


@lru_cache(maxsize=1)
def levels_css() -> str:
    """One rule per level; only inside `.levels` (the main view's text), so other `.ch` keep --v."""
    rules = []
    for k in range(2 * STEPS + 1):
        pos = k / STEPS - 1.0
        r, g, b = rgb(pos)
        ink = "#{:02x}{:02x}{:02x}".format(*(LIGHT_TEXT if text_is_light(pos) else DARK_TEXT))
        rules.append(f".levels>.q{k}{{background-color:#{r:02x}{g:02x}{b:02x};color:{ink}}}")
    for n in range(1, BAR_STEPS + 1):
        px = BAR_PX * n / BAR_STEPS
        rules.append(f".levels>.u{n}{{box-shadow:inset 0 -{px:g}px 0 var(--c-w)}}")
        rules.append(f".levels>.o{n}{{box-shadow:inset 0 {px:g}px 0 var(--c-w)}}")
    return "\n".join(rules) + "\n"
